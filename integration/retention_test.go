package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/retention"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// genLeaves is how many leaves a generation has; leaf i changes every i+1
// generations.
const genLeaves = 3

func leafVersion(i, gen int) int { return gen / (i + 1) }

// genExpr is generation gen of a small package set: two shared
// dependencies (built once), three leaves that reference them, and a top
// that references the leaves. leafOverride, if not nil, fixes leaf versions.
func genExpr(nonce string, gen int, leafOverride map[int]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "let dep0 = %s;\n", testenv.Drv("dep0"+nonce+"-1.0", `echo dep0 > $out`, ""))
	fmt.Fprintf(&b, "dep1 = %s;\n", testenv.Drv("dep1"+nonce+"-1.0", `mkdir $out; echo ${dep0} > $out/ref`, "inherit dep0;"))
	var refs []string
	for i := 0; i < genLeaves; i++ {
		v := leafVersion(i, gen)
		if o, ok := leafOverride[i]; ok {
			v = o
		}
		fmt.Fprintf(&b, "l%d = %s;\n", i, testenv.Drv(fmt.Sprintf("leaf%d%s-%d", i, nonce, v),
			fmt.Sprintf(`mkdir $out; echo leaf%d-%d > $out/v; echo ${dep1} > $out/ref`, i, v), "inherit dep1;"))
		refs = append(refs, fmt.Sprintf("l%d", i))
	}
	fmt.Fprintf(&b, "in %s\n", testenv.Drv(fmt.Sprintf("pkgset%s-1.%d", nonce, gen),
		`mkdir $out; echo ${l0} ${l1} ${l2} > $out/refs`, "inherit "+strings.Join(refs, " ")+";"))
	return b.String()
}

// cacheDigest hashes the names, sizes, modes and contents of every file
// under dir (modification times aside: the publisher refreshes them).
func cacheDigest(t *testing.T, dir string) string {
	t.Helper()
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
		fmt.Fprintf(h, "%s %v %d\n", p, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func repoSize(t *testing.T, k *testenv.Kubo) int64 {
	var st struct{ RepoSize int64 }
	if err := json.Unmarshal([]byte(k.IPFS(t, "repo", "stat", "--enc=json")), &st); err != nil {
		t.Fatal(err)
	}
	return st.RepoSize
}

// TestRetentionEndToEnd is retention's proof with the real parts: twelve
// generations of a package set, each changing a few leaves and sharing the
// rest, built with real nix-build through the hook, published to A's cache
// and kubo and pinned by mirror B. Two generations are pinned by name; a
// dry run changes nothing; then prune --keep-for 0s --grace 0s
// --keep-last-per-job 2. Every kept root's closure is then copied by stock
// Nix from the cache into a fresh store, and through the substituter from
// B's IPFS node with A's NARs and kubo gone; every retired path has left
// the cache and both nodes' pins, shared dependencies stayed, and a retired
// path is a clean 404. A prune running again and again while the publisher
// publishes a new generation that reuses an otherwise unkept path loses
// nothing of it.
func TestRetentionEndToEnd(t *testing.T) {
	start := time.Now()
	a := newHostA(t)
	a.startPublisher(t)
	b := testenv.StartKubo(t)
	_, js := a.nats.Connect(t)
	bin := filepath.Join(a.bin, "nix-ipfs")
	testenv.StartProc(t, bin, []string{"mirror", "--name", "b", "--ack-wait", "5s"}, mirEnv(a.nats.URL, b.API)...)
	env := []string{"NIX_IPFS_NATS_URL=" + a.nats.URL, "NIX_IPFS_LOG_FORMAT=console"}

	nonce := testenv.Nonce()
	const gens = 12
	tops := make([]string, gens)
	for g := 0; g < gens; g++ {
		tops[g] = a.nix.Build(t, genExpr(nonce, g, nil))[0]
	}
	var all []string
	seen := map[string]bool{}
	for _, top := range tops {
		for _, p := range closureOf(t, a.nix, top) {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	sort.Strings(all)
	nis := a.waitPublished(t, all, 3*time.Minute)
	var cids []string
	for _, p := range all {
		cids = append(cids, nis[p].IPFSHash)
	}
	testenv.Eventually(t, 2*time.Minute, "every CID pinned on B", func() bool { return len(mirMissing(mirPins(t, b), cids)) == 0 })
	t.Logf("%d generations, %d paths built, published and mirrored in %v", gens, len(all), time.Since(start).Round(time.Millisecond))

	// The expected kept set, from what the test built: the last two tops,
	// the pinned tops 3 and 7, the last two versions of each leaf (every
	// built derivation is a root of its job), the shared dependencies.
	nameRE := regexp.MustCompile(`^[0-9a-z]{32}-(leaf(\d)|pkgset|dep\d)` + nonce + `-(?:1\.)?(\d+)`)
	var roots []string
	for _, p := range all {
		m := nameRE.FindStringSubmatch(filepath.Base(p))
		if m == nil {
			t.Fatalf("unexpected path %s", p)
		}
		v, _ := strconv.Atoi(m[3])
		switch {
		case m[1] == "pkgset":
			if v >= gens-2 || v == 3 || v == 7 {
				roots = append(roots, p)
			}
		case m[2] != "":
			i, _ := strconv.Atoi(m[2])
			if v >= leafVersion(i, gens-1)-1 {
				roots = append(roots, p)
			}
		default:
			roots = append(roots, p)
		}
	}
	kept := map[string]bool{}
	for _, r := range roots {
		for _, p := range closureOf(t, a.nix, r) {
			kept[p] = true
		}
	}
	var retired []string
	for _, p := range all {
		if !kept[p] {
			retired = append(retired, p)
		}
	}
	if len(retired) < 15 {
		t.Fatalf("only %d paths to retire: the test's generations are wrong", len(retired))
	}

	// Pins: a path not in the cache is refused; two generations pinned.
	missing := "/nix/store/" + strings.Repeat("0", 32) + "-not-in-cache"
	if out, _, err := mirRun(t, a.bin, env, "pin", "add", "nope", missing, "--cache-dir", a.cache); err == nil {
		t.Errorf("pin of a path not in the cache accepted: %s", out)
	}
	mirMustRun(t, a.bin, env, "pin", "add", "release-a", tops[3], "--cache-dir", a.cache)
	mirMustRun(t, a.bin, env, "pin", "add", "--keep-revisions", "1", "release-b", tops[7], "--cache-dir", a.cache)
	pinList := func() string { out, _ := mirMustRun(t, a.bin, env, "pin", "list", "--json"); return out }
	var listed []retention.Pin
	if err := json.Unmarshal([]byte(pinList()), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("pin list: %v %+v", err, listed)
	}

	policy := []string{"prune", "--cache-dir", a.cache, "--keep-for", "0s", "--grace", "0s", "--keep-last-per-job", "2", "--kubo-api", a.kubo.API}
	digest, pinsBefore := cacheDigest(t, a.cache), pinList()
	dry, _ := mirMustRun(t, a.bin, env, append(policy, "--dry-run")...)
	if cacheDigest(t, a.cache) != digest || pinList() != pinsBefore {
		t.Fatal("prune --dry-run changed the cache directory or the pins")
	}
	if !strings.Contains(dry, fmt.Sprintf("would retire: %d paths", len(retired))) {
		t.Errorf("dry run does not say it would retire %d paths:\n%s", len(retired), dry)
	}
	st, _ := mirMustRun(t, a.bin, env, "status", "--cache-dir", a.cache, "--keep-for", "0s", "--grace", "0s", "--keep-last-per-job", "2")
	if !strings.Contains(st, fmt.Sprintf("would retire %d paths", len(retired))) || !strings.Contains(st, "pins: 2") {
		t.Errorf("status does not show the retention summary:\n%s", st)
	}

	out, _ := mirMustRun(t, a.bin, env, append(policy, "--json")...)
	var res struct {
		Plan   retention.Plan
		Result retention.Result
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("prune --json: %v\n%s", err, out)
	}
	t.Logf("prune: %d live roots, kept %d, retired %d, freed %d bytes, %d problems",
		res.Plan.LiveRoots.Len(), res.Plan.KeptPaths, res.Result.Retired, res.Result.FreedBytes, len(res.Plan.Problems))
	if res.Result.Retired != len(retired) || res.Result.Announced != len(retired) || len(res.Plan.Problems) != 0 {
		t.Errorf("prune result %+v, problems %q; want %d retired", res.Result, res.Plan.Problems, len(retired))
	}

	// The cache: kept paths whole, retired ones gone, narinfo and NAR.
	var keptList []string
	for p := range kept {
		keptList = append(keptList, p)
	}
	if _, bad := checkCache(a.cache, keptList); len(bad) > 0 {
		t.Errorf("kept paths damaged: %q", bad)
	}
	for _, p := range retired {
		if _, err := os.Stat(filepath.Join(a.cache, storepath.HashPart(p)+".narinfo")); err == nil {
			t.Errorf("retired %s: narinfo still there", p)
		}
		if _, err := os.Stat(filepath.Join(a.cache, nis[p].URL)); err == nil {
			t.Errorf("retired %s: NAR still there", p)
		}
	}
	for _, dep := range []string{"dep0", "dep1"} {
		for _, p := range all {
			if strings.Contains(p, dep+nonce) && !kept[p] {
				t.Errorf("shared dependency %s not kept", p)
			}
		}
	}
	// Retired events, and the pins of A and B.
	evs := map[string]*events.Retired{}
	for _, e := range streamEvents(t, js, events.SubjectRetired) {
		r := e.(*events.Retired)
		evs[r.StorePath] = r
	}
	for _, p := range retired {
		if e := evs[p]; e == nil || e.CID != nis[p].IPFSHash || e.Reason == "" {
			t.Errorf("retired event for %s: %+v", p, e)
		}
	}
	pinsA := pinnedOn(t, a.kubo)
	testenv.Eventually(t, time.Minute, "B unpinned every retired CID", func() bool {
		pinsB := mirPins(t, b)
		for _, p := range retired {
			if pinsB[nis[p].IPFSHash] {
				return false
			}
		}
		return true
	})
	pinsB := mirPins(t, b)
	for _, p := range all {
		c := nis[p].IPFSHash
		if kept[p] && (!pinsA[c] || !pinsB[c]) {
			t.Errorf("kept %s: CID %s pinned on A %v, on B %v", p, c, pinsA[c], pinsB[c])
		}
		if !kept[p] && pinsA[c] {
			t.Errorf("retired %s: CID %s still pinned on A", p, c)
		}
	}
	sizeA, sizeB := repoSize(t, a.kubo), repoSize(t, b)
	a.kubo.IPFS(t, "repo", "gc", "--quiet")
	b.IPFS(t, "repo", "gc", "--quiet")
	t.Logf("repo sizes after prune: A %d -> %d bytes, B %d -> %d bytes after repo GC", sizeA, repoSize(t, a.kubo), sizeB, repoSize(t, b))
	local := map[string]bool{}
	for _, l := range strings.Fields(b.IPFS(t, "refs", "local")) {
		if c, err := cid.Decode(l); err == nil {
			local[string(c.Hash())] = true
		}
	}
	for _, p := range all {
		c, err := cid.Decode(nis[p].IPFSHash)
		if err != nil {
			t.Fatal(err)
		}
		if in := local[string(c.Hash())]; in != kept[p] {
			t.Errorf("%s (kept %v): its root block in B's repo after GC: %v", p, kept[p], in)
		}
	}
	if _, err := os.Stat(filepath.Join(a.cache, retention.RootsFile)); err != nil {
		t.Errorf("roots file: %v", err)
	}

	// Stock Nix: every kept root's closure from the cache, then from B over
	// IPFS through the substituter with A's NARs and kubo gone.
	checkNixCopyAll(t, a, roots, keptList, "file://"+a.cache)
	noNARs := copyCacheDir(t, a.cache)
	os.RemoveAll(filepath.Join(noNARs, "nar"))
	up := httptest.NewServer(http.FileServer(http.Dir(noNARs)))
	defer up.Close()
	a.kubo.Stop(t)
	s := startSubstituterProc(t, a.bin, up.URL, "--kubo-api", b.API)
	checkNixCopyAll(t, a, roots, keptList, s.URL)
	if got := s.nars(t, `source="ipfs"`); got < float64(len(keptList)) {
		t.Errorf("%v NARs from IPFS, want %d", got, len(keptList))
	}
	gone := retired[0]
	resp, err := http.Get(s.URL + "/" + storepath.HashPart(gone) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("substituter answered %s for retired %s, want 404", resp.Status, gone)
	}
	dest := filepath.Join(t.TempDir(), "store-miss")
	if out, err := a.nix.Try("nix", "copy", "--from", s.URL, "--to", dest, "--option", "trusted-public-keys", a.nix.PublicKey, gone); err == nil {
		t.Errorf("stock Nix copied retired %s from the substituter: %s", gone, out)
	} else if strings.Contains(err.Error(), "hash mismatch") || strings.Contains(err.Error(), "500") {
		t.Errorf("stock Nix's miss for a retired path is not clean: %v", err)
	}
	s.Signal(15)
	a.kubo.Start(t)

	// A new generation published while prune runs over and over, reusing
	// leaf 1 version 4, which the next policy (--keep-last-per-job 1)
	// keeps no more: whatever the interleaving, gen 12 ends whole.
	old := time.Now().Add(-48 * time.Hour)
	filepath.WalkDir(a.cache, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	checker := startCacheChecker(t, a.cache, 2*time.Millisecond)
	concurrent := []string{"prune", "--cache-dir", a.cache, "--keep-for", "0s", "--grace", "1h", "--keep-last-per-job", "1", "--kubo-api", a.kubo.API}
	built := make(chan []string, 1)
	go func() {
		outs, err := a.nix.TryBuild(genExpr(nonce, gens, map[int]int{1: 4}))
		if err != nil {
			t.Error(err)
		}
		built <- outs
	}()
	var top12 []string
	runs := 0
	for top12 == nil || runs < 3 {
		if _, _, err := mirRun(t, a.bin, env, concurrent...); err != nil {
			t.Fatalf("concurrent prune: %v", err)
		}
		runs++
		select {
		case top12 = <-built:
			if len(top12) == 0 {
				t.FailNow()
			}
		default:
		}
	}
	t.Logf("generation 12 built while prune ran %d times", runs)
	closure12 := closureOf(t, a.nix, top12[0])
	a.waitPublished(t, closure12, 2*time.Minute)
	mirMustRun(t, a.bin, env, concurrent...)
	pinned := append(closureOf(t, a.nix, tops[3]), closureOf(t, a.nix, tops[7])...)
	if _, bad := checkCache(a.cache, pinned); len(bad) > 0 {
		t.Errorf("pinned generations damaged by the second policy: %q", bad)
	}
	if _, bad := checkCache(a.cache, closure12); len(bad) > 0 {
		t.Errorf("generation 12, published while prune ran %d times, lost: %q", runs, bad)
	}
	checker.Stop()
	for _, p := range checker.Problems() {
		t.Errorf("checker saw during prune: %s", p)
	}

	t.Logf("retention end to end in %v", time.Since(start).Round(time.Millisecond))
}

// checkNixCopyAll copies roots with stock Nix from a cache URL into a fresh
// store, trusting only A's key, and checks every path of want is there
// with the bytes of A's store.
func checkNixCopyAll(t *testing.T, a *hostA, roots, want []string, from string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "store-c")
	a.nix.Run(t, "nix", append([]string{"copy", "--from", from, "--to", dest,
		"--option", "trusted-public-keys", a.nix.PublicKey, "--option", "require-sigs", "true"}, roots...)...)
	for _, p := range want {
		if _, err := a.nix.Try("nix-store", "--store", dest, "--check-validity", p); err != nil {
			t.Errorf("%s not valid in the client store after a copy from %s: %v", p, from, err)
			continue
		}
		want, err := exec.Command("nix-store", "--dump", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command("nix-store", "--dump", filepath.Join(dest, p)).Output()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s from %s: contents differ in the client store", p, from)
		}
	}
}
