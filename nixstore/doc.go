// Package nixstore reads what the publisher needs to know about store paths
// (NAR hash and size, references, deriver, content address, signatures) and
// the closures of sets of paths from the local Nix store.
//
// # Why the database, and why this way
//
// The metadata lives in Nix's SQLite database, /nix/var/nix/db/db.sqlite.
// Asking the nix command line for it costs a process per path, which a
// closure of thousands of paths cannot afford; [DB] reads the database
// directly instead and computes closures in one recursive SQL query.
//
// It uses the pure-Go driver modernc.org/sqlite rather than go-nix's
// pkg/sqlite, because the latter is built on github.com/mattn/go-sqlite3,
// which needs cgo: the publisher is a static, cgo-free binary.
//
// Nix owns the database and keeps it in WAL mode while it builds. [DB] opens
// it read-only (SQLite's mode=ro: it cannot create, write, checkpoint or
// change the journal mode) and never leaves a read transaction open longer
// than one statement, so Nix can go on writing while the publisher reads and
// every statement sees a consistent snapshot. A busy timeout covers the
// moments when SQLite must wait (WAL recovery after a crash, a writer in
// exclusive mode); an error that persists after it is of kind
// errs.Transient, so the worker retries the event later.
//
// Reading a WAL database read-only needs its -shm and -wal files to exist or
// to be creatable. They exist while a Nix process has the database open;
// only the owner of /nix/var/nix/db can create them (SQLite gives them the
// database file's owner), and any other user gets SQLITE_READONLY_DIRECTORY,
// reported as an errs.Transient error wrapping [ErrNoWALIndex] that says so.
// Once a reader has them open they stay: the last Nix process to close the
// database cannot remove the WAL index while a reader holds it, and [DB]
// never closes its idle connections. So the publisher runs as an
// unprivileged user with read access only: [WaitDB] waits for the files at
// start (they appear with the next build or nix command) and keeps them from
// then on. Such a reader may leave an empty db.sqlite-wal and a
// db.sqlite-shm behind, as any SQLite reader does; Nix uses them as they
// are.
//
// # Remote stores are not supported
//
// The database must be the one of the local store the paths live in. A
// remote store (ssh://, a nix-daemon on another machine, an S3 or HTTP
// binary cache) has no database this package can open, and paths read from
// a database that belongs to another store would be wrong. A local
// chroot store (nix --store /some/root) works if its database,
// /some/root/nix/var/nix/db/db.sqlite, is opened with store directory
// /nix/store: the database records logical paths. The tests read Nix 2.26's
// database that way, from its chroot (TestAgainstNix). The [Store] interface
// leaves room for a nix-daemon worker-protocol client later.
package nixstore
