// Package unixfs reads UnixFS files by CID, in one way, over pluggable
// block sources (boxo's unixfs/io over a blockstore is the model): a file
// is a DAG of dag-pb nodes and raw leaves, walked depth first by Open, one
// maximum depth (MaxDepth), every node checked against the CID that names
// it, and every error given a kind (internal/errs): Corrupt for a block
// that does not match its CID or a DAG that does not add up, NotYet for a
// block the source lacks (ErrNotLocal), Transient for a source that did
// not answer, Config for one that refuses to serve.
//
// The sources: FlatFS (kubo's flatfs block store on this machine, read
// straight from disk), Gateway (a trustless HTTP gateway: raw blocks and
// CARs, checked), and kubo's RPC (ipfs.Kubo, which also streams whole
// files, as a daemon's gateway does: ipfs.Reader). Every source passes one
// conformance suite, unixfstest.Run.
//
// A read that breaks off half-way continues where it stopped through
// Resumer, the one resume mechanism: a kubo gateway's Range request, the
// daemon taking over from the block store at the first block it lacks,
// and the substituter's upstream HTTP taking over from IPFS.
package unixfs
