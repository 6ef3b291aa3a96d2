package hook

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

const store = "/nix/store"

var (
	outA = store + "/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12"
	outB = store + "/1b9p07z77phvv2hf6gm9f28syp39f1ag-hello-2.12-dev"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newHook(t *testing.T, natsURL string) (*Hook, *bytes.Buffer) {
	t.Helper()
	var cfg Config
	s := config.NewSet("nix-ipfs-hook", "", "")
	cfg.Register(s)
	if err := s.Parse(nil, envOf(map[string]string{
		"NIX_IPFS_NATS_URL":  natsURL,
		"NIX_IPFS_SPOOL_DIR": t.TempDir(),
		"NIX_IPFS_STORE_DIR": store,
		"NIX_IPFS_HOST":      "builder-1",
	})); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	return &Hook{Config: cfg, Stderr: &stderr}, &stderr
}

func readBuilt(t *testing.T, js jetstream.JetStream) []*events.Built {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectBuilt))
	if err != nil {
		t.Fatal(err)
	}
	var out []*events.Built
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		out = append(out, ev.(*events.Built))
	}
	return out
}

func TestBuildEventValidatesOutputs(t *testing.T) {
	h, stderr := newHook(t, "nats://127.0.0.1:1")
	ev, err := h.BuildEvent(envOf(map[string]string{
		"OUT_PATHS": outB + " /etc/passwd " + store + "/../etc/x " + outA + " " + store + "/short",
		"DRV_PATH":  "/tmp/evil.drv",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ev.OutPaths, " "); got != outA+" "+outB {
		t.Errorf("out paths = %q, want the two valid ones, sorted", got)
	}
	if ev.DrvPath != "" {
		t.Errorf("drv path %q outside the store was kept", ev.DrvPath)
	}
	for _, bad := range []string{"/etc/passwd", "/nix/store/../etc/x", "/nix/store/short", "/tmp/evil.drv"} {
		if !strings.Contains(stderr.String(), bad) {
			t.Errorf("stderr does not report %s:\n%s", bad, stderr)
		}
	}
	if _, err := h.BuildEvent(envOf(map[string]string{"OUT_PATHS": "garbage"})); err == nil {
		t.Error("an event with no valid output was built")
	}
	if _, err := h.BuildEvent(envOf(nil)); err == nil {
		t.Error("no OUT_PATHS and no DRV_PATH gave no error")
	}
}

// A derivation in Nix's ATerm form, as Nix 2.8 writes it, with two outputs.
const drvText = `Derive([("dev","/STORE/1b9p07z77phvv2hf6gm9f28syp39f1ag-hello-2.12-dev","",""),("out","/STORE/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo"],[("builder","/bin/sh"),("dev","/STORE/1b9p07z77phvv2hf6gm9f28syp39f1ag-hello-2.12-dev"),("name","hello-2.12"),("out","/STORE/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12"),("outputs","out dev"),("system","x86_64-linux")])`

func TestDrvOutputs(t *testing.T) {
	// Nix 2.8.0 passes OUT_PATHS empty (NixOS/nix#6446): the outputs come
	// from the derivation. The integration test does this with real Nix.
	drv := filepath.Join(t.TempDir(), "y7xkdi3jbhfl4zfavs6b1fr2mnbm4vj1-hello-2.12.drv")
	if err := os.WriteFile(drv, []byte(strings.ReplaceAll(drvText, "/STORE", store)), 0o644); err != nil {
		t.Fatal(err)
	}
	outs, err := DrvOutputs(drv)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(outs, " ") != outA+" "+outB {
		t.Errorf("outputs = %v", outs)
	}
	os.WriteFile(drv, []byte("Derive(garbage"), 0o644)
	if _, err := DrvOutputs(drv); err == nil {
		t.Error("a broken derivation gave no error")
	}
}

func TestRunPublishesOnce(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	h, stderr := newHook(t, n.URL)
	env := envOf(map[string]string{"OUT_PATHS": outA + " " + outB})
	for i := 0; i < 3; i++ { // the same build reported three times is one fact
		res, err := h.Run(context.Background(), env)
		if err != nil || !res.Published {
			t.Fatalf("run %d: %+v %v %s", i, res, err, stderr)
		}
	}
	got := readBuilt(t, js)
	if len(got) != 1 {
		t.Fatalf("%d built events, want 1", len(got))
	}
	if got[0].Host != "builder-1" || strings.Join(got[0].OutPaths, " ") != outA+" "+outB {
		t.Errorf("event = %+v", got[0])
	}
}

func TestRunSpoolsWhenNATSDownThenDrains(t *testing.T) {
	// A port nothing listens on: connection refused at once.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "nats://" + l.Addr().String()
	l.Close()
	h, stderr := newHook(t, dead)
	var paths []string
	for i := 0; i < 5; i++ {
		p := store + "/" + strings.Repeat(string("abcdfghijk"[i]), 32) + "-pkg"
		paths = append(paths, p)
		res, err := h.Run(context.Background(), envOf(map[string]string{"OUT_PATHS": p}))
		if err == nil || res.Published || res.Spooled == "" {
			t.Fatalf("run %d with NATS down: %+v %v", i, res, err)
		}
	}
	files, _ := Spool{Dir: h.Config.SpoolDir}.List()
	if len(files) != 5 {
		t.Fatalf("%d spool files, want 5; stderr:\n%s", len(files), stderr)
	}

	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	h.Config.NATS.URL = n.URL
	flushed, err := h.Flush(context.Background())
	if err != nil || flushed != 5 {
		t.Fatalf("flush = %d, %v", flushed, err)
	}
	// Flushing again publishes nothing more.
	if again, err := h.Flush(context.Background()); err != nil || again != 0 {
		t.Fatalf("second flush = %d, %v", again, err)
	}
	got := readBuilt(t, js)
	if len(got) != 5 {
		t.Fatalf("%d events after flush, want 5", len(got))
	}
	for i, ev := range got { // oldest first
		if ev.OutPaths[0] != paths[i] {
			t.Errorf("event %d is %s, want %s", i, ev.OutPaths[0], paths[i])
		}
	}
}

func TestRunDrainsSpoolAfterItsOwnEvent(t *testing.T) {
	h, _ := newHook(t, "nats://127.0.0.1:1")
	h.Run(context.Background(), envOf(map[string]string{"OUT_PATHS": outA}))
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	h.Config.NATS.URL = n.URL
	res, err := h.Run(context.Background(), envOf(map[string]string{"OUT_PATHS": outB}))
	if err != nil || !res.Published || res.Drained != 1 {
		t.Fatalf("run = %+v, %v", res, err)
	}
	if got := readBuilt(t, js); len(got) != 2 {
		t.Fatalf("%d events, want 2", len(got))
	}
}

func TestRunSpoolsWithinTimeoutWhenNATSHangs(t *testing.T) {
	// A server that accepts and never speaks: the worst case for a hook.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	h, _ := newHook(t, "nats://"+l.Addr().String())
	h.Config.Timeout = 300 * time.Millisecond
	start := time.Now()
	res, err := h.Run(context.Background(), envOf(map[string]string{"OUT_PATHS": outA}))
	took := time.Since(start)
	if err == nil || res.Spooled == "" {
		t.Fatalf("run = %+v, %v", res, err)
	}
	// Not a speed test: a hang would be minutes. The bound is the timeout
	// plus generous slack for fsync on a loaded machine.
	if took > h.Config.Timeout+5*time.Second {
		t.Errorf("hook took %v with a %v timeout", took, h.Config.Timeout)
	}
}

func TestFlushQuarantinesGarbage(t *testing.T) {
	n := testenv.StartNATS(t)
	h, stderr := newHook(t, n.URL)
	sp := Spool{Dir: h.Config.SpoolDir}
	if _, err := sp.Put("x", []byte(`{"type":"nixipfs.built.v1","id":"nope"}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if got, err := h.Flush(context.Background()); err != nil || got != 0 {
		t.Fatalf("flush = %d, %v", got, err)
	}
	if files, _ := sp.List(); len(files) != 0 {
		t.Errorf("garbage still in the spool: %v", files)
	}
	if _, err := os.Stat(filepath.Join(sp.Dir, "bad")); err != nil || !strings.Contains(stderr.String(), "not a valid event") {
		t.Errorf("garbage not quarantined and reported: %v %s", err, stderr)
	}
}

func TestMainAlwaysExitsZero(t *testing.T) {
	var out, errb bytes.Buffer
	env := envOf(map[string]string{
		"NIX_IPFS_NATS_URL":  "nats://127.0.0.1:1",
		"NIX_IPFS_SPOOL_DIR": "/proc/nonexistent/spool", // cannot spool either
		"NIX_IPFS_TIMEOUT":   "not-a-duration",
		"NIX_IPFS_CONFIG":    "/nonexistent/hook.conf",
		"OUT_PATHS":          outA,
	})
	if code := Main(context.Background(), nil, env, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"NIX_IPFS_TIMEOUT", "hook.conf", "lost"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}
