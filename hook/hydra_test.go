package hook

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func hydraEnv(file string) func(string) string {
	return envOf(map[string]string{EnvHydraJSON: filepath.Join("..", "hydra", "testdata", file)})
}

// TestRunHydraFixtures: the RunCommand fixtures (written from Hydra's
// RunCommand.pm) through RunHydra against a real NATS: a successful, a
// cached and a multi-output build each put one built event with the job and
// build id on the stream; a failed build and garbage put nothing.
func TestRunHydraFixtures(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	h, stderr := newHook(t, n.URL)
	for _, tc := range []struct {
		file, job string
		build     int64
		outs      []string
		skip      string
		errText   string
	}{
		{file: "successful.json", job: "nixpkgs:trunk:hello.x86_64-linux", build: 4711,
			outs: []string{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"}},
		{file: "failed.json", skip: "Hydra build 4712 (nixpkgs:trunk:broken.x86_64-linux): buildStatus 1 (failed): nothing to publish"},
		{file: "cached.json", job: "nixpkgs:staging:hello.x86_64-linux", build: 4713,
			outs: []string{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"}},
		{file: "multi-output.json", job: "tests:basic:metrics", build: 4714,
			outs: []string{"/nix/store/a1s2d3f4g5h6j7k8l9z0x1c2v3b4n5m6-my-build-product", "/nix/store/q2n8h3m1x5v7c9b0z4l6k8j0h2g4f6d8-my-build-product-bin"}},
		{file: "garbage.txt", errText: "not a JSON object"},
		{file: "truncated.json", errText: "not a Hydra notification"},
	} {
		res, err := h.RunHydra(context.Background(), hydraEnv(tc.file))
		switch {
		case tc.errText != "":
			if err == nil || !strings.Contains(err.Error(), tc.errText) || res.Event != nil {
				t.Errorf("%s: %+v, %v; want an error with %q", tc.file, res, err, tc.errText)
			}
		case tc.skip != "":
			if err != nil || res.Skipped != tc.skip || res.Event != nil {
				t.Errorf("%s: %+v, %v; want skipped %q", tc.file, res, err, tc.skip)
			}
		default:
			if err != nil || !res.Published {
				t.Fatalf("%s: %+v, %v\n%s", tc.file, res, err, stderr)
			}
			ev := res.Event
			if ev.Job != tc.job || ev.HydraBuild != tc.build || strings.Join(ev.OutPaths, " ") != strings.Join(tc.outs, " ") {
				t.Errorf("%s: event job %q build %d outs %v", tc.file, ev.Job, ev.HydraBuild, ev.OutPaths)
			}
			if ev.Host != "builder-1" || !strings.HasSuffix(ev.DrvPath, ".drv") {
				t.Errorf("%s: host %q drv %q", tc.file, ev.Host, ev.DrvPath)
			}
		}
	}
	got := readBuilt(t, js)
	if len(got) != 3 {
		t.Fatalf("%d built events on the stream, want 3 (successful, cached, multi-output)", len(got))
	}
	if got[0].HydraBuild != 4711 || !got[0].Time.Equal(time.Unix(1764540042, 0)) {
		t.Errorf("first event: build %d time %v, want 4711 at its stopTime", got[0].HydraBuild, got[0].Time)
	}
	// Delivery is at least once: the same notification again is the same
	// event id, which the stream deduplicates.
	if res, err := h.RunHydra(context.Background(), hydraEnv("successful.json")); err != nil || !res.Published {
		t.Fatalf("again: %+v %v", res, err)
	}
	if again := readBuilt(t, js); len(again) != 3 {
		t.Errorf("%d events after a redelivered notification, want still 3", len(again))
	}
}

// TestRunHydraSpoolsWhenNATSDown: the same spool and the same flush as the
// hook.
func TestRunHydraSpoolsWhenNATSDown(t *testing.T) {
	h, _ := newHook(t, "nats://127.0.0.1:1")
	res, err := h.RunHydra(context.Background(), hydraEnv("multi-output.json"))
	if err == nil || res.Spooled == "" {
		t.Fatalf("NATS down: %+v %v", res, err)
	}
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	h.Config.NATS.URL = n.URL
	if flushed, err := h.Flush(context.Background()); err != nil || flushed != 1 {
		t.Fatalf("flush = %d, %v", flushed, err)
	}
	got := readBuilt(t, js)
	if len(got) != 1 || got[0].Job != "tests:basic:metrics" || got[0].HydraBuild != 4714 || len(got[0].OutPaths) != 2 {
		t.Fatalf("after flush: %+v", got)
	}
}

// TestMainHydraExitsZero: the hydra subcommand exits 0 whatever the
// notification says, and says what it did on stderr (Hydra's RunCommand log).
func TestMainHydraExitsZero(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"event":"buildFinished"`), 0o600)
	for _, tc := range []struct{ file, want string }{
		{"", "HYDRA_JSON is not set"},
		{"/nonexistent/hydra.json", "no such file"},
		{bad, "not a Hydra notification"},
		{filepath.Join("..", "hydra", "testdata", "failed.json"), "buildStatus 1 (failed)"},
		{filepath.Join("..", "hydra", "testdata", "successful.json"), "spooled"},
	} {
		var out, errb bytes.Buffer
		env := envOf(map[string]string{
			"NIX_IPFS_NATS_URL":  "nats://127.0.0.1:1",
			"NIX_IPFS_SPOOL_DIR": t.TempDir(),
			"NIX_IPFS_CONFIG":    "/nonexistent/hook.conf",
			EnvHydraJSON:         tc.file,
		})
		if code := Main(context.Background(), []string{"hydra"}, env, &out, &errb); code != 0 {
			t.Errorf("%s: exit %d", tc.file, code)
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s: stderr lacks %q:\n%s", tc.file, tc.want, errb.String())
		}
	}
}
