package integration

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// nobody is the unprivileged user the publisher runs as in these tests: no
// group, no home, no write access to anything under /nix.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}

// unprivilegedPublisher prepares what the publisher needs as nobody: a copy
// of the binary it may execute, a cache directory and a signing key it
// owns (the test's own directories are root's, mode 700).
func unprivilegedPublisher(t *testing.T, a *hostA) (bin, cache, key string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "running a process as another user needs root")
	}
	dir, err := os.MkdirTemp("", "nix-ipfs-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	bin = filepath.Join(dir, "nix-ipfs")
	copyFile(t, filepath.Join(a.bin, "nix-ipfs"), bin, 0o755)
	cache = filepath.Join(dir, "cache")
	must(t, os.Mkdir(cache, 0o755))
	must(t, os.Chown(cache, int(nobody.Uid), int(nobody.Gid)))
	key = filepath.Join(dir, "signing-key")
	copyFile(t, a.nix.SecretKey, key, 0o600)
	must(t, os.Chown(key, int(nobody.Uid), int(nobody.Gid)))
	return bin, cache, key
}

func (a *hostA) startPublisherAs(t *testing.T, bin, cache, key, db string) *testenv.Proc {
	t.Helper()
	a.cache = cache
	env := append(a.publisherEnv(), "NIX_IPFS_CACHE_DIR="+cache, "NIX_IPFS_SECRET_KEY_FILE="+key,
		"NIX_IPFS_NIX_DB="+db, "HOME=/nonexistent")
	p := testenv.StartProcAs(t, nobody, bin, []string{"publisher"}, env...)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n") {
		t.Fatalf("publisher does not run as uid 65534:\n%s", status)
	}
	return p
}

// TestPublisherUnprivileged runs the real publisher binary as uid 65534
// (nobody), which may read the store and the root-owned Nix database but
// write nothing under /nix. Against the real database it publishes a real
// build's closure; against a root-owned copy whose WAL index (db.sqlite-shm)
// does not exist, it says why it cannot read it, waits instead of exiting,
// and goes on as soon as a Nix process (here: a root reader) opens the
// database, and keeps working after that one closes it.
func TestPublisherUnprivileged(t *testing.T) {
	a := newHostA(t)
	bin, cache, key := unprivilegedPublisher(t, a)

	t.Run("RealDatabase", func(t *testing.T) {
		// The WAL index exists while a Nix process has the database
		// open: be that process until the publisher has opened it.
		holder, err := nixstore.OpenDB(nixstore.DefaultDBPath, "/nix/store")
		if err != nil {
			t.Fatal(err)
		}
		pub := a.startPublisherAs(t, bin, cache, key, nixstore.DefaultDBPath)
		testenv.Eventually(t, time.Minute, "publisher running", func() bool { return strings.Contains(pub.Tail(50), "publisher running") })
		holder.Close()

		top := a.nix.Build(t, richClosure(testenv.Nonce()))[0]
		closure := closureOf(t, a.nix, top)
		got := a.waitPublished(t, closure, 2*time.Minute)
		for p, ni := range got {
			if ni.IPFSHash == "" || len(ni.Sigs) == 0 {
				t.Errorf("%s: narinfo without IPFSHash or signature", p)
			}
		}
		checkStockNixCopy(t, a, top, "file://"+cache)
		noFilesOf(t, "/nix/var/nix/db", nobody.Uid)
	})

	t.Run("MissingWALIndex", func(t *testing.T) {
		// A root-owned copy of the database, WAL mode, closed: no -shm.
		top := a.nix.Build(t, testenv.Drv("unpriv-copy-"+testenv.Nonce(), `echo copy > $out`, ""))[0]
		dbDir, err := os.MkdirTemp("", "nix-ipfs-db-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dbDir) })
		must(t, os.Chmod(dbDir, 0o755))
		db := filepath.Join(dbDir, "db.sqlite")
		copyNixDB(t, db)
		if _, err := os.Stat(db + "-shm"); err == nil {
			t.Fatal("the copy has a -shm already")
		}
		cache2 := filepath.Join(filepath.Dir(cache), "cache2")
		must(t, os.Mkdir(cache2, 0o755))
		must(t, os.Chown(cache2, int(nobody.Uid), int(nobody.Gid)))
		pub := a.startPublisherAs(t, bin, cache2, key, db)
		testenv.Eventually(t, time.Minute, "the publisher's reason to wait", func() bool {
			return strings.Contains(pub.Tail(50), "db.sqlite-shm does not exist and uid 65534 may not create it")
		})
		time.Sleep(time.Second)
		if pub.Wait(0) {
			t.Fatalf("the publisher exited instead of waiting:\n%s", pub.Tail(30))
		}

		// A Nix process opens the database (root may create the WAL
		// index); the publisher opens it then, and keeps it after.
		holder, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		var n int
		must(t, holder.QueryRow("SELECT count(*) FROM ValidPaths").Scan(&n))
		testenv.Eventually(t, time.Minute, "publisher running", func() bool { return strings.Contains(pub.Tail(50), "publisher running") })
		holder.Close()

		_, js := a.nats.Connect(t)
		ev := &events.Built{Host: "test", StoreDir: "/nix/store", OutPaths: []string{top}}
		events.Seal(ev)
		if _, err := events.Publish(context.Background(), js, events.SubjectBuilt, ev); err != nil {
			t.Fatal(err)
		}
		a.waitPublished(t, []string{top}, 2*time.Minute)
		noFilesOf(t, dbDir, nobody.Uid)
	})
}

// copyNixDB writes a consistent copy of the real Nix database to dst, in
// WAL mode like the original, and closes it (so no -shm is left).
func copyNixDB(t *testing.T, dst string) {
	t.Helper()
	src, err := sql.Open("sqlite", "file:"+nixstore.DefaultDBPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Exec("VACUUM INTO ?", dst); err != nil {
		t.Fatalf("copy the Nix database: %v", err)
	}
	d, err := sql.Open("sqlite", dst)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	must(t, d.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode))
	must(t, d.Close())
	if mode != "wal" {
		t.Fatalf("journal mode %q", mode)
	}
	must(t, os.Chmod(dst, 0o644))
}

// noFilesOf fails if uid owns anything in dir: the publisher wrote there.
func noFilesOf(t *testing.T, dir string, uid uint32) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == uid {
			t.Errorf("%s/%s is owned by uid %d: the unprivileged publisher wrote it", dir, e.Name(), uid)
		}
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	must(t, out.Close())
	must(t, os.Chmod(dst, mode))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
