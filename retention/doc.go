// Package retention decides what a binary cache keeps and lets go of the
// rest without ever breaking a kept closure.
//
// Roots are the outputs of "built" events, each with the time it was last
// built and its job (Hydra's project:jobset:job, else the derivation's name
// without its version). A Policy says which roots are live: built within
// KeepFor, the last KeepLastPerJob of each job, and the revisions of named
// pins (a JetStream key-value bucket, so every host sees the same pins).
// The kept set is the union of the live roots' closures, computed from the
// cache's own narinfos (their References): the cache is what clients see.
// Paths whose narinfo or NAR was written within Grace are kept too, with
// their closures, so a closure being published while prune runs is safe.
//
// Prune removes everything else: each narinfo first (renamed out of the
// cache into a journal, atomically), then it unpins the CID on the local
// kubo, removes the NAR, and announces a "retired" event, a batch of
// paths at a time, the batches' stages overlapping. A prune killed at any
// point is completed by the next one from the journal.
package retention
