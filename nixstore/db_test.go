package nixstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// nixPathInfo is one path's entry in nix path-info --json: an element of a
// list with its path in Nix 2.8, the value keyed by the path in an object
// from Nix 2.19 on (2.26 here).
type nixPathInfo struct {
	Path             string   `json:"path"`
	NarHash          string   `json:"narHash"` // SRI: sha256-<base64>
	NarSize          uint64   `json:"narSize"`
	References       []string `json:"references"`
	Deriver          string   `json:"deriver"`
	CA               string   `json:"ca"`
	Signatures       []string `json:"signatures"`
	RegistrationTime int64    `json:"registrationTime"`
	Ultimate         bool     `json:"ultimate"`
	Valid            *bool    `json:"valid"` // only present (false) for invalid paths
}

// testExpr has, per attribute: b, a leaf; a, which references b; self, which
// references itself; multi and multidev, the outputs out and dev of one
// derivation (dev references out, out references a); top, which references
// multi's dev and self; fixed, a fixed-output derivation; usetext, which
// references a builtins.toFile path (content-addressed, no deriver).
const testExpr = `
let
  nonce = "%s";
  mk = name: script: extra: derivation ({
    name = "nixstore-${name}-${nonce}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-c" script ];
  } // extra);
  b = mk "b" "echo leaf > $out" {};
  a = mk "a" "echo ${b} > $out" {};
  self = mk "self" "echo $out > $out" {};
  multi = mk "multi" "echo ${a} > $out; echo $out > $dev" { outputs = [ "out" "dev" ]; };
  top = mk "top" "echo ${multi.dev} ${self} > $out" {};
  fixed = mk "fixed" "printf fixed > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "%s";
  };
  text = builtins.toFile "nixstore-text-${nonce}" "hello ${nonce}";
  usetext = mk "usetext" "echo ${text} > $out" {};
in { inherit a b self multi top fixed usetext; multidev = multi.dev; }
`

// needNix returns the test's Nix and skips (fails under CI) when the real
// Nix or its database is not there.
func needNix(t *testing.T) *testenv.Nix {
	t.Helper()
	n := testenv.NewNix(t) // NeedProgram nix-build, nix-store
	testenv.NeedProgram(t, "nix")
	if _, err := os.Stat(DefaultDBPath); err != nil {
		testenv.Unavailable(t, "the Nix database: "+err.Error())
	}
	return n
}

// buildTestPaths builds testExpr with out-links under the test's temp dir
// and returns the outputs by role (a, b, self, multi, multidev, ...).
func buildTestPaths(t *testing.T, n *testenv.Nix) map[string]string {
	t.Helper()
	nonce := testenv.Nonce()
	fixedHash := sha256.Sum256([]byte("fixed"))
	dir := t.TempDir()
	file := filepath.Join(dir, "test.nix")
	if err := os.WriteFile(file, fmt.Appendf(nil, testExpr, nonce, hex.EncodeToString(fixedHash[:])), 0o644); err != nil {
		t.Fatal(err)
	}
	out := n.Run(t, "nix-build", file, "--out-link", filepath.Join(dir, "result"))
	roles := map[string]string{}
	for _, p := range strings.Fields(out) {
		name := filepath.Base(p)[storepath.HashLen+1:]
		role := strings.TrimPrefix(name, "nixstore-")
		role = strings.Replace(role, "-"+nonce, "", 1)
		role = strings.ReplaceAll(role, "-", "")
		roles[role] = p
	}
	for _, r := range []string{"a", "b", "self", "multi", "multidev", "top", "fixed", "usetext"} {
		if roles[r] == "" {
			t.Fatalf("nix-build printed no output for %s: %q", r, out)
		}
	}
	return roles
}

func pathInfoJSON(t *testing.T, n *testenv.Nix, derivation bool, paths []string) map[string]nixPathInfo {
	t.Helper()
	args := []string{"path-info", "--json"}
	if derivation {
		args = append(args, "--derivation")
	}
	out := n.Run(t, "nix", append(args, paths...)...)
	var infos []nixPathInfo
	list := strings.HasPrefix(strings.TrimSpace(out), "[")
	if list {
		if err := json.Unmarshal([]byte(out), &infos); err != nil {
			t.Fatalf("nix path-info --json: %v\n%s", err, out)
		}
	} else {
		var byPath map[string]*nixPathInfo
		if err := json.Unmarshal([]byte(out), &byPath); err != nil {
			t.Fatalf("nix path-info --json: %v\n%s", err, out)
		}
		for p, i := range byPath {
			if i == nil { // an invalid path is null
				t.Fatalf("nix path-info: %s is not valid", p)
			}
			i.Path = p
			infos = append(infos, *i)
		}
	}
	// The shape changed in Nix 2.19 (a list of objects with "path", then an
	// object keyed by path): say which this version printed.
	shape := map[bool]string{true: "a list of objects with a path field", false: "an object keyed by store path"}
	if !derivation {
		t.Logf("Nix %s: nix path-info --json printed %s", n.Version, shape[list])
	}
	if wantList := n.Before("2.19"); list != wantList {
		t.Errorf("Nix %s: nix path-info --json printed a list: %v, want %v", n.Version, list, wantList)
	}
	m := map[string]nixPathInfo{}
	for _, i := range infos {
		if i.Valid != nil && !*i.Valid {
			t.Fatalf("nix path-info: %s is not valid", i.Path)
		}
		m[i.Path] = i
	}
	for _, p := range paths {
		if _, ok := m[p]; !ok {
			t.Fatalf("nix path-info --json printed nothing for %s", p)
		}
	}
	return m
}

func lines(s string) []string {
	l := strings.Fields(s)
	slices.Sort(l)
	return slices.Compact(l)
}

// TestAgainstNix compares QueryPathInfo with nix path-info --json and
// Closure with nix-store -qR on paths real Nix built and signed.
//
// Once per Nix version: for the chroot's Nix 2.26, its database is opened
// from the host at <root>/nix/var/nix/db/db.sqlite with store directory
// /nix/store, as a chroot store is (see the package comment), which checks
// the reader against that version's schema.
func TestAgainstNix(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		testAgainstNix(t, n)
	})
}

func testAgainstNix(t *testing.T, n *testenv.Nix) {
	dbPath := filepath.Join(n.Root, DefaultDBPath)
	if _, err := os.Stat(dbPath); err != nil {
		testenv.Unavailable(t, "the Nix database: "+err.Error())
	}
	roles := buildTestPaths(t, n)

	// Two signatures on a, so the sigs column holds a space-separated list.
	sk2, pk2 := filepath.Join(n.Dir, "k2.secret"), filepath.Join(n.Dir, "k2.public")
	n.Run(t, "nix-store", "--generate-binary-cache-key", "nix-ipfs-test-2", sk2, pk2)
	n.Run(t, "nix", "store", "sign", "--key-file", n.SecretKey, roles["a"])
	n.Run(t, "nix", "store", "sign", "--key-file", sk2, roles["a"])

	var outputs []string
	for _, p := range roles {
		outputs = append(outputs, p)
	}
	slices.Sort(outputs)
	// Every path involved: the outputs' closure, their derivations and the
	// derivations' closure (input derivations, the toFile source).
	all := lines(n.Run(t, "nix-store", append([]string{"-qR"}, outputs...)...))
	drvs := lines(n.Run(t, "nix-store", append([]string{"-qd"}, outputs...)...))
	all = lines(strings.Join(all, " ") + " " + n.Run(t, "nix-store", append([]string{"-qR"}, drvs...)...))
	var plain, drvPaths []string
	for _, p := range all {
		if strings.HasSuffix(p, ".drv") {
			drvPaths = append(drvPaths, p)
		} else {
			plain = append(plain, p)
		}
	}
	want := pathInfoJSON(t, n, false, plain)
	for p, i := range pathInfoJSON(t, n, true, drvPaths) {
		want[p] = i
	}

	d, err := OpenDB(dbPath, storepath.DefaultStoreDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.StoreDir() != "/nix/store" {
		t.Errorf("StoreDir() = %q", d.StoreDir())
	}
	ctx := context.Background()

	got := map[string]*PathInfo{}
	for _, p := range all {
		info, err := d.QueryPathInfo(ctx, p)
		if err != nil {
			t.Fatalf("QueryPathInfo(%s): %v", p, err)
		}
		got[p] = info
		comparePathInfo(t, info, want[p])
	}

	// The properties the expression was written to have.
	if r := got[roles["self"]].References; !slices.Contains(r, roles["self"]) {
		t.Errorf("self: references %v lack the self-reference", r)
	}
	if r := got[roles["a"]].References; !slices.Equal(r, []string{roles["b"]}) {
		t.Errorf("a: references %v, want [%s]", r, roles["b"])
	}
	if got[roles["multi"]].Deriver == "" || got[roles["multi"]].Deriver != got[roles["multidev"]].Deriver {
		t.Errorf("multi-output derivers: out %q, dev %q; want the same .drv", got[roles["multi"]].Deriver, got[roles["multidev"]].Deriver)
	}
	if s := got[roles["a"]].Sigs; len(s) != 2 {
		t.Errorf("a: sigs %v, want 2", s)
	}
	if ca := got[roles["fixed"]].CA; !strings.HasPrefix(ca, "fixed:sha256:") {
		t.Errorf("fixed: CA %q, want fixed:sha256:...", ca)
	}
	for _, p := range drvPaths {
		if !strings.HasPrefix(got[p].CA, "text:sha256:") || got[p].Deriver != "" {
			t.Errorf("%s: CA %q deriver %q; want text:sha256:..., none", p, got[p].CA, got[p].Deriver)
		}
	}

	// Closures of each path, the outputs together, and the derivations together.
	sets := [][]string{outputs, drvPaths, {roles["top"], roles["top"], roles["b"]}}
	for _, p := range all {
		sets = append(sets, []string{p})
	}
	for _, set := range sets {
		c, err := d.Closure(ctx, set)
		if err != nil {
			t.Fatalf("Closure(%v): %v", set, err)
		}
		w := lines(n.Run(t, "nix-store", append([]string{"-qR"}, set...)...))
		if !slices.Equal(c, w) {
			t.Errorf("Closure(%v)\n got %v\nwant %v", set, c, w)
		}
	}

	// Errors on the real database.
	absent := "/nix/store/" + strings.Repeat("0", 32) + "-nixstore-absent-" + testenv.Nonce()
	if _, err := d.QueryPathInfo(ctx, absent); !errs.Is(err, errs.Invalid) || !errors.Is(err, ErrNotValid) {
		t.Errorf("QueryPathInfo(absent) = %v; want Invalid, ErrNotValid", err)
	}
	if _, err := d.Closure(ctx, []string{roles["a"], absent}); !errs.Is(err, errs.Invalid) || !errors.Is(err, ErrNotValid) {
		t.Errorf("Closure(a, absent) = %v; want Invalid, ErrNotValid", err)
	}
	outside := "/tmp/" + filepath.Base(roles["a"])
	if _, err := d.QueryPathInfo(ctx, outside); !errs.Is(err, errs.Invalid) || errors.Is(err, ErrNotValid) {
		t.Errorf("QueryPathInfo(outside) = %v; want Invalid", err)
	}
}

func comparePathInfo(t *testing.T, got *PathInfo, want nixPathInfo) {
	t.Helper()
	p := want.Path
	if got.Path != p {
		t.Errorf("%s: Path %q", p, got.Path)
	}
	h, err := nixhash.ParseAny(want.NarHash, nil)
	if err != nil {
		t.Fatalf("%s: nix's narHash %q: %v", p, want.NarHash, err)
	}
	if w := h.Format(nixhash.NixBase32, true); got.NarHash != w {
		t.Errorf("%s: NarHash %q, want %q (%s)", p, got.NarHash, w, want.NarHash)
	}
	if got.NarSize != want.NarSize {
		t.Errorf("%s: NarSize %d, want %d", p, got.NarSize, want.NarSize)
	}
	wr := slices.Sorted(slices.Values(want.References))
	if !slices.Equal(got.References, wr) || !slices.IsSorted(got.References) {
		t.Errorf("%s: References %v, want %v", p, got.References, wr)
	}
	if got.Deriver != want.Deriver {
		t.Errorf("%s: Deriver %q, want %q", p, got.Deriver, want.Deriver)
	}
	if got.CA != want.CA {
		t.Errorf("%s: CA %q, want %q", p, got.CA, want.CA)
	}
	if !slices.Equal(got.Sigs, want.Signatures) {
		t.Errorf("%s: Sigs %q, want %q", p, got.Sigs, want.Signatures)
	}
	if !got.RegistrationTime.Equal(time.Unix(want.RegistrationTime, 0)) {
		t.Errorf("%s: RegistrationTime %v, want %d", p, got.RegistrationTime, want.RegistrationTime)
	}
	if got.Ultimate != want.Ultimate {
		t.Errorf("%s: Ultimate %v, want %v", p, got.Ultimate, want.Ultimate)
	}
}

// TestReadWhileNixBuilds reads the real database from several goroutines
// while nix-build registers new paths in it.
func TestReadWhileNixBuilds(t *testing.T) {
	n := needNix(t)
	roles := buildTestPaths(t, n)
	d, err := OpenDB(DefaultDBPath, storepath.DefaultStoreDir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := lines(n.Run(t, "nix-store", "-qR", roles["top"]))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	var reads sync.Map
	for g := range 4 {
		wg.Go(func() {
			count := 0
			defer func() { reads.Store(g, count) }()
			for ctx.Err() == nil {
				c, err := d.Closure(ctx, []string{roles["top"]})
				if err == nil && !slices.Equal(c, want) {
					err = fmt.Errorf("closure of top changed: %v", c)
				}
				if err == nil {
					_, err = d.QueryPathInfo(ctx, roles["multidev"])
				}
				if err != nil && ctx.Err() == nil {
					errc <- err
					return
				}
				count++
			}
		})
	}
	// A chain of derivations: Nix registers paths (writes the database)
	// many times while the readers run.
	var sb strings.Builder
	nonce := testenv.Nonce()
	fmt.Fprintf(&sb, "let mk = name: script: derivation { name = \"nixstore-w-${name}-%s\"; system = builtins.currentSystem; builder = \"/bin/sh\"; PATH = \"/usr/bin:/bin\"; args = [\"-c\" script]; };\n", nonce)
	fmt.Fprintf(&sb, "  d0 = mk \"0\" \"echo 0 > $out\";\n")
	for i := 1; i < 20; i++ {
		fmt.Fprintf(&sb, "  d%d = mk \"%d\" \"echo ${d%d} > $out\";\n", i, i, i-1)
	}
	sb.WriteString("in d19\n")
	file := filepath.Join(n.Dir, "writes.nix")
	if err := os.WriteFile(file, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(n.Run(t, "nix-build", file, "--out-link", filepath.Join(n.Dir, "writes")))
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	reads.Range(func(k, v any) bool {
		if v.(int) == 0 {
			t.Errorf("reader %v made no reads", k)
		}
		return true
	})

	// The new paths are visible at once.
	c, err := d.Closure(context.Background(), []string{out})
	if err != nil {
		t.Fatal(err)
	}
	if w := lines(n.Run(t, "nix-store", "-qR", out)); !slices.Equal(c, w) || len(c) != 20 {
		t.Errorf("Closure(%s) = %d paths, want %d (%v)", out, len(c), len(w), w)
	}
}
