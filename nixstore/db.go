package nixstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/nixhash"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

const (
	// defaultBusyTimeout is how long a statement waits for a lock Nix holds
	// before it fails with SQLITE_BUSY (then errs.Transient).
	defaultBusyTimeout = 5 * time.Second
	// maxConns bounds the connection pool: reads are short and SQLite
	// serves them from one file, so a few connections are plenty.
	maxConns = 4
)

// DB is a [Store] that reads the local Nix database read-only. It is safe
// for concurrent use.
type DB struct {
	db       *sql.DB
	dbPath   string
	storeDir string
}

var _ Store = (*DB)(nil)

// OpenDB opens the Nix database at dbPath (usually [DefaultDBPath])
// read-only, for the store whose directory is storeDir (usually
// storepath.DefaultStoreDir). It checks that the file is a Nix database that
// records paths under storeDir.
//
// A missing file is an errs.Invalid error wrapping fs.ErrNotExist; a
// database that is locked or cannot be read is errs.Transient.
func OpenDB(dbPath, storeDir string) (*DB, error) {
	return openDB(dbPath, storeDir, defaultBusyTimeout)
}

func openDB(dbPath, storeDir string, busyTimeout time.Duration) (*DB, error) {
	if err := storepath.ValidateStoreDir(storeDir); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	abs, err := filepath.Abs(dbPath)
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "nix database %q: %w", dbPath, err)
	}
	// SQLite's own error for a missing file under mode=ro is a bare
	// "unable to open database file"; say what is wrong instead.
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, errs.Errorf(errs.Invalid,
			"nix database %s: %w (is Nix installed on this machine? only the local store's database can be read, remote stores are not supported)",
			abs, err)
	case err != nil:
		return nil, errs.Errorf(errs.Transient, "nix database %s: %w", abs, err)
	case st.IsDir():
		return nil, errs.Errorf(errs.Invalid, "nix database %s: is a directory", abs)
	}

	db, err := sql.Open("sqlite", dsn(abs, busyTimeout))
	if err != nil {
		return nil, errs.Errorf(errs.Invalid, "nix database %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxConns)
	// Idle connections are kept, never closed for idleness: while one is
	// open, db.sqlite-shm stays (Nix's last close cannot delete the WAL
	// index a reader holds), and a reader that may not create it (any user
	// but the database's owner) depends on that. See the package doc.
	db.SetMaxIdleConns(maxConns)
	d := &DB{db: db, dbPath: abs, storeDir: storeDir}

	ctx, cancel := context.WithTimeout(context.Background(), busyTimeout+30*time.Second)
	defer cancel()
	if err := d.check(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return d, nil
}

// dsn is the modernc.org/sqlite data source name for a read-only open of
// the database file at abs. The file: URI form makes SQLite honour
// mode=ro (no create, no write, no journal mode change); the driver runs
// the _pragma on every new connection.
func dsn(abs string, busyTimeout time.Duration) string {
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "query_only(1)")
	// url.URL escapes '?', '#' and '%' in the path; SQLite decodes %HH.
	u := url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}
	return u.String()
}

// check makes sure the file is a Nix database for d.storeDir.
func (d *DB) check(ctx context.Context) error {
	var n int
	err := d.db.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('ValidPaths', 'Refs')`).Scan(&n)
	if err != nil {
		return d.dbError("open", err)
	}
	if n != 2 {
		return errs.Errorf(errs.Invalid, "nix database %s: not a Nix database (no ValidPaths and Refs tables)", d.dbPath)
	}
	var p string
	err = d.db.QueryRowContext(ctx, `SELECT path FROM ValidPaths LIMIT 1`).Scan(&p)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // an empty store
	case err != nil:
		return d.dbError("open", err)
	}
	if !strings.HasPrefix(p, d.storeDir+"/") {
		return errs.Errorf(errs.Invalid, "nix database %s records paths such as %s, not under store directory %s",
			d.dbPath, p, d.storeDir)
	}
	return nil
}

// StoreDir returns the store directory the database records paths under.
func (d *DB) StoreDir() string { return d.storeDir }

// Close closes the database's connections.
func (d *DB) Close() error { return d.db.Close() }

const pathInfoQuery = `
SELECT v.hash, v.registrationTime, v.deriver, v.narSize, v.ultimate, v.sigs, v.ca,
       (SELECT group_concat(r.path, ' ')
          FROM Refs JOIN ValidPaths r ON r.id = Refs.reference
         WHERE Refs.referrer = v.id)
  FROM ValidPaths v
 WHERE v.path = ?`

// QueryPathInfo returns the metadata of path. It reads the path and its
// references in one statement, so one consistent snapshot.
func (d *DB) QueryPathInfo(ctx context.Context, path string) (*PathInfo, error) {
	if err := storepath.Validate(d.storeDir, path); err != nil {
		return nil, errs.E(errs.Invalid, err)
	}
	var (
		hash              string
		regTime           int64
		narSize, ultimate sql.NullInt64
		deriver, sigs, ca sql.NullString
		refs              sql.NullString
	)
	err := d.db.QueryRowContext(ctx, pathInfoQuery, path).
		Scan(&hash, &regTime, &deriver, &narSize, &ultimate, &sigs, &ca, &refs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errs.Errorf(errs.Invalid, "%s: %w", path, ErrNotValid)
	}
	if err != nil {
		return nil, d.dbError("query "+path, err)
	}
	return d.pathInfo(path, hash, regTime, deriver, narSize, ultimate, sigs, ca, refs)
}

// nix32Hash converts the database's "sha256:<base16>" to
// "sha256:<nix32>". It accepts any encoding Nix does, as Nix does when it
// reads the column.
func nix32Hash(s string) (string, error) {
	h, err := nixhash.ParseAny(s, nil)
	if err != nil {
		return "", err
	}
	return h.Format(nixhash.NixBase32, true), nil
}

// closureQuery walks Refs from the roots given as a JSON array. UNION (not
// UNION ALL) drops ids already queued, so cycles and shared dependencies
// are visited once. One statement: one snapshot. CROSS JOIN makes SQLite
// look paths up by id from the closure; with a plain JOIN and ORDER BY path
// it scans all of ValidPaths in path order instead, which costs the size of
// the store rather than the size of the closure. Go sorts the result.
const closureQuery = `
WITH RECURSIVE
  closure(id) AS (
    SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))
    UNION
    SELECT Refs.reference FROM Refs JOIN closure ON Refs.referrer = closure.id
  )
SELECT v.path FROM closure CROSS JOIN ValidPaths v ON v.id = closure.id`

// Closure returns every path reachable by references from paths, paths
// included, sorted and deduplicated, as nix-store -qR. If any of paths is
// not valid, it returns an errs.Invalid error wrapping ErrNotValid that
// names it.
func (d *DB) Closure(ctx context.Context, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	roots := slices.Clone(paths)
	slices.Sort(roots)
	roots = slices.Compact(roots)
	for _, p := range roots {
		if err := storepath.Validate(d.storeDir, p); err != nil {
			return nil, errs.E(errs.Invalid, err)
		}
	}
	arg, err := json.Marshal(roots)
	if err != nil {
		return nil, err
	}
	rows, err := d.db.QueryContext(ctx, closureQuery, string(arg))
	if err != nil {
		return nil, d.dbError("closure", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, d.dbError("closure", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, d.dbError("closure", err)
	}
	slices.Sort(out)
	out = slices.Compact(out)

	var missing []string
	for _, p := range roots {
		if _, found := slices.BinarySearch(out, p); !found {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		msg := strings.Join(missing[:min(len(missing), 3)], ", ")
		if len(missing) > 3 {
			msg += fmt.Sprintf(" and %d more", len(missing)-3)
		}
		return nil, errs.Errorf(errs.Invalid, "%s: %w", msg, ErrNotValid)
	}
	return out, nil
}

// ErrNoWALIndex says that the database's WAL index (db.sqlite-shm) does
// not exist and this process may not create it. It is of kind
// errs.Transient: the file appears as soon as a Nix process opens the
// database. [WaitDB] waits for it.
var ErrNoWALIndex = errors.New("no WAL index")

// dbError gives an error from the database a kind: a lock that outlasted
// the busy timeout, an I/O error or a cancelled context is Transient (the
// worker retries); a file that is not a database is Invalid; anything else
// (an unexpected schema, say) keeps no kind.
func (d *DB) dbError(op string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_READONLY_DIRECTORY {
		// A WAL database read-only needs its -shm and -wal files; they
		// exist while Nix has the database open, and only the owner of
		// the database directory can create them otherwise.
		return errs.E(errs.Transient, fmt.Errorf("nix database %s: %s: %w: %s-shm does not exist and uid %d may not create it in %s; "+
			"it appears while a Nix process has the database open (any build or nix command) and stays while this reader runs (%v)",
			d.dbPath, op, ErrNoWALIndex, d.dbPath, os.Geteuid(), filepath.Dir(d.dbPath), err))
	}
	err = fmt.Errorf("nix database %s: %s: %w", d.dbPath, op, err)
	return errs.E(kindOf(err), err)
}

// WaitDB opens the database like [OpenDB], waiting while the error is
// transient: a missing WAL index (checked for every 200 ms, so the
// database is opened while a short Nix command has it open), a lock, a
// database being recovered. onWait is called with the first error and then
// at most once a minute while it lasts. An error of another kind, or ctx
// ending, returns.
func WaitDB(ctx context.Context, dbPath, storeDir string, onWait func(error)) (*DB, error) {
	return waitDB(ctx, dbPath, storeDir, defaultBusyTimeout, onWait)
}

func waitDB(ctx context.Context, dbPath, storeDir string, busyTimeout time.Duration, onWait func(error)) (*DB, error) {
	const maxBackoff = 10 * time.Second
	backoff := 500 * time.Millisecond
	var lastReport time.Time
	for {
		d, err := openDB(dbPath, storeDir, busyTimeout)
		if err == nil || errs.KindOf(err) != errs.Transient {
			return d, err
		}
		if onWait != nil && time.Since(lastReport) >= time.Minute {
			onWait(err)
			lastReport = time.Now()
		}
		deadline := time.Now().Add(backoff)
		for time.Now().Before(deadline) {
			if errors.Is(err, ErrNoWALIndex) {
				if _, serr := os.Stat(dbPath + "-shm"); serr == nil {
					break
				}
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("gave up waiting for the Nix database: %w (last error: %v)", ctx.Err(), err)
			case <-time.After(200 * time.Millisecond):
			}
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func kindOf(err error) errs.Kind {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errs.Transient
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return errs.Other
	}
	switch se.Code() & 0xff { // primary result code
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT,
		sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL,
		sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_FULL, sqlite3.SQLITE_SCHEMA,
		sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH,
		// mode=ro on a WAL database whose -shm needs recovery or
		// initialising by a writer: Nix will do it.
		sqlite3.SQLITE_READONLY:
		return errs.Transient
	case sqlite3.SQLITE_NOTADB:
		return errs.Invalid
	}
	return errs.Other
}
