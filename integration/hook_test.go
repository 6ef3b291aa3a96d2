package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// builder is host A for a test: NATS, Nix with the real hook binary.
type builder struct {
	nats  *testenv.NATS
	nix   *testenv.Nix
	bin   string
	spool string
}

func newBuilder(t *testing.T) *builder {
	t.Helper()
	return newBuilderWith(t, testenv.NewNix(t))
}

// newBuilderWith is newBuilder with a given Nix (testenv.ForEachNix). Every
// path here is under the host's temp directory, the same inside a chroot.
func newBuilderWith(t *testing.T, n *testenv.Nix) *builder {
	t.Helper()
	b := &builder{nix: n, bin: testenv.Binaries(t), nats: testenv.StartNATS(t)}
	b.spool = filepath.Join(t.TempDir(), "spool")
	empty := filepath.Join(t.TempDir(), "hook.conf")
	os.WriteFile(empty, []byte("# settings come from the environment in tests\n"), 0o644)
	b.nix.Hook = filepath.Join(b.bin, "nix-ipfs-hook")
	b.nix.Env = []string{
		"NIX_IPFS_NATS_URL=" + b.nats.URL,
		"NIX_IPFS_SPOOL_DIR=" + b.spool,
		"NIX_IPFS_CONFIG=" + empty,
		"NIX_IPFS_TIMEOUT=500ms",
	}
	return b
}

// builtEvents returns every built event on the stream.
func builtEvents(t *testing.T, js jetstream.JetStream) []*events.Built {
	t.Helper()
	var out []*events.Built
	for _, e := range streamEvents(t, js, events.SubjectBuilt) {
		out = append(out, e.(*events.Built))
	}
	return out
}

func streamEvents(t *testing.T, js jetstream.JetStream, subject string) []events.Event {
	t.Helper()
	// A NATS cluster that just lost or regained a server may answer "no
	// responders" for a moment while its clients reconnect: retry a while.
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		var out []events.Event
		out, err = tryStreamEvents(js, subject)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Fatalf("read %s: %v", subject, err)
	return nil
}

func tryStreamEvents(js jetstream.JetStream, subject string) ([]events.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []events.Event
	// events.Scan, as the commands read: to the end the stream leader
	// knows, even when the reader is placed on a member catching up.
	err := events.Scan(ctx, js, events.DefaultStream, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, InactiveThreshold: 5 * time.Second}}, func(m jetstream.Msg) error {
		ev, err := events.Decode(m.Data())
		if err != nil {
			return fmt.Errorf("invalid event on the stream: %w", err)
		}
		out = append(out, ev)
		return nil
	})
	return out, err
}

func multiOutput(nonce string) string {
	return testenv.Drv("multi-"+nonce, `
mkdir -p $out/bin $dev/include $doc
echo '#!/bin/sh' > $out/bin/hello; chmod +x $out/bin/hello
echo 'int x;' > $dev/include/x.h
echo docs > $doc/README`, `outputs = [ "out" "dev" "doc" ];`)
}

// TestHookRealNixBuild: a real nix-build of a multi-output derivation with
// the real (static) hook binary as post-build-hook puts exactly one valid
// built event with every output on the stream, for each Nix version.
//
// What Nix hands the hook differs: Debian 12's Nix 2.8.0 passes OUT_PATHS
// empty (NixOS/nix#6446), so there the event proves the outputs are read
// from DRV_PATH; Nix 2.26 fills it. A probe build with a shell script as
// the hook records what each version passed, and the test asserts it.
func TestHookRealNixBuild(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		b := newBuilderWith(t, n)
		_, js := b.nats.Connect(t)

		probeOut := filepath.Join(n.Dir, "probe.env")
		probe := filepath.Join(n.Dir, "probe-hook.sh")
		os.WriteFile(probe, []byte("#!/bin/sh\nprintf 'DRV_PATH=%s\\nOUT_PATHS=%s\\n' \"$DRV_PATH\" \"$OUT_PATHS\" > "+probeOut+"\n"), 0o755)
		realHook := b.nix.Hook
		b.nix.Hook = probe
		probed := b.nix.Build(t, multiOutput(testenv.Nonce()))
		b.nix.Hook = realHook
		env, err := os.ReadFile(probeOut)
		if err != nil {
			t.Fatalf("Nix %s did not run the probe hook: %v", n.Version, err)
		}
		var outPaths string
		for _, l := range strings.Split(string(env), "\n") {
			if v, ok := strings.CutPrefix(l, "OUT_PATHS="); ok {
				outPaths = v
			}
		}
		t.Logf("Nix %s ran the hook with OUT_PATHS=%q", n.Version, outPaths)
		if n.OutPathsEmpty() {
			if outPaths != "" {
				t.Errorf("Nix %s passed OUT_PATHS=%q; NixOS/nix#6446 says it passes it empty", n.Version, outPaths)
			}
		} else {
			// nix-build prints the default output only; the hook gets all.
			pdrv := strings.TrimSpace(b.nix.Run(t, "nix-store", "--query", "--deriver", probed[0]))
			want := sorted(strings.Fields(b.nix.Run(t, "nix-store", "--query", "--outputs", pdrv)))
			if got := sorted(strings.Fields(outPaths)); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("Nix %s passed OUT_PATHS=%q, want the build's outputs %v", n.Version, outPaths, want)
			}
		}

		built := b.nix.Build(t, multiOutput(testenv.Nonce()))
		drv := strings.TrimSpace(b.nix.Run(t, "nix-store", "--query", "--deriver", built[0]))
		outs := strings.Fields(b.nix.Run(t, "nix-store", "--query", "--outputs", drv))
		if len(outs) != 3 {
			t.Fatalf("derivation %s has outputs %v, want 3", drv, outs)
		}
		got := builtEvents(t, js)
		if len(got) != 1 { // the probe build, without nix-ipfs-hook, made none
			t.Fatalf("%d built events, want exactly 1", len(got))
		}
		ev := got[0]
		if strings.Join(ev.OutPaths, " ") != strings.Join(sorted(outs), " ") {
			t.Errorf("event outputs %v, want %v", ev.OutPaths, outs)
		}
		if ev.DrvPath != drv {
			t.Errorf("drv_path = %q, want %q", ev.DrvPath, drv)
		}
		host, _ := os.Hostname()
		if ev.Host != host || ev.StoreDir != "/nix/store" {
			t.Errorf("host/store_dir = %q/%q", ev.Host, ev.StoreDir)
		}
		if files, _ := (hook.Spool{Dir: b.spool}).List(); len(files) != 0 {
			t.Errorf("spool not empty with NATS up: %v", files)
		}
	})
}

// TestHookUnderNixDaemon: as on a multi-user builder, Nix's daemon runs the
// build and the hook, with the daemon's environment and nix.conf settings
// (here its command line); the client that asks for the build has neither
// the hook nor any NIX_IPFS_* setting. One built event with every output
// must still arrive, for each Nix version. The daemon listens on a socket
// of the test's own (NIX_DAEMON_SOCKET_PATH), not the machine's. The test
// logs what each client says of its daemon (nix store ping).
func TestHookUnderNixDaemon(t *testing.T) {
	testenv.ForEachNix(t, func(t *testing.T, n *testenv.Nix) {
		b := newBuilderWith(t, n)
		_, js := b.nats.Connect(t)
		socket := filepath.Join(t.TempDir(), "daemon.socket")
		daemon := n.StartProc(t, "nix-daemon", []string{
			"--option", "post-build-hook", b.nix.Hook,
			"--option", "substituters", "",
		}, append([]string{"NIX_DAEMON_SOCKET_PATH=" + socket}, b.nix.Env...)...)
		testenv.Eventually(t, 30*time.Second, "the nix-daemon's socket", func() bool {
			_, err := os.Stat(socket)
			return err == nil
		})

		client := *b.nix
		client.Hook = ""
		client.Env = []string{"NIX_REMOTE=daemon", "NIX_DAEMON_SOCKET_PATH=" + socket}
		pingOut, err := client.Command("nix", "store", "ping").CombinedOutput() // it writes to stderr
		if err != nil {
			t.Fatalf("nix store ping: %v\n%s", err, pingOut)
		}
		ping := string(pingOut)
		t.Logf("Nix %s client, nix store ping:\n%s", n.Version, strings.TrimSpace(ping))
		if !strings.Contains(ping, "daemon") || !strings.Contains(ping, n.Version) {
			t.Errorf("nix store ping does not name the daemon and its version %s: %q", n.Version, ping)
		}

		built := client.Build(t, multiOutput(testenv.Nonce()))
		drv := strings.TrimSpace(client.Run(t, "nix-store", "--query", "--deriver", built[0]))
		outs := sorted(strings.Fields(client.Run(t, "nix-store", "--query", "--outputs", drv)))
		if len(outs) != 3 {
			t.Fatalf("derivation %s has outputs %v, want 3", drv, outs)
		}
		var got []*events.Built
		testenv.Eventually(t, 30*time.Second, "a built event", func() bool {
			got = builtEvents(t, js)
			return len(got) > 0
		})
		if len(got) != 1 {
			t.Fatalf("%d built events, want exactly 1", len(got))
		}
		if strings.Join(got[0].OutPaths, " ") != strings.Join(outs, " ") || got[0].DrvPath != drv {
			t.Errorf("event %v from %s, want %v from %s", got[0].OutPaths, got[0].DrvPath, outs, drv)
		}
		if !strings.Contains(daemon.Tail(200), "accepted connection") {
			t.Errorf("the daemon's log shows no connection:\n%s", daemon.Tail(20))
		}
	})
}

// TestHookNATSDownSpoolsThenFlushes: with NATS stopped every build still
// succeeds, each hook run returns, the events wait in the spool, and a flush
// after NATS returns publishes each exactly once.
func TestHookNATSDownSpoolsThenFlushes(t *testing.T) {
	b := newBuilder(t)
	b.nats.Stop()
	const builds = 5
	var want []string
	for i := 0; i < builds; i++ {
		outs, err := b.nix.TryBuild(testenv.Drv(fmt.Sprintf("down-%d-%s", i, testenv.Nonce()), "echo $RANDOM > $out", ""))
		if err != nil {
			t.Fatalf("build %d failed with NATS down: %v", i, err)
		}
		want = append(want, outs...)
	}
	files, err := hook.Spool{Dir: b.spool}.List()
	if err != nil || len(files) != builds {
		t.Fatalf("spool has %d files (%v), want %d", len(files), err, builds)
	}

	b.nats.Start(t)
	cmd := exec.Command(filepath.Join(b.bin, "nix-ipfs-hook"), "flush")
	cmd.Env = append(os.Environ(), b.nix.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("flushed %d", builds)) {
		t.Errorf("flush said %q", out)
	}
	// A second flush finds nothing; a replayed file would be deduplicated anyway.
	if out, err := cmd2(b, "flush"); err != nil || !strings.Contains(out, "flushed 0") {
		t.Errorf("second flush: %v %s", err, out)
	}

	_, js := b.nats.Connect(t)
	got := builtEvents(t, js)
	if len(got) != builds {
		t.Fatalf("%d events after flush, want %d", len(got), builds)
	}
	seen := map[string]int{}
	for _, ev := range got {
		for _, p := range ev.OutPaths {
			seen[p]++
		}
	}
	for _, p := range want {
		if seen[p] != 1 {
			t.Errorf("%s published %d times, want once", p, seen[p])
		}
	}
}

// TestHookRunTimedOnRealBinary runs the hook binary the way Nix does, with
// NATS down, and checks it exits 0 within its timeout (a hang check, with
// slack for a loaded machine; the latency figures are in docs/BENCHMARKS.md).
func TestHookRunTimedOnRealBinary(t *testing.T) {
	b := newBuilder(t)
	b.nats.Stop()
	cmd := exec.Command(filepath.Join(b.bin, "nix-ipfs-hook"))
	cmd.Env = append(os.Environ(), b.nix.Env...)
	cmd.Env = append(cmd.Env, "OUT_PATHS=/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12", "DRV_PATH=")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("hook exited non-zero: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "spooled") {
		t.Errorf("hook did not say it spooled: %s", out)
	}
	if took > 5*time.Second {
		t.Errorf("hook took %v with a 500ms timeout", took)
	}
}

func cmd2(b *builder, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(b.bin, "nix-ipfs-hook"), args...)
	cmd.Env = append(os.Environ(), b.nix.Env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}
