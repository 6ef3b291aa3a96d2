package ipfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// randomBytes is deterministic so that a failure reproduces with the same
// CIDs.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func cliAdd(t *testing.T, k *testenv.Kubo, file string, flags ...string) cid.Cid {
	t.Helper()
	args := append([]string{"add", "-Q", "--pin=false"}, flags...)
	out := strings.TrimSpace(k.IPFS(t, append(args, file)...))
	c, err := cid.Decode(out)
	if err != nil {
		t.Fatalf("ipfs %v: %q: %v", args, out, err)
	}
	return c
}

func catAll(t *testing.T, k *ipfs.Kubo, ctx context.Context, c cid.Cid) []byte {
	t.Helper()
	rc, err := k.Cat(ctx, c)
	if err != nil {
		t.Fatalf("Cat %s: %v", c, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Cat %s: read: %v", c, err)
	}
	return b
}

func mbps(n int, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// onlyReader hides bytes.Reader's Seek and WriteTo, so that Add sees a
// plain stream as it would from a pipe.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }

func TestAddMatchesCLI(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := t.Context()
	data := randomBytes(1, 5<<20+12345)
	file := writeFile(t, data)

	p := ipfs.DefaultParams()
	c, err := k.Client.Add(ctx, onlyReader{bytes.NewReader(data)}, p, false)
	if err != nil {
		t.Fatal(err)
	}
	want := cliAdd(t, k, file, "--cid-version=1", "--raw-leaves", "--chunker=size-262144")
	if c != want {
		t.Fatalf("Add = %s, ipfs add = %s", c, want)
	}
	if c.Version() != 1 || c.Type() != cid.DagProtobuf {
		t.Errorf("CID %s: version %d codec %x, want a CIDv1 dag-pb root", c, c.Version(), c.Type())
	}
	if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
		t.Fatalf("Cat returned %d bytes differing from the %d added", len(got), len(data))
	}
	if n, err := k.Client.Size(ctx, c); err != nil || n != uint64(len(data)) {
		t.Fatalf("Size = %d, %v; want %d", n, err, len(data))
	}
	if c2, err := k.Client.AddFile(ctx, file, p, false); err != nil || c2 != c {
		t.Fatalf("AddFile = %s, %v; want %s", c2, err, c)
	}

	bp := p
	bp.Chunker = "buzhash"
	bc, err := k.Client.Add(ctx, bytes.NewReader(data), bp, false)
	if err != nil {
		t.Fatal(err)
	}
	if bc == c {
		t.Fatalf("buzhash gave the same CID as fixed-size chunks: %s", bc)
	}
	if want := cliAdd(t, k, file, "--cid-version=1", "--raw-leaves", "--chunker=buzhash"); bc != want {
		t.Fatalf("Add with buzhash = %s, ipfs add --chunker=buzhash = %s", bc, want)
	}
	if got := catAll(t, k.Client, ctx, bc); !bytes.Equal(got, data) {
		t.Fatal("Cat of the buzhash CID returned other bytes")
	}

	// One chunk: with raw leaves the CID is the raw block itself.
	small := data[:1000]
	sc, err := k.Client.Add(ctx, bytes.NewReader(small), p, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := cliAdd(t, k, writeFile(t, small), "--cid-version=1", "--raw-leaves", "--chunker=size-262144"); sc != want || sc.Type() != cid.Raw {
		t.Fatalf("small Add = %s, ipfs add = %s (want a raw CID)", sc, want)
	}
	if n, err := k.Client.Size(ctx, sc); err != nil || n != 1000 {
		t.Fatalf("Size of a raw leaf = %d, %v", n, err)
	}
}

// TestAddWideFile covers files of more than 174 chunks, where the DAG
// width (max-file-links) starts to decide the CID, and measures throughput.
func TestAddWideFile(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := t.Context()
	data := randomBytes(2, 64<<20)
	file := writeFile(t, data)

	p := ipfs.DefaultParams()
	start := time.Now()
	c, err := k.Client.Add(ctx, onlyReader{bytes.NewReader(data)}, p, true)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("Add of %d MiB (pinned): %v, %.0f MiB/s", len(data)>>20, d, mbps(len(data), d))
	if want := cliAdd(t, k, file, "--cid-version=1", "--raw-leaves", "--chunker=size-262144"); c != want {
		t.Fatalf("Add = %s, ipfs add = %s", c, want)
	}
	if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
		t.Fatalf("IsPinned after Add(pin=true) = %v, %v", ok, err)
	}

	wide := p
	wide.MaxFileLinks = 1024
	wc, err := k.Client.Add(ctx, bytes.NewReader(data), wide, false)
	if err != nil {
		t.Fatal(err)
	}
	if wc == c {
		t.Fatal("max-file-links=1024 gave the same CID as 174")
	}
	if want := cliAdd(t, k, file, "--cid-version=1", "--raw-leaves", "--chunker=size-262144", "--max-file-links=1024"); wc != want {
		t.Fatalf("Add with 1024 links = %s, ipfs add = %s", wc, want)
	}

	start = time.Now()
	rc, err := k.Client.Cat(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	d = time.Since(start)
	if err != nil || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), sha256Of(data)) {
		t.Fatalf("Cat: %d bytes, %v, or other bytes", n, err)
	}
	t.Logf("Cat of %d MiB: %v, %.0f MiB/s", len(data)>>20, d, mbps(len(data), d))
}

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// A daemon configured to import differently must not change our CIDs.
func TestParamsOverrideDaemonConfig(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline(),
		testenv.KuboConfig("Import.UnixFSChunker", `"size-1048576"`),
		testenv.KuboConfig("Import.UnixFSFileMaxLinks", `1024`),
		testenv.KuboConfig("Import.UnixFSDAGLayout", `"trickle"`),
		testenv.KuboConfig("Import.CidVersion", `0`),
	)
	data := randomBytes(3, 50<<20)
	c, err := k.Client.Add(t.Context(), bytes.NewReader(data), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	plain := testenv.StartKubo(t, testenv.KuboOffline())
	want, err := plain.Client.Add(t.Context(), bytes.NewReader(data), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	if c != want {
		t.Fatalf("daemon Import config changed the CID: %s, default daemon %s", c, want)
	}
}

// peeredWithFile starts daemons a and b, adds n random bytes from seed to
// a (pinned), and connects b to a, checking on the way that a's Self names
// a peer and addresses to dial it by.
func peeredWithFile(t *testing.T, seed uint64, n int) (a, b *testenv.Kubo, c cid.Cid, data []byte) {
	t.Helper()
	a = testenv.StartKubo(t)
	b = testenv.StartKubo(t)
	ctx := t.Context()
	data = randomBytes(seed, n)
	c, err := a.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), true)
	if err != nil {
		t.Fatal(err)
	}
	self, err := a.Client.Self(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if self.PeerID == "" || len(self.Addrs) == 0 {
		t.Fatalf("Self = %+v", self)
	}
	for _, ad := range self.Addrs {
		if strings.Contains(ad, "/p2p/"+self.PeerID) {
			t.Errorf("Self address %s keeps the /p2p/ suffix", ad)
		}
	}
	if err := b.Client.Connect(ctx, self); err != nil {
		t.Fatal(err)
	}
	return a, b, c, data
}

func TestPinBetweenNodes(t *testing.T) {
	a, b, c, data := peeredWithFile(t, 4, 64<<20)
	ctx := t.Context()
	start := time.Now()
	if err := b.Client.Pin(ctx, c, "nix-ipfs-test"); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("Pin of %d MiB from a connected peer: %v, %.0f MiB/s", len(data)>>20, d, mbps(len(data), d))
	if ok, err := b.Client.IsPinned(ctx, c); err != nil || !ok {
		t.Fatalf("IsPinned on B = %v, %v", ok, err)
	}
	pins, err := b.Client.Pins(ctx)
	if err != nil || !slices.Contains(pins, c) {
		t.Fatalf("Pins on B = %v, %v; want it to contain %s", pins, err, c)
	}
	if out := b.IPFS(t, "pin", "ls", "--names", "--type=recursive", c.String()); !strings.Contains(out, "nix-ipfs-test") {
		t.Errorf("pin name not recorded: %q", out)
	}

	if err := a.Client.Unpin(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := a.Client.Unpin(ctx, c); err != nil {
		t.Fatalf("second Unpin: %v (want idempotent)", err)
	}
	if ok, err := a.Client.IsPinned(ctx, c); err != nil || ok {
		t.Fatalf("IsPinned on A after Unpin = %v, %v", ok, err)
	}
	if err := a.Client.RepoGC(ctx); err != nil {
		t.Fatal(err)
	}
	if out := a.IPFS(t, "refs", "local"); strings.Contains(out, c.String()) {
		t.Fatalf("A still holds %s after unpin and gc", c)
	}
	a.Stop(t)

	catCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if got := catAll(t, b.Client, catCtx, c); !bytes.Equal(got, data) {
		t.Fatal("B returned other bytes")
	}
}

func TestNocopy(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline(), testenv.KuboFilestore())
	ctx := t.Context()
	data := randomBytes(5, 3<<20+7)
	file := filepath.Join(k.FilestoreRoot(), "nars", "data.nar")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}

	p := ipfs.DefaultParams()
	p.Nocopy = true
	c, err := k.Client.AddFile(ctx, file, p, true)
	if err != nil {
		t.Fatal(err)
	}
	// The filestore lists the leaves, by path relative to its root; the
	// dag-pb root above them lives in the ordinary blockstore.
	ls := k.IPFS(t, "filestore", "ls")
	rel, _ := filepath.Rel(k.FilestoreRoot(), file)
	leaves := strings.Fields(k.IPFS(t, "refs", c.String()))
	if len(leaves) != 13 {
		t.Fatalf("ipfs refs %s: %d leaves, want 13", c, len(leaves))
	}
	listed := map[string]string{}
	for _, line := range strings.Split(ls, "\n") {
		if f := strings.Fields(line); len(f) == 4 {
			listed[f[0]] = f[2]
		}
	}
	for _, leaf := range leaves {
		if listed[leaf] != rel {
			t.Fatalf("ipfs filestore ls does not list leaf %s of %s in %s:\n%s", leaf, c, rel, ls)
		}
	}
	if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
		t.Fatal("Cat of a nocopy CID returned other bytes")
	}
	copied, err := k.Client.Add(ctx, bytes.NewReader(data), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	// With CIDv1 and raw leaves the filestore changes where the leaves
	// live, not what they are.
	if copied != c {
		t.Errorf("nocopy CID %s, copying add CID %s", c, copied)
	}

	if _, err := k.Client.Add(ctx, bytes.NewReader(data), p, false); !errs.Is(err, errs.Invalid) {
		t.Fatalf("Add (a stream) with Nocopy = %v, want an Invalid error", err)
	}

	// Other bytes: kubo skips the root check for blocks it already has.
	// Big enough that kubo refuses while the body is still being sent.
	outside := writeFile(t, randomBytes(6, 32<<20))
	_, err = k.Client.AddFile(ctx, outside, p, false)
	// Not Transient: a retry cannot help until the deployment changes, and
	// retried forever it would look like a flaky daemon.
	if err == nil || !strings.Contains(err.Error(), "IPFS_PATH") || errs.Is(err, errs.Transient) {
		t.Fatalf("nocopy of a file outside the filestore root = %v (kind %s), want a non-transient hint about IPFS_PATH", err, errs.KindOf(err))
	}
	t.Logf("nocopy outside the filestore root: %v (kind %s)", err, errs.KindOf(err))

	// AddAt: the bytes stream in before the file exists; kubo records
	// where they will be, and reads them from there once they are.
	later := filepath.Join(k.FilestoreRoot(), "nars", "later.nar")
	data2 := randomBytes(8, 2<<20+3)
	c2, err := k.Client.AddAt(ctx, bytes.NewReader(data2), later, p, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(later); !os.IsNotExist(err) {
		t.Fatalf("AddAt made %s (%v): it must only name it", later, err)
	}
	if err := os.WriteFile(later, data2, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := catAll(t, k.Client, ctx, c2); !bytes.Equal(got, data2) {
		t.Fatal("Cat of an AddAt CID returned other bytes")
	}
	if ls := k.IPFS(t, "filestore", "ls"); !strings.Contains(ls, "nars/later.nar") {
		t.Fatalf("ipfs filestore ls does not list nars/later.nar:\n%s", ls)
	}
	// Except for a file of one block: kubo reads its root, the leaf, back
	// during the add, from a file that is not there yet (why the
	// publisher adds such NARs from their file).
	if _, err := k.Client.AddAt(ctx, bytes.NewReader(data2[:1000]), filepath.Join(k.FilestoreRoot(), "nars", "one-block.nar"), p, false); err == nil {
		t.Error("AddAt of one block before its file exists succeeded: kubo no longer reads it back, and the publisher could stream small NARs too")
	}
	// A stream to a file outside the root: the same clear refusal.
	_, err = k.Client.AddAt(ctx, bytes.NewReader(randomBytes(9, 32<<20)), filepath.Join(t.TempDir(), "x.nar"), p, false)
	if err == nil || !strings.Contains(err.Error(), "IPFS_PATH") || errs.Is(err, errs.Transient) {
		t.Fatalf("AddAt outside the filestore root = %v (kind %s), want a non-transient hint about IPFS_PATH", err, errs.KindOf(err))
	}

	plain := testenv.StartKubo(t, testenv.KuboOffline())
	big := filepath.Join(plain.FilestoreRoot(), "big.nar")
	if err := os.WriteFile(big, randomBytes(7, 32<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = plain.Client.AddFile(ctx, big, p, false)
	if err == nil || !strings.Contains(err.Error(), "FilestoreEnabled") || errs.Is(err, errs.Transient) {
		t.Fatalf("nocopy without filestore = %v (kind %s), want a non-transient hint about Experimental.FilestoreEnabled", err, errs.KindOf(err))
	}
	t.Logf("nocopy without filestore: %v (kind %s)", err, errs.KindOf(err))
}

func TestDaemonDown(t *testing.T) {
	k := testenv.StartKubo(t)
	ctx := t.Context()
	c, err := k.Client.Add(ctx, strings.NewReader("hello"), ipfs.DefaultParams(), false)
	if err != nil {
		t.Fatal(err)
	}
	before, err := k.Client.Self(ctx)
	if err != nil {
		t.Fatal(err)
	}

	down := func(how string) {
		t.Helper()
		calls := map[string]func(context.Context) error{
			"Add": func(ctx context.Context) error {
				_, err := k.Client.Add(ctx, strings.NewReader("x"), ipfs.DefaultParams(), false)
				return err
			},
			"Pin":      func(ctx context.Context) error { return k.Client.Pin(ctx, c, "") },
			"IsPinned": func(ctx context.Context) error { _, err := k.Client.IsPinned(ctx, c); return err },
			"Cat":      func(ctx context.Context) error { _, err := k.Client.Cat(ctx, c); return err },
			"Ping":     k.Client.Ping,
		}
		for name, call := range calls {
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			start := time.Now()
			err := call(ctx)
			cancel()
			if !errs.Is(err, errs.Transient) {
				t.Errorf("%s against a %s daemon = %v (kind %s), want Transient", name, how, err, errs.KindOf(err))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s against a %s daemon took %v", name, how, d)
			}
			if err != nil && !strings.Contains(err.Error(), k.API) {
				t.Errorf("%s error does not name the API address %s: %v", name, k.API, err)
			}
		}
		t.Logf("against a %s daemon: %v", how, calls["Pin"](ctx))
	}

	k.Stop(t)
	down("stopped")
	k.Start(t) // same API port: the old client works again
	if err := k.Client.Pin(ctx, c, ""); err != nil {
		t.Fatalf("Pin after restart: %v", err)
	}
	k.Kill(t)
	down("killed")
	k.Start(t)
	if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
		t.Fatalf("IsPinned after kill and restart = %v, %v", ok, err)
	}
	// Peers that knew the node before find it where it was.
	after, err := k.Client.Self(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.PeerID != before.PeerID || !slices.Equal(after.Addrs, before.Addrs) {
		t.Fatalf("node moved across restarts: %+v, then %+v", before, after)
	}
}

func TestDial(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("IPFS_PATH", empty)
	_, err := ipfs.Dial("")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(empty, "api")) {
		t.Fatalf(`Dial("") without an api file = %v, want an error naming %s`, err, filepath.Join(empty, "api"))
	}
	t.Logf(`Dial("") without an api file: %v`, err)

	for in, want := range map[string]string{
		"/ip4/127.0.0.1/tcp/1":             "http://127.0.0.1:1",
		"/ip6/::1/tcp/5001":                "http://[::1]:5001",
		"/dns4/ipfs.example/tcp/443/https": "https://ipfs.example:443",
		"http://127.0.0.1:5001":            "http://127.0.0.1:5001",
		"http://127.0.0.1:5001/api/v0/":    "http://127.0.0.1:5001",
		"127.0.0.1:5001":                   "http://127.0.0.1:5001",
		"/unix/run/ipfs/api.sock":          "/unix/run/ipfs/api.sock",
	} {
		if got, err := ipfs.ResolveAPI(in); err != nil || got != want {
			t.Errorf("ResolveAPI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/ip4/notanip/tcp/1", "ftp://127.0.0.1:5001", "localhost"} {
		if _, err := ipfs.Dial(bad); !errs.Is(err, errs.Invalid) {
			t.Errorf("Dial(%q) = %v, want an Invalid error", bad, err)
		}
	}

	k, err := ipfs.Dial("/ip4/127.0.0.1/tcp/1")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Ping(t.Context()); !errs.Is(err, errs.Transient) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Ping of a closed port = %v, want Transient naming the address", err)
	}

	d := testenv.StartKubo(t, testenv.KuboOffline())
	t.Setenv("IPFS_PATH", d.Repo)
	k, err = ipfs.Dial("")
	if err != nil {
		t.Fatal(err)
	}
	if k.String() != d.API {
		t.Errorf(`Dial("") resolved %s, daemon API is %s`, k, d.API)
	}
	if err := k.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx := t.Context()
	for name, p := range map[string]func(*ipfs.Params){
		"chunker":     func(p *ipfs.Params) { p.Chunker = "bogus" },
		"no chunker":  func(p *ipfs.Params) { p.Chunker = "" },
		"cid version": func(p *ipfs.Params) { p.CIDVersion = 2 },
		"hash":        func(p *ipfs.Params) { p.HashFunction = "md4x" },
		"v0 hash":     func(p *ipfs.Params) { p.CIDVersion = 0; p.HashFunction = "blake3" },
	} {
		params := ipfs.DefaultParams()
		p(&params)
		if _, err := k.Client.Add(ctx, strings.NewReader("x"), params, false); !errs.Is(err, errs.Invalid) {
			t.Errorf("Add with bad %s = %v, want Invalid", name, err)
		}
	}
	if err := k.Client.Pin(ctx, cid.Undef, ""); !errs.Is(err, errs.Invalid) {
		t.Errorf("Pin(cid.Undef) = %v, want Invalid", err)
	}
	if _, err := k.Client.AddFile(ctx, filepath.Join(t.TempDir(), "missing"), ipfs.DefaultParams(), false); !errs.Is(err, errs.Invalid) {
		t.Errorf("AddFile of a missing file = %v, want Invalid", err)
	}
	if _, err := k.Client.AddFile(ctx, t.TempDir(), ipfs.DefaultParams(), false); !errs.Is(err, errs.Invalid) {
		t.Errorf("AddFile of a directory = %v, want Invalid", err)
	}

	// Other hash functions must reach the daemon intact.
	p := ipfs.DefaultParams()
	p.HashFunction = "blake3"
	c, err := k.Client.Add(ctx, strings.NewReader("x"), p, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix().MhType != mh.BLAKE3 {
		t.Errorf("blake3 add gave %s", c)
	}

	// A failing source is the source's failure, not the daemon's.
	boom := errors.New("source broke")
	_, err = k.Client.Add(ctx, io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{boom}), ipfs.DefaultParams(), false)
	if !errors.Is(err, boom) || errs.Is(err, errs.Transient) {
		t.Errorf("Add from a failing reader = %v (kind %s), want the reader's error", err, errs.KindOf(err))
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := k.Client.Add(cctx, strings.NewReader("x"), ipfs.DefaultParams(), false); !errors.Is(err, context.Canceled) || errs.KindOf(err) != errs.Other {
		t.Errorf("Add with a cancelled context = %v (kind %s), want context.Canceled without a kind", err, errs.KindOf(err))
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// missingCID names content that exists nowhere.
func missingCID(t *testing.T) cid.Cid {
	h, err := mh.Sum(randomBytes(uint64(time.Now().UnixNano()), 64), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func TestMissingCIDDeadline(t *testing.T) {
	k := testenv.StartKubo(t)
	c := missingCID(t)
	for name, call := range map[string]func(context.Context) error{
		"Pin": func(ctx context.Context) error { return k.Client.Pin(ctx, c, "") },
		"Cat": func(ctx context.Context) error {
			rc, err := k.Client.Cat(ctx, c)
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			return err
		},
		"Size": func(ctx context.Context) error { _, err := k.Client.Size(ctx, c); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		d := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s of a missing CID = %v, want context.DeadlineExceeded", name, err)
		}
		if errs.KindOf(err) != errs.Other {
			t.Errorf("%s: a deadline got kind %s", name, errs.KindOf(err))
		}
		if d > 3*time.Second {
			t.Errorf("%s returned %v after a 500ms deadline", name, d)
		}
		if err != nil && !strings.Contains(err.Error(), c.String()) {
			t.Errorf("%s error does not name the CID: %v", name, err)
		}
	}
	// The daemon is still fine afterwards, and the CID is not pinned.
	if ok, err := k.Client.IsPinned(t.Context(), c); err != nil || ok {
		t.Fatalf("IsPinned = %v, %v", ok, err)
	}
}

// TestPinProgress: PinProgress pins what a connected peer holds, with
// its name, and reports the blocks fetched; a pin of what no peer holds
// reports none and ends with its context.
func TestPinProgress(t *testing.T) {
	_, b, c, _ := peeredWithFile(t, 6, 8<<20)
	ctx := t.Context()
	calls := 0
	if err := b.Client.PinProgress(ctx, c, "nix-ipfs-progress", func() { calls++ }); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Client.IsPinned(ctx, c); err != nil || !ok {
		t.Fatalf("IsPinned after PinProgress = %v, %v", ok, err)
	}
	if calls == 0 {
		t.Error("PinProgress of 8 MiB fetched from a peer reported no progress")
	}
	if out := b.IPFS(t, "pin", "ls", "--names", "--type=recursive", c.String()); !strings.Contains(out, "nix-ipfs-progress") {
		t.Errorf("pin name not recorded: %q", out)
	}
	missing, err := cid.Decode("bafkreie5yv6duwljqqbf6rtzykb4zsnffrm5ff6uioabsf36fqzsgkqlfe")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	calls = 0
	if err := b.Client.PinProgress(sctx, missing, "", func() { calls++ }); err == nil {
		t.Fatal("PinProgress of a CID nobody holds succeeded")
	}
	if calls != 0 {
		t.Errorf("PinProgress of a CID nobody holds reported progress %d times", calls)
	}
}
