package retention

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/synthcache"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/latest"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/retention/incache"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

func TestParseDrvName(t *testing.T) {
	for _, c := range []struct{ in, name, version string }{
		{"hello-2.12.1", "hello", "2.12.1"},
		{"xorg-server-21.1", "xorg-server", "21.1"},
		{"nix", "nix", ""},
		{"foo-bar-baz", "foo-bar-baz", ""},
		{"python3.11-requests-2.31.0", "python3.11-requests", "2.31.0"},
		{"gcc-", "gcc-", ""},
		{"a-1-b", "a", "1-b"},
		{"linux-6.1-dev", "linux", "6.1-dev"},
	} {
		n, v := latest.ParseDrvName(c.in)
		if n != c.name || v != c.version {
			t.Errorf("ParseDrvName(%q) = %q, %q; want %q, %q", c.in, n, v, c.name, c.version)
		}
	}
	ev := &events.Built{DrvPath: "/nix/store/" + strings.Repeat("a", 32) + "-hello-2.12.drv"}
	if j := latest.JobOf(ev); j != "hello" {
		t.Errorf("JobOf from drv = %q", j)
	}
	ev.Job = "nixpkgs:trunk:hello.x86_64-linux"
	if j := latest.JobOf(ev); j != ev.Job {
		t.Errorf("JobOf with a Hydra job = %q", j)
	}
}

type world struct {
	t     *testing.T
	dir   string
	js    jetstream.JetStream
	paths map[string]synthcache.Path // by store path
	gens  [][]synthcache.Path
}

func newWorld(t *testing.T) *world {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache")
	if err := synthcache.Init(dir); err != nil {
		t.Fatal(err)
	}
	return &world{t: t, dir: dir, js: js, paths: map[string]synthcache.Path{}}
}

// addGen writes a generation into the cache, aged age, and records its
// build (of its top path) at built.
func (w *world) addGen(set string, n int, age time.Duration, built time.Time) []synthcache.Path {
	ps := synthcache.Generation(set, n, 6, 3, 512)
	for _, p := range ps {
		if _, err := synthcache.Write(w.dir, p, time.Now().Add(-age)); err != nil {
			w.t.Fatal(err)
		}
		w.paths[p.StorePath] = p
	}
	top := ps[len(ps)-1].StorePath
	ev := &events.Built{Header: events.Header{Time: built}, Host: "a", StoreDir: "/nix/store", OutPaths: []string{top}}
	events.Seal(ev)
	if _, err := events.Publish(context.Background(), w.js, events.SubjectBuilt, ev); err != nil {
		w.t.Fatal(err)
	}
	w.gens = append(w.gens, ps)
	return ps
}

func (w *world) closure(roots ...string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(sp string) {
		if out[sp] {
			return
		}
		out[sp] = true
		for _, r := range w.paths[sp].Refs {
			walk(r)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

func (w *world) inCache(sp string) bool {
	b, err := os.ReadFile(filepath.Join(w.dir, storepath.HashPart(sp)+".narinfo"))
	if err != nil {
		return false
	}
	ni, err := narinfo.ParseBytes(b)
	if err != nil {
		w.t.Fatalf("%s: %v", sp, err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, ni.URL)); err != nil {
		w.t.Errorf("%s: narinfo without NAR: %v", sp, err)
	}
	return true
}

func (w *world) prune(pol Policy, dry bool) (*Plan, Result) {
	w.t.Helper()
	ctx := context.Background()
	ix, roots, pins, err := Load(ctx, w.js, events.DefaultStream, w.dir, pol.Grace)
	if err != nil {
		w.t.Fatal(err)
	}
	plan := Decide(ix, roots, pins, pol, time.Now())
	if dry {
		return plan, Result{}
	}
	x := &Executor{Dir: w.dir, JS: w.js, Host: "a", Grace: pol.Grace, BatchSize: 7}
	res, err := x.Run(ctx, plan)
	if err != nil {
		w.t.Fatal(err)
	}
	return plan, res
}

func retiredEvents(t *testing.T, js jetstream.JetStream) map[string]*events.Retired {
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, events.DefaultStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.SubjectRetired}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*events.Retired{}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		ev, err := events.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		r := ev.(*events.Retired)
		out[r.StorePath] = r
	}
}

// treeDigest hashes every file's name, content and modification time.
func treeDigest(t *testing.T, dir string) string {
	h := sha256.New()
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, p)
		return nil
	})
	sort.Strings(names)
	for _, p := range names {
		fi, _ := os.Lstat(p)
		fmt.Fprintf(h, "%s %v %d\n", p, fi.ModTime().UnixNano(), fi.Size())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestPruneKeepsLiveClosures: 8 generations sharing most paths, a pin on
// the second; prune keeps the last 2 by job and the pin, with every path
// they reference, removes everything else (narinfo and NAR), announces each
// with a reason; --dry-run before it changed nothing, and a second prune
// finds nothing to do.
func TestPruneKeepsLiveClosures(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	for g := 0; g < 8; g++ {
		w.addGen("pkgs", g, 48*time.Hour, now.Add(-time.Duration(100-g)*time.Hour))
	}
	top := func(g int) string { return w.gens[g][len(w.gens[g])-1].StorePath }
	pins, err := OpenPins(context.Background(), w.js, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pins.Add(context.Background(), "release", top(1), 0, now); err != nil {
		t.Fatal(err)
	}
	pol := Policy{KeepFor: time.Hour, KeepLastPerJob: 2, Grace: time.Hour}

	before := treeDigest(t, w.dir)
	plan, _ := w.prune(pol, true)
	if after := treeDigest(t, w.dir); after != before {
		t.Fatal("a dry run changed the cache directory")
	}
	keep := w.closure(top(1), top(6), top(7))
	if plan.KeptPaths != len(keep) {
		t.Errorf("plan keeps %d paths, want %d", plan.KeptPaths, len(keep))
	}
	if plan.LiveRoots.Len() != 3 {
		t.Errorf("%d live roots, want 3 (2 by job, 1 pin)", plan.LiveRoots.Len())
	}
	_, res := w.prune(pol, false)
	var gone []string
	for sp := range w.paths {
		in := w.inCache(sp)
		if keep[sp] && !in {
			t.Errorf("kept path %s was removed", sp)
		}
		if !keep[sp] {
			if in {
				t.Errorf("unkept path %s is still there", sp)
			}
			gone = append(gone, sp)
		}
	}
	if res.Retired != len(gone) || res.NARsRemoved != len(gone) || len(gone) == 0 {
		t.Errorf("result %+v; want %d retired", res, len(gone))
	}
	evs := retiredEvents(t, w.js)
	for _, sp := range gone {
		ev := evs[sp]
		if ev == nil {
			t.Errorf("no retired event for %s", sp)
			continue
		}
		if ev.CID == "" || ev.Reason == "" || ev.NarSize == 0 {
			t.Errorf("retired event for %s: %+v", sp, ev)
		}
	}
	if len(evs) != len(gone) {
		t.Errorf("%d retired events, want %d", len(evs), len(gone))
	}
	if left, _ := os.ReadDir(filepath.Join(w.dir, cachedir.JournalDir)); len(left) != 0 {
		t.Errorf("journal not empty: %v", left)
	}
	plan2, res2 := w.prune(pol, false)
	if plan2.Retire.Len() != 0 || res2.Retired != 0 {
		t.Errorf("second prune retired %d", plan2.Retire.Len())
	}
}

// TestPruneGraceAndMissingReferences: a path written within --grace is
// kept with everything it references even though no root keeps it; a
// narinfo naming a reference the cache lacks is reported, and nothing is
// removed on its account.
func TestPruneGraceAndMissingReferences(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	old := w.addGen("old", 0, 48*time.Hour, now.Add(-48*time.Hour))
	// A fresh path (no built event: being published) reusing old paths.
	fresh := synthcache.Path{StorePath: synthcache.StorePath("fresh", "fresh-1"), Refs: []string{old[2].StorePath, old[7].StorePath}, Size: 100}
	if _, err := synthcache.Write(w.dir, fresh, time.Time{}); err != nil {
		t.Fatal(err)
	}
	w.paths[fresh.StorePath] = fresh
	// An old path whose reference is missing.
	ghost := synthcache.StorePath("ghost", "ghost-1")
	broken := synthcache.Path{StorePath: synthcache.StorePath("broken", "broken-1"), Refs: []string{ghost}, Size: 100}
	if _, err := synthcache.Write(w.dir, broken, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	w.paths[broken.StorePath] = broken

	pol := Policy{KeepFor: 0, Grace: time.Hour}
	plan, _ := w.prune(pol, false)
	keep := w.closure(fresh.StorePath, broken.StorePath)
	for sp := range w.paths {
		if in := w.inCache(sp); in != keep[sp] {
			t.Errorf("%s in cache %v, want %v", sp, in, keep[sp])
		}
	}
	found := false
	for _, p := range plan.Problems {
		if strings.Contains(p, broken.StorePath) && strings.Contains(p, storepath.HashPart(ghost)) {
			found = true
		}
	}
	if !found {
		t.Errorf("missing reference not reported: %q", plan.Problems)
	}
	if plan.GracePaths != 2 {
		t.Errorf("grace kept %d seeds, want 2", plan.GracePaths)
	}
}

// TestPruneResumesFromJournal: a prune interrupted after moving narinfos
// (and a NAR) into its journal is finished by the next one; a journal
// entry that became kept meanwhile goes back into the cache.
func TestPruneResumesFromJournal(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	g0 := w.addGen("p", 0, 48*time.Hour, now.Add(-48*time.Hour))
	g1 := w.addGen("p", 1, 48*time.Hour, now.Add(-47*time.Hour))
	pol := Policy{KeepLastPerJob: 1}
	plan, _ := w.prune(pol, true)
	// Interrupt by hand: move two narinfos and one NAR into the journal.
	jdir := filepath.Join(w.dir, cachedir.JournalDir)
	os.MkdirAll(jdir, 0o755)
	top0 := g0[6].StorePath // a leaf only generation 0 has
	pinned := w.closure(top0)
	var rs []Retirement
	for _, r := range plan.Retire.All() {
		if !pinned[r.StorePath] {
			rs = append(rs, r)
		}
	}
	r0, r1 := rs[0], rs[1]
	for _, r := range []Retirement{r0, r1} {
		if err := os.Rename(filepath.Join(w.dir, r.HashPart+".narinfo"), filepath.Join(jdir, r.HashPart+".narinfo")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(w.dir, r0.URL), filepath.Join(jdir, filepath.Base(r0.URL))); err != nil {
		t.Fatal(err)
	}
	// And a retired path that becomes kept: pin a leaf of g0, whose narinfo
	// is journaled too.
	h := storepath.HashPart(top0)
	if err := os.Rename(filepath.Join(w.dir, h+".narinfo"), filepath.Join(jdir, h+".narinfo")); err != nil {
		t.Fatal(err)
	}
	pins, _ := OpenPins(context.Background(), w.js, 1, true)
	if _, err := pins.Add(context.Background(), "old", top0, 0, now); err != nil {
		t.Fatal(err)
	}
	_, res := w.prune(pol, false)
	keep := w.closure(top0, g1[len(g1)-1].StorePath)
	for sp := range w.paths {
		if in := w.inCache(sp); in != keep[sp] {
			t.Errorf("%s in cache %v, want %v", sp, in, keep[sp])
		}
	}
	if res.Restored != 1 {
		t.Errorf("restored %d, want 1", res.Restored)
	}
	if left, _ := os.ReadDir(jdir); len(left) != 0 {
		t.Errorf("journal not empty: %v", left)
	}
	if _, err := os.Stat(filepath.Join(w.dir, r0.URL)); err == nil {
		t.Errorf("journaled NAR %s came back", r0.URL)
	}
}

// TestPins: add, revisions, keep-revisions, rm, and a path not in the
// cache refused.
func TestPins(t *testing.T) {
	w := newWorld(t)
	g := w.addGen("x", 0, time.Hour, time.Now())
	ctx := context.Background()
	if err := incache.Check(ctx, w.dir, "", "/nix/store/"+strings.Repeat("0", 32)+"-nope"); err == nil || !strings.Contains(err.Error(), "not in the cache") {
		t.Errorf("pin of a missing path: %v", err)
	}
	if err := incache.Check(ctx, w.dir, "", g[0].StorePath); err != nil {
		t.Error(err)
	}
	pins, err := OpenPins(ctx, w.js, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range g[:4] {
		keep := 0
		if i == 1 {
			keep = 2
		}
		if _, err := pins.Add(ctx, "rel-1.0", p.StorePath, keep, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	pin, _, ok, err := pins.Get(ctx, "rel-1.0")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if got := pin.Live(); len(got) != 2 || got[0] != g[2].StorePath || got[1] != g[3].StorePath || pin.KeepRevisions != 2 {
		t.Errorf("pin %+v", pin)
	}
	if err := ValidatePinName("../x"); err == nil {
		t.Error("bad name accepted")
	}
	if err := pins.Remove(ctx, "rel-1.0"); err != nil {
		t.Fatal(err)
	}
	if list, _ := pins.List(ctx); len(list) != 0 {
		t.Errorf("pins left: %+v", list)
	}
	if err := pins.Remove(ctx, "rel-1.0"); err == nil {
		t.Error("removing a missing pin succeeded")
	}
}

// TestPruneSharedNAR: two paths with byte-identical NARs share the NAR
// file and the CID. Retiring one while the other is kept removes neither,
// and its retired event names no CID, so no host unpins what the kept one
// needs.
func TestPruneSharedNAR(t *testing.T) {
	w := newWorld(t)
	old := time.Now().Add(-48 * time.Hour)
	keep := synthcache.Path{StorePath: synthcache.StorePath("twin-a", "twin-1"), Size: 300}
	ni, err := synthcache.Write(w.dir, keep, old)
	if err != nil {
		t.Fatal(err)
	}
	gone := synthcache.StorePath("twin-b", "twin-1")
	ni2 := *ni
	ni2.StorePath = gone
	p2 := filepath.Join(w.dir, storepath.HashPart(gone)+".narinfo")
	if err := os.WriteFile(p2, []byte(ni2.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p2, old, old)
	pins, _ := OpenPins(context.Background(), w.js, 1, true)
	if _, err := pins.Add(context.Background(), "twin", keep.StorePath, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	plan, res := w.prune(Policy{Grace: time.Hour}, false)
	if plan.Retire.Len() != 1 {
		t.Fatalf("%d retire, want 1", plan.Retire.Len())
	}
	if r := plan.Retire.At(0); r.StorePath != gone || r.RemoveNAR || r.CID != "" {
		t.Fatalf("plan %+v", r)
	}
	if res.NARsRemoved != 0 {
		t.Errorf("removed %d NARs", res.NARsRemoved)
	}
	if _, err := os.Stat(filepath.Join(w.dir, ni.URL)); err != nil {
		t.Errorf("the shared NAR went: %v", err)
	}
	if ev := retiredEvents(t, w.js)[gone]; ev == nil || ev.CID != "" {
		t.Errorf("retired event %+v: want one, without CID", ev)
	}
}

// TestPruneGraceByPublishedEvent: a path whose files look old (a cache
// restored from a copy) but whose "published" event is within --grace is
// kept, with its closure.
func TestPruneGraceByPublishedEvent(t *testing.T) {
	w := newWorld(t)
	old := time.Now().Add(-48 * time.Hour)
	dep := synthcache.Path{StorePath: synthcache.StorePath("restored-dep", "dep-1"), Size: 100}
	top := synthcache.Path{StorePath: synthcache.StorePath("restored-top", "top-1"), Refs: []string{dep.StorePath}, Size: 100}
	other := synthcache.Path{StorePath: synthcache.StorePath("other", "other-1"), Size: 100}
	var tni *narinfo.NarInfo
	for _, p := range []synthcache.Path{dep, top, other} {
		ni, err := synthcache.Write(w.dir, p, old)
		if err != nil {
			t.Fatal(err)
		}
		if p.StorePath == top.StorePath {
			tni = ni
		}
		w.paths[p.StorePath] = p
	}
	ev := &events.Published{Host: "a", StoreDir: "/nix/store", StorePath: top.StorePath, NarHash: tni.NarHash,
		NarSize: int64(tni.NarSize), References: []string{filepath.Base(dep.StorePath)}, CacheURL: "file:///cache",
		NarURL: tni.URL, CID: tni.IPFSHash,
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWPublisher", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}}}
	events.Seal(ev)
	if _, err := events.Publish(context.Background(), w.js, events.SubjectPublished, ev); err != nil {
		t.Fatal(err)
	}
	w.prune(Policy{Grace: time.Hour}, false)
	keep := w.closure(top.StorePath)
	for sp := range w.paths {
		if in := w.inCache(sp); in != keep[sp] {
			t.Errorf("%s in cache %v, want %v", sp, in, keep[sp])
		}
	}
}

// TestPruneKeepsEachJobsLatest: a job's latest-build document in the cache
// keeps its outputs' closure, whatever --keep-for and --keep-last-per-job
// say; the other generations go.
func TestPruneKeepsEachJobsLatest(t *testing.T) {
	w := newWorld(t)
	now := time.Now()
	for g := 0; g < 3; g++ {
		w.addGen("app", g, 48*time.Hour, now.Add(-time.Duration(100-g)*time.Hour))
	}
	top := w.gens[1][len(w.gens[1])-1].StorePath
	sk, _, err := signature.GenerateKeypair("cache-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := latest.New("proj:main:app", now.Add(-99*time.Hour), 2, "", 0, []string{top})
	if err := d.Sign(sk); err != nil {
		t.Fatal(err)
	}
	raw, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := latest.Keep(cachedir.Cache{Dir: w.dir, StoreDir: "/nix/store"}, raw); err != nil {
		t.Fatal(err)
	}
	plan, _ := w.prune(Policy{}, false)
	found := false
	for _, lr := range plan.LiveRoots.All() {
		if lr.Job == "proj:main:app" && slices.Contains(lr.Why, "latest build of job proj:main:app") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the job's latest is not a live root: %d live", plan.LiveRoots.Len())
	}
	keep := w.closure(top)
	for sp := range w.paths {
		if got := w.inCache(sp); got != keep[sp] {
			t.Errorf("%s in cache = %v, want %v", sp, got, keep[sp])
		}
	}
}
