package nixstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// nixSchema is Nix 2.x's schema (libstore/schema.sql), as found in
// /nix/var/nix/db/db.sqlite.
const nixSchema = `
CREATE TABLE ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
CREATE TABLE Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
CREATE INDEX IndexReferrer on Refs(referrer);
CREATE INDEX IndexReference on Refs(reference);
CREATE TABLE DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
CREATE INDEX IndexDerivationOutputs on DerivationOutputs(path);
`

// rwDSN opens dbPath read-write (the tests' writer), escaping the path.
func rwDSN(dbPath, query string) string {
	return (&url.URL{Scheme: "file", Path: dbPath, RawQuery: query}).String()
}

// synthPath is a well-formed store path for index i.
func synthPath(storeDir string, i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint("synth-", i)))
	return fmt.Sprintf("%s/%s-synth-%d", storeDir, nixbase32.EncodeToString(sum[:20]), i)
}

func synthHash(i int) []byte {
	sum := sha256.Sum256([]byte(fmt.Sprint("nar-", i)))
	return sum[:]
}

// synthDB writes a Nix-schema database at dbPath with n paths under
// storeDir; path i references the paths edges(i) returns (indices). It
// returns the paths. The writer connection is closed before it returns.
func synthDB(t testing.TB, dbPath, storeDir string, n int, edges func(i int) []int) []string {
	t.Helper()
	w, err := sql.Open("sqlite", rwDSN(dbPath, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Exec(nixSchema); err != nil {
		t.Fatal(err)
	}
	tx, err := w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	paths := make([]string, n)
	for i := range n {
		paths[i] = synthPath(storeDir, i)
		var deriver, sigs, ca, ultimate, narSize any
		switch i % 4 { // exercise NULL and non-NULL columns
		case 0:
			deriver = strings.TrimSuffix(paths[i], fmt.Sprint("-synth-", i)) + "-synth.drv"
			ultimate = 1
			narSize = 1000 + i
		case 1:
			sigs = fmt.Sprintf("k1:%s k2:%s", "c2lnMQ==", "c2lnMg==")
			narSize = 1000 + i
		case 2:
			ca = "fixed:r:sha256:" + nixbase32.EncodeToString(synthHash(i))
			ultimate = 0
			narSize = 1000 + i
		case 3:
			sigs = ""
		}
		if _, err := tx.Exec(`INSERT INTO ValidPaths (id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			i+1, paths[i], "sha256:"+hex.EncodeToString(synthHash(i)), 1700000000+i,
			deriver, narSize, ultimate, sigs, ca); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		for _, j := range edges(i) {
			if _, err := tx.Exec(`INSERT OR IGNORE INTO Refs (referrer, reference) VALUES (?, ?)`, i+1, j+1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return paths
}

// reachable is the reference closure computed in Go, for comparison.
func reachable(paths []string, edges func(i int) []int, roots ...int) []string {
	seen := map[int]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		if seen[i] {
			continue
		}
		seen[i] = true
		queue = append(queue, edges(i)...)
	}
	var out []string
	for i := range seen {
		out = append(out, paths[i])
	}
	slices.Sort(out)
	return out
}

// randomGraph is a reference graph of n paths with cycles: path i
// references itself every 7th time, a few random paths, and path i-1 every
// 3rd time, and path 0 references the last one.
func randomGraph(n int) func(int) []int {
	r := rand.New(rand.NewPCG(1, 2))
	adj := make([][]int, n)
	for i := range n {
		if i%7 == 0 {
			adj[i] = append(adj[i], i)
		}
		if i > 0 && i%3 == 0 {
			adj[i] = append(adj[i], i-1)
		}
		for range r.IntN(4) {
			adj[i] = append(adj[i], r.IntN(n))
		}
	}
	adj[0] = append(adj[0], n-1)
	return func(i int) []int { return adj[i] }
}

func TestSynthQueryPathInfo(t *testing.T) {
	const storeDir = "/nix/store"
	dbPath := filepath.Join(t.TempDir(), "db.sqlite")
	edges := func(i int) []int {
		switch i {
		case 0:
			return []int{0, 2, 1} // self-reference, unsorted
		case 1:
			return []int{0} // a cycle 0 -> 1 -> 0
		}
		return nil
	}
	paths := synthDB(t, dbPath, storeDir, 4, edges)
	d, err := OpenDB(dbPath, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()

	want := []PathInfo{
		{
			Path:             paths[0],
			NarHash:          "sha256:" + nixbase32.EncodeToString(synthHash(0)),
			NarSize:          1000,
			References:       slices.Sorted(slices.Values([]string{paths[0], paths[1], paths[2]})),
			Deriver:          strings.TrimSuffix(paths[0], "-synth-0") + "-synth.drv",
			RegistrationTime: time.Unix(1700000000, 0),
			Ultimate:         true,
		},
		{
			Path:             paths[1],
			NarHash:          "sha256:" + nixbase32.EncodeToString(synthHash(1)),
			NarSize:          1001,
			References:       []string{paths[0]},
			Sigs:             []string{"k1:c2lnMQ==", "k2:c2lnMg=="},
			RegistrationTime: time.Unix(1700000001, 0),
		},
		{
			Path:             paths[2],
			NarHash:          "sha256:" + nixbase32.EncodeToString(synthHash(2)),
			NarSize:          1002,
			CA:               "fixed:r:sha256:" + nixbase32.EncodeToString(synthHash(2)),
			RegistrationTime: time.Unix(1700000002, 0),
		},
		{
			Path:             paths[3],
			NarHash:          "sha256:" + nixbase32.EncodeToString(synthHash(3)),
			RegistrationTime: time.Unix(1700000003, 0),
		},
	}
	for _, w := range want {
		got, err := d.QueryPathInfo(ctx, w.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !got.RegistrationTime.Equal(w.RegistrationTime) {
			t.Errorf("%s: RegistrationTime %v, want %v", w.Path, got.RegistrationTime, w.RegistrationTime)
		}
		got.RegistrationTime = w.RegistrationTime
		if fmt.Sprintf("%#v", *got) != fmt.Sprintf("%#v", w) {
			t.Errorf("QueryPathInfo(%s)\n got %#v\nwant %#v", w.Path, *got, w)
		}
	}

	c, err := d.Closure(ctx, []string{paths[1]})
	if err != nil {
		t.Fatal(err)
	}
	if w := []string{paths[0], paths[1], paths[2]}; !slices.Equal(c, slices.Sorted(slices.Values(w))) {
		t.Errorf("Closure(%s) = %v, want %v", paths[1], c, w)
	}
	c, err = d.Closure(ctx, nil)
	if err != nil || len(c) != 0 {
		t.Errorf("Closure(nil) = %v, %v; want empty", c, err)
	}
}

func TestSynthClosureLarge(t *testing.T) {
	const storeDir, n = "/nix/store", 5000
	dbPath := filepath.Join(t.TempDir(), "db.sqlite")
	edges := randomGraph(n)
	paths := synthDB(t, dbPath, storeDir, n, edges)
	d, err := OpenDB(dbPath, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	for _, roots := range [][]int{{0}, {1}, {3}, {n - 1}, {5, 5, 17, 4000}, {2, 3, 4, 6, 8, 9, 10, 11}} {
		var in []string
		for _, r := range roots {
			in = append(in, paths[r])
		}
		got, err := d.Closure(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		want := reachable(paths, edges, roots...)
		if !slices.Equal(got, want) {
			t.Errorf("Closure(%v): %d paths, want %d", roots, len(got), len(want))
		}
	}
	// Every path as a root: thousands of roots through one json_each.
	got, err := d.Closure(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(slices.Values(paths)); !slices.Equal(got, want) {
		t.Errorf("Closure(all): %d paths, want %d", len(got), len(want))
	}
}

func TestInvalidPaths(t *testing.T) {
	const storeDir = "/nix/store"
	dbPath := filepath.Join(t.TempDir(), "db.sqlite")
	paths := synthDB(t, dbPath, storeDir, 3, func(int) []int { return nil })
	d, err := OpenDB(dbPath, storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()

	absent := synthPath(storeDir, 99)
	_, err = d.QueryPathInfo(ctx, absent)
	if !errs.Is(err, errs.Invalid) || !errors.Is(err, ErrNotValid) || !strings.Contains(err.Error(), absent) {
		t.Errorf("QueryPathInfo(absent) = %v (kind %v); want Invalid, ErrNotValid, naming the path", err, errs.KindOf(err))
	}
	_, err = d.Closure(ctx, []string{paths[0], absent})
	if !errs.Is(err, errs.Invalid) || !errors.Is(err, ErrNotValid) || !strings.Contains(err.Error(), absent) {
		t.Errorf("Closure(valid, absent) = %v (kind %v); want Invalid, ErrNotValid, naming the path", err, errs.KindOf(err))
	}

	for _, bad := range []string{
		"/tmp/" + filepath.Base(paths[0]),
		"/nix/store/../etc/passwd",
		"/nix/store",
		"/nix/store/",
		paths[0] + "/bin/sh",
		"nix/store/" + filepath.Base(paths[0]),
		"/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x",
		"/nix/store/short-x",
		"",
	} {
		_, err := d.QueryPathInfo(ctx, bad)
		if !errs.Is(err, errs.Invalid) || errors.Is(err, ErrNotValid) {
			t.Errorf("QueryPathInfo(%q) = %v (kind %v); want Invalid, not ErrNotValid", bad, err, errs.KindOf(err))
		}
		_, err = d.Closure(ctx, []string{paths[0], bad})
		if !errs.Is(err, errs.Invalid) {
			t.Errorf("Closure(%q) = %v (kind %v); want Invalid", bad, err, errs.KindOf(err))
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "no", "db.sqlite")
	_, err := OpenDB(missing, "/nix/store")
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("OpenDB(missing) = %v; want fs.ErrNotExist naming %s", err, missing)
	}
	missing = filepath.Join(dir, "db.sqlite")
	if _, err := OpenDB(missing, "/nix/store"); err == nil {
		t.Error("OpenDB(missing file in existing dir) succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenDB created %s: %v", missing, err)
	}

	if _, err := OpenDB(dir, "/nix/store"); !errs.Is(err, errs.Invalid) {
		t.Errorf("OpenDB(dir) = %v; want Invalid", err)
	}

	empty := filepath.Join(dir, "empty.sqlite")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenDB(empty, "/nix/store")
	if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "not a Nix database") {
		t.Errorf("OpenDB(empty file) = %v; want Invalid, not a Nix database", err)
	}

	garbage := filepath.Join(dir, "garbage.sqlite")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDB(garbage, "/nix/store"); !errs.Is(err, errs.Invalid) {
		t.Errorf("OpenDB(garbage) = %v (kind %v); want Invalid", err, errs.KindOf(err))
	}

	db := filepath.Join(dir, "db2.sqlite")
	synthDB(t, db, "/nix/store", 2, func(int) []int { return nil })
	for _, sd := range []string{"/other/store", "nix/store", "/nix/store/", ""} {
		if _, err := OpenDB(db, sd); !errs.Is(err, errs.Invalid) {
			t.Errorf("OpenDB(store dir %q) = %v; want Invalid", sd, err)
		}
	}
}

// A directory name with characters that mean something in a URI.
func TestOpenOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b?c#d%e&mode=rw")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "db.sqlite")
	paths := synthDB(t, db, "/nix/store", 2, func(int) []int { return nil })
	d, err := OpenDB(db, "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.QueryPathInfo(context.Background(), paths[1]); err != nil {
		t.Fatal(err)
	}
	// Nothing else appeared next to it (no stray file from a misparsed URI).
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("unexpected files next to %s: %v", dir, entries)
	}
}

func TestReadOnly(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db.sqlite")
	synthDB(t, db, "/nix/store", 2, func(int) []int { return nil })
	d, err := OpenDB(db, "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.db.Exec(`DELETE FROM ValidPaths`); err == nil {
		t.Error("a write through the pool succeeded")
	}
	if _, err := d.db.Exec(`PRAGMA journal_mode = WAL`); err == nil {
		var m string
		d.db.QueryRow(`PRAGMA journal_mode`).Scan(&m)
		if m == "wal" {
			t.Error("changing the journal mode succeeded")
		}
	}
}

// A writer that holds the database exclusively for longer than the busy
// timeout makes reads fail with errs.Transient.
func TestLockedIsTransient(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db.sqlite")
	paths := synthDB(t, db, "/nix/store", 3, func(int) []int { return nil })
	d, err := openDB(db, "/nix/store", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	w, err := sql.Open("sqlite", rwDSN(db, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	wc, err := w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	if _, err := wc.ExecContext(ctx, `BEGIN EXCLUSIVE`); err != nil {
		t.Fatal(err)
	}

	_, err = d.QueryPathInfo(ctx, paths[0])
	if !errs.Is(err, errs.Transient) {
		t.Errorf("QueryPathInfo while locked = %v (kind %v); want Transient", err, errs.KindOf(err))
	}
	_, err = d.Closure(ctx, paths[:1])
	if !errs.Is(err, errs.Transient) {
		t.Errorf("Closure while locked = %v (kind %v); want Transient", err, errs.KindOf(err))
	}
	_, err = openDB(db, "/nix/store", 100*time.Millisecond)
	if !errs.Is(err, errs.Transient) {
		t.Errorf("openDB while locked = %v (kind %v); want Transient", err, errs.KindOf(err))
	}

	if _, err := wc.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.QueryPathInfo(ctx, paths[0]); err != nil {
		t.Errorf("QueryPathInfo after unlock: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db.sqlite")
	paths := synthDB(t, db, "/nix/store", 3, func(int) []int { return nil })
	d, err := OpenDB(db, "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.QueryPathInfo(ctx, paths[0]); !errs.Is(err, errs.Transient) || !errors.Is(err, context.Canceled) {
		t.Errorf("QueryPathInfo(canceled) = %v; want Transient, context.Canceled", err)
	}
	if _, err := d.Closure(ctx, paths); !errs.Is(err, errs.Transient) || !errors.Is(err, context.Canceled) {
		t.Errorf("Closure(canceled) = %v; want Transient, context.Canceled", err)
	}
}

// Reads go on while another connection writes a WAL database, as Nix does.
func TestConcurrentWithWALWriter(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db.sqlite")
	const n = 500
	edges := randomGraph(n)
	paths := synthDB(t, db, "/nix/store", n, edges)
	// The writer stands for Nix, which waits out a busy database (libstore's
	// SQLite sets a busy timeout of an hour): without one, a reader's
	// momentary lock on the WAL index (taking a snapshot while the writer
	// truncates the WAL) failed it with SQLITE_BUSY in a CI run.
	w, err := sql.Open("sqlite", rwDSN(db, "_pragma=journal_mode(wal)&_pragma=busy_timeout(60000)"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	if _, err := w.Exec(`CREATE TABLE Scratch (x)`); err != nil {
		t.Fatal(err)
	}

	d, err := OpenDB(db, "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	want := reachable(paths, edges, 0)

	var wg sync.WaitGroup
	errc := make(chan error, 10)
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := w.Exec(`INSERT INTO Scratch VALUES (?)`, strings.Repeat("x", 1000)); err != nil {
				errc <- fmt.Errorf("writer: %w", err)
				return
			}
			if i%50 == 0 {
				w.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
			}
		}
	})
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if g%2 == 0 {
					if _, err := d.QueryPathInfo(ctx, paths[(g*31+i)%n]); err != nil && ctx.Err() == nil {
						errc <- err
						return
					}
					continue
				}
				c, err := d.Closure(ctx, paths[:1])
				if err != nil && ctx.Err() == nil {
					errc <- err
					return
				}
				if err == nil && !slices.Equal(c, want) {
					errc <- fmt.Errorf("closure changed under a concurrent writer")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestWaitDB: a missing database fails at once; a transient condition (here
// a writer's exclusive lock) is reported and waited out; a cancelled
// context ends the wait. The missing WAL index, the case WaitDB is for, is
// proven with an unprivileged publisher in integration/unprivileged_test.go.
func TestWaitDB(t *testing.T) {
	ctx := context.Background()
	if _, err := waitDB(ctx, filepath.Join(t.TempDir(), "none.sqlite"), "/nix/store", 100*time.Millisecond, func(err error) {
		t.Errorf("waited for a missing database: %v", err)
	}); !errs.Is(err, errs.Invalid) {
		t.Errorf("missing database: %v, want Invalid", err)
	}

	db := filepath.Join(t.TempDir(), "db.sqlite")
	synthDB(t, db, "/nix/store", 3, func(int) []int { return nil })
	w, err := sql.Open("sqlite", rwDSN(db, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wc, err := w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.ExecContext(ctx, `BEGIN EXCLUSIVE`); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := waitDB(cctx, db, "/nix/store", 100*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		t.Errorf("cancelled wait: %v", err)
	}
	cancel()

	reported := make(chan error, 10)
	done := make(chan error, 1)
	go func() {
		d, err := waitDB(ctx, db, "/nix/store", 100*time.Millisecond, func(err error) { reported <- err })
		if d != nil {
			d.Close()
		}
		done <- err
	}()
	if err := <-reported; !errs.Is(err, errs.Transient) {
		t.Errorf("reported %v, want a transient error", err)
	}
	if _, err := wc.ExecContext(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	wc.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after the lock: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("still waiting a minute after the lock was released")
	}
}
