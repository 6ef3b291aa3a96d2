package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// hydraPayload is what Hydra's RunCommand plugin writes for a build
// (makeJsonPayload in RunCommand.pm), for the outputs given by name.
func hydraPayload(t *testing.T, build int64, status int, drv string, outputs map[string]string) string {
	t.Helper()
	type out struct {
		Name string `json:"name"`
		Path string `json:"path"`
	}
	var outs []out
	for name, p := range outputs {
		outs = append(outs, out{name, p})
	}
	now := time.Now().Unix()
	b, err := json.Marshal(map[string]any{
		"event": "buildFinished", "build": build, "finished": true, "timestamp": now - 60,
		"project": "nix-ipfs", "jobset": "main", "job": "multi.x86_64-linux",
		"drvPath": drv, "startTime": now - 5, "stopTime": now, "buildStatus": status,
		"nixName": "multi", "system": "x86_64-linux", "homepage": nil, "description": nil, "license": nil,
		"outputs": outs, "products": []any{}, "metrics": []any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "hydra.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestHydraRunCommandPublishes: on a Hydra master the post-build-hook does
// not run for remote builds; RunCommand does. A real nix-build without the
// hook, then the real `nix-ipfs-hook hydra` with the notification Hydra
// would write: one built event carrying the job and build id, the whole
// closure published by the real publisher, and stock Nix copies it from
// the cache. A failed build's notification publishes nothing.
func TestHydraRunCommandPublishes(t *testing.T) {
	a := newHostA(t)
	a.nix.Hook = "" // the master's hook never fires for a remote build
	a.startPublisher(t)
	_, js := a.nats.Connect(t)

	top := a.nix.Build(t, multiOutput(testenv.Nonce()))
	drv := strings.TrimSpace(a.nix.Run(t, "nix-store", "--query", "--deriver", top[0]))
	built := strings.Fields(a.nix.Run(t, "nix-store", "--query", "--outputs", drv))
	outputs := map[string]string{}
	for _, p := range built {
		name := "out"
		for _, o := range []string{"dev", "doc"} {
			if strings.HasSuffix(p, "-"+o) {
				name = o
			}
		}
		outputs[name] = p
	}
	if len(outputs) != 3 {
		t.Fatalf("outputs %v: want out, dev and doc", built)
	}
	if got := builtEvents(t, js); len(got) != 0 {
		t.Fatalf("%d built events before RunCommand ran (is the hook off?)", len(got))
	}

	run := func(file string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(a.bin, "nix-ipfs-hook"), "hydra")
		cmd.Env = append(append(os.Environ(), a.nix.Env...), "HYDRA_JSON="+file)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nix-ipfs-hook hydra exited non-zero: %v\n%s", err, out)
		}
		return string(out)
	}
	// A failed build first: skipped, with a line for Hydra's RunCommand log.
	if out := run(hydraPayload(t, 41, 1, drv, outputs)); !strings.Contains(out, "buildStatus 1 (failed): nothing to publish") {
		t.Errorf("failed build: %q", out)
	}
	if out := run(hydraPayload(t, 42, 0, drv, outputs)); !strings.Contains(out, "built event for 3 outputs published") {
		t.Errorf("successful build: %q", out)
	}

	got := builtEvents(t, js)
	if len(got) != 1 {
		t.Fatalf("%d built events, want 1 (the successful build only)", len(got))
	}
	ev := got[0]
	if ev.Job != "nix-ipfs:main:multi.x86_64-linux" || ev.HydraBuild != 42 || ev.DrvPath != drv ||
		strings.Join(ev.OutPaths, " ") != strings.Join(sorted(built), " ") {
		t.Errorf("event %+v", ev)
	}
	var closure []string
	for _, p := range built {
		closure = append(closure, closureOf(t, a.nix, p)...)
	}
	got2 := a.waitPublished(t, closure, 2*time.Minute)
	for p, ni := range got2 {
		if ni.IPFSHash == "" {
			t.Errorf("%s: no IPFSHash", p)
		}
	}
	for _, p := range built {
		checkStockNixCopy(t, a, p, "file://"+a.cache)
	}
}
