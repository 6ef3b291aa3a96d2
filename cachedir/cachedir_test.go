package cachedir

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

const hp = "0c6kzph7l0dcbfmjap64f0czdafn3b7x"

// nixHash is the nix32 SHA-256 of b, as a NAR's name carries it.
func nixHash(b []byte) string {
	s := sha256.Sum256(b)
	return nixbase32.EncodeToString(s[:])
}

func open(t *testing.T) Cache {
	t.Helper()
	c := Cache{Dir: t.TempDir(), StoreDir: "/nix/store"}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	return c
}

// publish writes a NAR and the narinfo naming it, in the order the
// publisher does: the NAR committed (synced) first. It may run on a
// goroutine of its own, so it reports with Error, not Fatal.
func publish(t testing.TB, c Cache, hashPart string, nar []byte) *narinfo.NarInfo {
	t.Helper()
	tmp, err := c.CreateNAR()
	if err != nil {
		t.Error(err)
		return nil
	}
	defer tmp.Abort()
	if _, err := tmp.Write(nar); err != nil {
		t.Error(err)
		return nil
	}
	h := "sha256:" + nixHash(nar)
	url := NarURL(h)
	if err := tmp.CommitTo(c.NarPath(url)); err != nil {
		t.Error(err)
		return nil
	}
	ni := &narinfo.NarInfo{StorePath: "/nix/store/" + hashPart + "-x", URL: url, Compression: "none",
		FileHash: h, FileSize: uint64(len(nar)), NarHash: h, NarSize: uint64(len(nar))}
	if err := c.WriteNarInfo(hashPart, []byte(ni.String()), nil); err != nil {
		t.Error(err)
		return nil
	}
	return ni
}

// TestOpen: a new cache gets nix-cache-info as Nix writes it; Open removes
// a crashed writer's temp files but not a live one's, and refuses a cache
// for another store.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	c := Cache{Dir: dir, StoreDir: "/nix/store"}
	os.MkdirAll(filepath.Join(dir, "nar"), 0o755)
	stale := filepath.Join(dir, "nar", ".tmp-incoming.nar-123")
	os.WriteFile(stale, []byte("half a NAR"), 0o644)
	old := time.Now().Add(-atomicfile.StaleAfter - time.Minute)
	os.Chtimes(stale, old, old)
	// Another live publisher sharing the cache is writing this one.
	live := filepath.Join(dir, "nar", ".tmp-incoming.nar-456")
	os.WriteFile(live, []byte("a NAR being written"), 0o644)
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "nix-cache-info")); string(b) != "StoreDir: /nix/store\n" {
		t.Errorf("nix-cache-info = %q", b)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("a crashed writer's temp file survived Open")
	}
	if _, err := os.Stat(live); err != nil {
		t.Error("Open removed a temp file a live writer may be writing")
	}
	for _, d := range []string{"nar", ".nix-ipfs/announced"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			t.Errorf("Open made no %s: %v", d, err)
		}
	}
	other := Cache{Dir: dir, StoreDir: "/gnu/store"}
	if err := other.Open(); !errs.Is(err, errs.Invalid) {
		t.Errorf("a cache for another store dir was opened: %v", err)
	}
	if err := other.OpenMirror(); !errs.Is(err, errs.Invalid) {
		t.Errorf("a mirror cache for another store dir was opened: %v", err)
	}
}

// TestLayout: every file lands where `nix copy` (and this project's
// readers) expect it.
func TestLayout(t *testing.T) {
	c := open(t)
	nar := []byte("a NAR")
	h := nixHash(nar)
	ni := publish(t, c, hp, nar)
	if ni.URL != "nar/"+h+".nar" || NarURL(h) != ni.URL {
		t.Errorf("URL %q, NarURL(bare) %q", ni.URL, NarURL(h))
	}
	for rel, want := range map[string]string{
		"nix-cache-info":            c.CacheInfoPath(),
		hp + ".narinfo":             c.NarInfoPath(hp),
		"nar":                       c.NarDir(),
		"nar/" + h + ".nar":         c.NarPath(ni.URL),
		".nix-ipfs/retiring":        c.StatePath(JournalDir),
		".nix-ipfs/roots.json":      c.StatePath(RootsFile),
		".nix-ipfs/announced":       c.StatePath(AnnouncedDir),
		".nix-ipfs/nar":             c.StatePath(MirrorIndexDir),
		"nix-ipfs-mirrors.json":     c.MirrorListPath(),
		".nix-ipfs/announced/" + hp: c.announcedPath(hp),
	} {
		if got := filepath.Join(c.Dir, rel); got != want {
			t.Errorf("%s is at %s, want %s", rel, want, got)
		}
	}
	got, err := c.ReadNarInfo(hp)
	if err != nil || got == nil || got.String() != ni.String() {
		t.Fatalf("ReadNarInfo = %v, %v", got, err)
	}
	if b, err := os.ReadFile(c.NarPath(got.URL)); err != nil || string(b) != "a NAR" {
		t.Errorf("NAR = %q, %v", b, err)
	}
	if ni, err := c.ReadNarInfo("1c6kzph7l0dcbfmjap64f0czdafn3b7x"); ni != nil || err != nil {
		t.Errorf("absent narinfo: %v, %v", ni, err)
	}

	if c.Announced(hp, "bafy1") {
		t.Error("announced before MarkAnnounced")
	}
	if err := c.MarkAnnounced(hp, "bafy1"); err != nil {
		t.Fatal(err)
	}
	if !c.Announced(hp, "bafy1") || c.Announced(hp, "bafy2") {
		t.Error("Announced does not answer for the CID marked")
	}
	c.ForgetAnnounced(hp)
	if c.Announced(hp, "bafy1") {
		t.Error("announced after ForgetAnnounced")
	}

	m := Cache{Dir: t.TempDir(), StoreDir: "/nix/store"}
	if err := m.OpenMirror(); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteMirrorIndex(h, hp); err != nil {
		t.Fatal(err)
	}
	if got, ok := m.MirrorIndex(h); !ok || got != hp {
		t.Errorf("MirrorIndex = %q, %v", got, ok)
	}
	m.DropMirrorIndex(h, "1c6kzph7l0dcbfmjap64f0czdafn3b7x") // another path's: stays
	if _, ok := m.MirrorIndex(h); !ok {
		t.Error("DropMirrorIndex removed an entry another path owns")
	}
	m.DropMirrorIndex(h, hp)
	if _, ok := m.MirrorIndex(h); ok {
		t.Error("DropMirrorIndex left the entry")
	}
}

// TestListing: what retention's index reads, and nothing else (temp
// files, symlinks, directories).
func TestListing(t *testing.T) {
	c := open(t)
	ni := publish(t, c, hp, []byte("one"))
	os.WriteFile(filepath.Join(c.Dir, ".tmp-"+hp+".narinfo"), nil, 0o644)
	os.WriteFile(filepath.Join(c.NarDir(), ".tmp-incoming.nar-1"), nil, 0o644)
	os.Symlink("/etc/passwd", filepath.Join(c.Dir, "1c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo"))
	os.Symlink("/etc/passwd", filepath.Join(c.NarDir(), "x.nar"))
	os.Mkdir(filepath.Join(c.Dir, "2c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo"), 0o755)

	files, err := c.NarInfoFiles()
	if err != nil || !slices.Equal(files, []string{c.NarInfoPath(hp)}) {
		t.Errorf("NarInfoFiles = %v, %v", files, err)
	}
	if HashPartOf(files[0]) != hp {
		t.Errorf("HashPartOf(%s) = %s", files[0], HashPartOf(files[0]))
	}
	nars, err := c.NARs()
	if err != nil || len(nars) != 1 || nars[0].URL != ni.URL || nars[0].Size != 3 {
		t.Errorf("NARs = %+v, %v", nars, err)
	}
	if err := c.CheckCacheInfo(); err != nil {
		t.Error(err)
	}
	if err := (Cache{Dir: t.TempDir()}).CheckCacheInfo(); err == nil {
		t.Error("a directory without nix-cache-info passed CheckCacheInfo")
	}
	infos, jnars, err := c.Journal()
	if err != nil || len(infos)+len(jnars) != 0 {
		t.Errorf("journal of a cache never pruned: %v %v %v", infos, jnars, err)
	}
}

// TestNarInfoNeverWithoutNAR: a reader listing the cache while the
// publisher writes never sees a narinfo whose NAR is not in place; and a
// retirement takes the narinfo away before the NAR.
func TestNarInfoNeverWithoutNAR(t *testing.T) {
	c := open(t)
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			nar := []byte{byte(i), byte(i >> 8), 'n', 'a', 'r'}
			publish(t, c, hashPartN(i), nar)
		}
	}()
	check := func() {
		files, err := c.NarInfoFiles()
		if err != nil {
			t.Error(err)
			return
		}
		for _, f := range files {
			ni, err := c.ReadNarInfo(HashPartOf(f))
			if err != nil || ni == nil {
				t.Errorf("%s: a narinfo visible but not whole: %v", f, err)
				continue
			}
			if fi, err := os.Stat(c.NarPath(ni.URL)); err != nil || uint64(fi.Size()) != ni.FileSize {
				t.Errorf("%s visible without its NAR: %v", f, err)
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		check()
	}
	check()

	// Retiring: by the time the NAR goes, the narinfo is out of the cache.
	t.Cleanup(func() { testHook = nil })
	testHook = func(stage string) {
		if _, err := os.Stat(c.NarInfoPath(hashPartN(0))); stage == "nar" && err == nil {
			t.Error("the NAR is being removed while its narinfo is still served")
		}
	}
	ni, _ := c.ReadNarInfo(hashPartN(0))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(c.NarInfoPath(hashPartN(0)), old, old)
	os.Chtimes(c.NarPath(ni.URL), old, old)
	c.MakeJournal()
	if w, err := c.Withdraw(hashPartN(0), time.Minute); w != Withdrawn || err != nil {
		t.Fatalf("Withdraw = %v, %v", w, err)
	}
	if _, removed, err := c.WithdrawNAR(ni.URL, time.Minute); !removed || err != nil {
		t.Fatalf("WithdrawNAR = %v, %v", removed, err)
	}
}

// hashPartN is a valid hash part for i.
func hashPartN(i int) string {
	s := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
	return nixbase32.EncodeToString(s[:20])
}
