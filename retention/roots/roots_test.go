package roots

import (
	"hash/maphash"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

func sp(c byte, name string) string {
	return "/nix/store/" + strings.Repeat(string(c), 32) + "-" + name
}

// TestAddMergesBuildsOfTheSameOutputs: outputs in any order and repeated
// are one root; a later build moves its time forward and takes its job,
// an earlier one changes nothing.
func TestAddMergesBuildsOfTheSameOutputs(t *testing.T) {
	s := New()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	s.Add(Root{Outputs: []string{sp('b', "b"), sp('a', "a")}, Job: "j1", LastBuilt: t0})
	s.Add(Root{Outputs: []string{sp('a', "a"), sp('b', "b"), sp('a', "a")}, Job: "j2", LastBuilt: t0.Add(time.Hour)})
	s.Add(Root{Outputs: []string{sp('a', "a"), sp('b', "b")}, Job: "j3", LastBuilt: t0.Add(-time.Hour)})
	s.Add(Root{Outputs: []string{sp('c', "c")}, Job: "j1", LastBuilt: t0})
	s.Add(Root{}) // no outputs: no root
	want := []Root{
		{Outputs: []string{sp('a', "a"), sp('b', "b")}, Job: "j2", LastBuilt: t0.Add(time.Hour)},
		{Outputs: []string{sp('c', "c")}, Job: "j1", LastBuilt: t0},
	}
	if got := s.All(); !reflect.DeepEqual(got, want) {
		t.Fatalf("roots %+v, want %+v", got, want)
	}
	var outs []string
	s.EachOutput(s.Newest()[0], func(o string, id int32) bool { outs = append(outs, o); return id == -1 })
	if !reflect.DeepEqual(outs, want[0].Outputs) || s.Job(s.Newest()[1]) != "j1" || !s.LastBuilt(s.Newest()[1]).Equal(t0) {
		t.Errorf("outputs %q", outs)
	}
}

// TestHashCollision: a root whose key's hash another key has is still
// found by its key.
func TestHashCollision(t *testing.T) {
	s := New()
	a, b := Root{Outputs: []string{sp('a', "a")}, Job: "a"}, Root{Outputs: []string{sp('b', "b")}, Job: "b"}
	s.Add(a)
	// b's hash taken by a, as if they collided.
	s.byHash[maphash.String(s.seed, s.encode(b.Outputs))] = 0
	s.Add(b)
	b.LastBuilt = time.Unix(10, 0)
	s.Add(b)
	if s.Len() != 2 || len(s.collided) != 1 {
		t.Fatalf("%d roots, %d collided", s.Len(), len(s.collided))
	}
	if id, ok := s.find(s.encode(b.Outputs)); !ok || s.Job(id) != "b" || !s.LastBuilt(id).Equal(b.LastBuilt) {
		t.Errorf("b not found: %v %v", id, ok)
	}
}

// TestFile: what is saved loads back the same; a version after the roots
// is honoured; another version, a broken file, are Invalid; a missing
// file adds nothing.
func TestFile(t *testing.T) {
	dir := t.TempDir()
	s := New()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for i := 0; i < 50; i++ {
		s.Add(Root{Outputs: []string{sp(byte('a'+i%26), "x"+strings.Repeat("y", i))}, Job: "j", LastBuilt: t0.Add(time.Duration(i) * time.Minute)})
	}
	p := filepath.Join(dir, "state", "roots.json")
	if err := s.SaveFile(p, func(r Root) bool { return !strings.HasSuffix(r.Outputs[0], "-x") }); err != nil {
		t.Fatal(err)
	}
	s2 := New()
	if err := s2.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if got, want := s2.All(), s.All()[:49]; !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %d roots, want %d", len(got), len(want))
	}
	for name, c := range map[string]struct {
		body string
		n    int
		err  bool
	}{
		"version last":          {`{"roots":[{"outputs":["/nix/store/a-x"],"job":"j","last_built":"2026-01-01T00:00:00Z"}],"other":{"x":[1]},"version":1}`, 1, false},
		"null roots":            {`{"version":1,"roots":null}`, 0, false},
		"version 2":             {`{"version":2,"roots":[]}`, 0, true},
		"version 2 after roots": {`{"roots":[{"outputs":["/nix/store/a-x"],"job":"j","last_built":"2026-01-01T00:00:00Z"}],"version":2}`, 0, true},
		"no version":            {`{"roots":[]}`, 0, true},
		"truncated":             {`{"version":1,"roots":[{"outputs":["/nix/store/a-x"]`, 0, true},
		"trailing":              {`{"version":1,"roots":[]} {}`, 0, true},
		"array":                 {`[]`, 0, true},
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(f, []byte(c.body), 0o644)
		s := New()
		err := s.LoadFile(f)
		if (err != nil) != c.err || (err != nil && !errs.Is(err, errs.Invalid)) {
			t.Errorf("%s: %v", name, err)
		}
		if err == nil && s.Len() != c.n {
			t.Errorf("%s: %d roots, want %d", name, s.Len(), c.n)
		}
	}
	if err := New().LoadFile(filepath.Join(dir, "none")); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

// paths numbers the store paths it was given.
type paths []string

func (p paths) PathID(sp string) (int32, bool) {
	for i, q := range p {
		if q == sp {
			return int32(i), true
		}
	}
	return 0, false
}

func (p paths) PathText(id int32) string { return p[id] }

func (p paths) ComparePaths(a, b int32) int { return strings.Compare(p[a], p[b]) }

// TestOverPaths: roots whose outputs the Paths know are kept as numbers,
// others as text, and both read back as the same roots, in the same
// order (ties by their outputs' text), as a set without Paths.
func TestOverPaths(t *testing.T) {
	known := paths{sp('c', "c"), sp('a', "a"), sp('b', "b")}
	over, plain := NewOver(known), New()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, r := range []Root{
		{Outputs: []string{sp('b', "b"), sp('a', "a")}, Job: "ab", LastBuilt: t0},
		{Outputs: []string{sp('c', "c")}, Job: "c", LastBuilt: t0},
		{Outputs: []string{sp('d', "d"), sp('a', "a")}, Job: "ad", LastBuilt: t0},
		{Outputs: []string{sp('a', "a")}, Job: "a", LastBuilt: t0.Add(time.Hour)},
		{Outputs: []string{sp('a', "a"), sp('b', "b")}, Job: "ab2", LastBuilt: t0.Add(time.Minute)},
	} {
		over.Add(r)
		plain.Add(r)
	}
	if got, want := over.All(), plain.All(); !reflect.DeepEqual(got, want) || len(got) != 4 {
		t.Fatalf("over paths %+v\nwithout %+v", got, want)
	}
	var ids, texts int
	for i := range over.Len() {
		over.EachOutput(ID(i), func(o string, id int32) bool {
			if id >= 0 {
				ids++
			} else {
				texts++
			}
			return true
		})
	}
	if ids != 4 || texts != 2 {
		t.Errorf("%d outputs as numbers, %d as text; want 4 and 2", ids, texts)
	}
}
