package mirrorfill

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "sub", "replay-b.seq")
	if _, ok, err := ReadState(f); ok || err != nil {
		t.Fatalf("missing file: ok=%v err=%v", ok, err)
	}
	for _, seq := range []uint64{7, 123456789} {
		if err := writeState(f, seq); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ReadState(f)
		if !ok || err != nil || got != seq {
			t.Fatalf("read back %d, %v, %v; want %d", got, ok, err, seq)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(f))
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only the state file", len(ents))
	}
	os.WriteFile(f, []byte("garbage\n"), 0o644)
	if _, _, err := ReadState(f); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("garbage state: %v", err)
	}
}

func TestDefaultStateFile(t *testing.T) {
	env := map[string]string{"XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}
	get := func(k string) string { return env[k] }
	if f, _ := defaultStateFile(get, "b"); f != "/x/state/nix-ipfs/replay-b.seq" {
		t.Errorf("with XDG_STATE_HOME: %s", f)
	}
	delete(env, "XDG_STATE_HOME")
	if f, _ := defaultStateFile(get, "b"); f != "/home/u/.local/state/nix-ipfs/replay-b.seq" {
		t.Errorf("without: %s", f)
	}
}

func TestWatermarkHoldsAtFailures(t *testing.T) {
	w := newWatermark(10)
	for _, s := range []uint64{11, 13, 14, 20} {
		w.add(s)
	}
	if m, moved := w.done(13); moved || m != 10 {
		t.Errorf("13 done before 11: mark %d moved %v", m, moved)
	}
	if m, _ := w.done(11); m != 13 {
		t.Errorf("after 11: mark %d, want 13", m)
	}
	// 14 fails (never done): 20 finishing does not move the mark past it.
	if m, _ := w.done(20); m != 13 {
		t.Errorf("after 20 with 14 failed: mark %d, want 13", m)
	}
}

func TestLineProgress(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newLineProgress(&buf, "replay b", 10*time.Second)
	p.now = func() time.Time { return now }
	p.Start(4)
	now = now.Add(time.Second)
	p.Step(OutPinned) // within the interval: no line
	now = now.Add(10 * time.Second)
	p.Step(OutAlready)
	now = now.Add(time.Second)
	p.Step(OutFailed)
	p.Step(OutPinned)
	p.Finish()
	want := "replay b: 4 to do\n" +
		"replay b: 2/4 (50%), 1 pinned, 1 already pinned, 0 failed; 0.2/s, ETA 11s\n" +
		"replay b: 4/4 (100%), 2 pinned, 1 already pinned, 1 failed; 0.3/s in 12s\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestBarProgress(t *testing.T) {
	var buf bytes.Buffer
	p, err := NewProgress(ProgressBar, &buf, "replay b", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Start(3)
	for i := 0; i < 3; i++ {
		p.Step(OutPinned)
	}
	p.Finish()
	out := buf.String()
	for _, want := range []string{"replay b", "3/3", "100%", "paths/s", "3 pinned"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%q", want, out)
		}
	}
	// Not a terminal: auto means lines.
	p, _ = NewProgress(ProgressAuto, &buf, "x", time.Hour)
	if _, ok := p.(*lineProgress); !ok {
		t.Errorf("auto on a buffer gave %T", p)
	}
	if _, err := NewProgress("fancy", &buf, "x", 0); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2025-01-31T10:00:00Z": time.Date(2025, 1, 31, 10, 0, 0, 0, time.UTC),
		"2025-01-31":           time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
		"36h":                  now.Add(-36 * time.Hour),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%s: %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("yesterday", now); err == nil {
		t.Error("yesterday accepted")
	}
}

func TestReadPaths(t *testing.T) {
	p1, p2 := mirrortest.StorePath("hello-2.12"), mirrortest.StorePath("glibc-2.40")
	in := fmt.Sprintf("# closure\n%s\n\n%s\n%s\n%s\n", p1, filepath.Base(p2), p1, filepath.Base(p2)[:32])
	got, err := readPaths(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Base(p1)[:32], filepath.Base(p2)[:32]}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := readPaths(strings.NewReader("/etc/passwd\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("non-store path: %v", err)
	}
}

func TestParsePeers(t *testing.T) {
	got, err := parsePeers("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA, /p2p/12D3KooWB")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PeerID != "12D3KooWA" || got[0].Addrs[0] != "/ip4/127.0.0.1/tcp/4001" || got[1].Addrs != nil {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/300.0.0.1/p2p/x", "/p2p/"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
