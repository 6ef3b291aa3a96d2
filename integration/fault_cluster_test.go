package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/status"
)

// clusterHost is the whole pipeline on a three-node JetStream cluster of
// real nats-server processes: Nix with the real hook (through a wrapper
// that records each run's exit code and duration), a publisher on kubo A
// and a mirror on kubo B, every component given all three servers.
type clusterHost struct {
	c        *testenv.NATSCluster
	js       jetstream.JetStream
	nix      *testenv.Nix
	bin      string
	spool    string
	hookLog  string
	kuboA    *testenv.Kubo
	kuboB    *testenv.Kubo
	cache    string
	pub, mir *testenv.Proc
}

// hookTimeout is the hook's --timeout in these tests: the most a build may
// wait on NATS per hook run.
const hookTimeout = time.Second

func newClusterHost(t *testing.T) *clusterHost {
	t.Helper()
	h := &clusterHost{c: testenv.StartNATSCluster(t, 3), nix: testenv.NewNix(t), bin: testenv.Binaries(t)}
	_, h.js = h.c.Connect(t)
	dir := t.TempDir()
	h.spool = filepath.Join(dir, "spool")
	h.hookLog = filepath.Join(dir, "hook-runs.log")
	h.cache = filepath.Join(dir, "cache")
	conf := filepath.Join(dir, "hook.conf")
	os.WriteFile(conf, []byte("# settings come from the environment in tests\n"), 0o644)
	// Nix runs the wrapper; it runs the real hook and logs "<exit code>
	// <milliseconds>" per run, so the test sees what each build waited.
	wrapper := filepath.Join(dir, "hook-wrapper")
	os.WriteFile(wrapper, []byte(fmt.Sprintf(`#!/bin/sh
s=$(date +%%s%%N)
%s 2>>%s.err
rc=$?
e=$(date +%%s%%N)
echo "$rc $(( (e - s) / 1000000 ))" >> %s
exit $rc
`, filepath.Join(h.bin, "nix-ipfs-hook"), h.hookLog, h.hookLog)), 0o755)
	h.nix.Hook = wrapper
	h.nix.Env = []string{
		"NIX_IPFS_NATS_URL=" + h.c.URLs(),
		"NIX_IPFS_SPOOL_DIR=" + h.spool,
		"NIX_IPFS_CONFIG=" + conf,
		"NIX_IPFS_TIMEOUT=" + hookTimeout.String(),
	}
	h.kuboA = testenv.StartKubo(t)
	h.kuboB = testenv.StartKubo(t)

	// The publisher creates the stream R3 (an explicit --stream-replicas
	// updates it); everything else follows the stream.
	h.pub = testenv.StartProc(t, filepath.Join(h.bin, "nix-ipfs"),
		append([]string{"publisher", "--stream-replicas", "3"}, fastRecovery...), h.env(h.kuboA.API,
			"NIX_IPFS_CACHE_DIR="+h.cache, "NIX_IPFS_SECRET_KEY_FILE="+h.nix.SecretKey)...)
	testenv.Eventually(t, 2*time.Minute, "the publisher's consumer on the R3 stream", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := h.js.Consumer(ctx, events.DefaultStream, publisher.DefaultDurable)
		return err == nil
	})
	h.mir = testenv.StartProc(t, filepath.Join(h.bin, "nix-ipfs"),
		[]string{"mirror", "--name", "b", "--ack-wait", "5s", "--concurrency", "8"}, h.env(h.kuboB.API)...)
	testenv.Eventually(t, 2*time.Minute, "the mirror's consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := h.js.Consumer(ctx, events.DefaultStream, mirror.Durable("b"))
		return err == nil
	})
	return h
}

func (h *clusterHost) env(kuboAPI string, extra ...string) []string {
	return append([]string{
		"NIX_IPFS_NATS_URL=" + h.c.URLs(),
		"NIX_IPFS_KUBO_API=" + kuboAPI,
		"NIX_IPFS_LOG_FORMAT=console",
		"NIX_IPFS_LOG_LEVEL=debug",
	}, extra...)
}

// hookSpooled is how many hook runs so far spooled their event.
func (h *clusterHost) hookSpooled() int {
	b, _ := os.ReadFile(h.hookLog + ".err")
	return strings.Count(string(b), "event spooled to")
}

// hookRuns returns the exit code and duration of every hook run so far.
func (h *clusterHost) hookRuns(t *testing.T) (codes []int, took []time.Duration) {
	t.Helper()
	b, _ := os.ReadFile(h.hookLog)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		rc, _ := strconv.Atoi(f[0])
		ms, _ := strconv.Atoi(f[1])
		codes = append(codes, rc)
		took = append(took, time.Duration(ms)*time.Millisecond)
	}
	return codes, took
}

// build starts a nix-build of n derivations with two outputs each in the
// background; the channel yields every output path once it is done.
func (h *clusterHost) build(t *testing.T, name string, n int) <-chan []string {
	t.Helper()
	extra, script := multiOutputs(2, 8)
	expr := batchExpr(name+"-"+testenv.Nonce(), n, script, extra)
	done := make(chan []string, 1)
	go func() {
		outs, err := h.nix.TryBuild(expr)
		if err != nil {
			t.Errorf("nix-build %s: %v", name, err)
			done <- nil
			return
		}
		var all []string
		for _, p := range pathsOf(outs) {
			drv, err := h.nix.Try("nix-store", "--query", "--deriver", p)
			if err != nil {
				t.Errorf("deriver of %s: %v", p, err)
				continue
			}
			o, err := h.nix.Try("nix-store", "--query", "--outputs", strings.TrimSpace(drv))
			if err != nil {
				t.Errorf("outputs of %s: %v", drv, err)
				continue
			}
			all = append(all, strings.Fields(o)...)
		}
		done <- pathsOf(all)
	}()
	return done
}

// waitBuilt waits for a background build and checks that it built n
// derivations' outputs and that every hook run exited 0.
func (h *clusterHost) waitBuilt(t *testing.T, done <-chan []string, n int) []string {
	t.Helper()
	var paths []string
	select {
	case paths = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("nix-build did not finish in 5 minutes")
	}
	if len(paths) != 2*n {
		t.Fatalf("%d output paths, want %d", len(paths), 2*n)
	}
	codes, _ := h.hookRuns(t)
	for i, rc := range codes {
		if rc != 0 {
			t.Errorf("hook run %d exited %d", i, rc)
		}
	}
	return paths
}

// narinfoCount is how many of paths have a narinfo in the cache.
func (h *clusterHost) narinfoCount(paths []string) int { return countNarinfos(h.cache, paths) }

// waitProgress waits until at least k narinfos exist for a build that is
// still running, or fails if the build ended first.
func (h *clusterHost) waitProgress(t *testing.T, what string, k int) {
	t.Helper()
	testenv.Eventually(t, 3*time.Minute, what, func() bool {
		m, _ := filepath.Glob(filepath.Join(h.cache, "*.narinfo"))
		return len(m) >= k
	})
}

// settle flushes what the hooks spooled (the timer's job in a deployment),
// waits until every path is published and pinned on B, and checks the
// scenario's invariants: every output in exactly one built event, every
// path in exactly one published event, every CID pinned on B, no dead
// letters, an empty spool.
func (h *clusterHost) settle(t *testing.T, fault string, paths []string, extra ...any) {
	t.Helper()
	files, _ := (hook.Spool{Dir: h.spool}).List()
	spooled := len(files)
	cmd := exec.Command(filepath.Join(h.bin, "nix-ipfs-hook"), "flush")
	cmd.Env = append(os.Environ(), h.nix.Env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flush: %v\n%s", err, out)
	}
	if left, _ := (hook.Spool{Dir: h.spool}).List(); len(left) != 0 {
		t.Errorf("%d events still spooled after flush", len(left))
	}
	bad := checkCacheEventually(t, h.cache, paths, 4*time.Minute)
	for _, b := range bad {
		t.Error(b)
	}
	nis, _ := checkCache(h.cache, paths)
	var cids []string
	for _, p := range paths {
		if ni := nis[p]; ni != nil {
			cids = append(cids, ni.IPFSHash)
		}
	}
	testenv.Eventually(t, 4*time.Minute, fmt.Sprintf("%d CIDs pinned on B", len(cids)), func() bool {
		return len(mirMissing(mirPins(t, h.kuboB), cids)) == 0
	})
	waitDrained(t, h.js, publisher.DefaultDurable, 2*time.Minute)
	waitDrained(t, h.js, mirror.Durable("b"), 2*time.Minute)

	// Built events: each output in exactly one. nix-build's list prints
	// one output per derivation; each event names both outputs of its
	// derivation.
	builtLost, builtDup := checkBuiltOnce(t, builtEvents(t, h.js), paths)
	lost, dup := checkPublishedOnce(t, h.js, paths)
	// Every pin was announced before its event was acked (waitDrained
	// above), so the events are stored, and a read goes to the end the
	// stream leader knows even when its reader is placed on a member that
	// has just come back (events.Scan).
	pinnedEv := mirPinnedEvents(t, h.js, "b")
	unannounced := 0
	for _, c := range cids {
		if pinnedEv[c] == nil {
			unannounced++
		}
	}
	if unannounced > 0 {
		t.Errorf("%d pins on B not announced", unannounced)
	}
	dead := deadLetters(t, h.js)
	for _, d := range dead {
		t.Errorf("dead letter: %s %s: %s", d.Subject, d.Kind, d.Reason)
	}
	codes, took := h.hookRuns(t)
	nonZero := 0
	for _, rc := range codes {
		if rc != 0 {
			nonZero++
		}
	}
	kv := append([]any{"hook_runs_so_far", len(codes), "in", len(paths), "spooled_at_end", spooled,
		"out", len(paths) - lost - len(bad), "pinned", len(cids), "lost", lost + builtLost + len(bad),
		"dup", dup + builtDup, "dead", len(dead), "hook_nonzero", nonZero, "hook_spooled_total", h.hookSpooled(), "hook_max_ms", maxDur(took).Milliseconds()}, extra...)
	reliability(t, fault, kv...)
}

func maxDur(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

// statusReport runs `nix-ipfs status --json` against the cluster.
func (h *clusterHost) statusReport(t *testing.T) *status.Report {
	t.Helper()
	r, err := h.tryStatus()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryStatus is statusReport for a cluster that may be electing leaders,
// where one run of status can time out and the next succeed.
func (h *clusterHost) tryStatus() (*status.Report, error) {
	cmd := exec.Command(filepath.Join(h.bin, "nix-ipfs"), "status", "--json")
	cmd.Env = append(os.Environ(), "NIX_IPFS_NATS_URL="+h.c.URLs())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nix-ipfs status: %v\n%s%s", err, out, stderr.String())
	}
	var r status.Report
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("status --json: %v\n%s", err, out)
	}
	return &r, nil
}

// TestFaultNATSCluster runs the pipeline on three clustered nats-server processes
// with the stream, its consumers and the publisher's lease bucket at R3,
// and takes servers away in the middle of publishing and mirroring:
//
//   - LeaderKilled: the stream leader is SIGKILLed while 120 paths are
//     being built, hooked and published, and started again;
//   - FollowerStopped: a server that does not lead the stream is stopped
//     for 30 s during publishing and mirroring;
//   - AllDown: all three are down for 20 s while builds go on;
//   - LeafUplinkCut: a leaf node next to the builder, the hook pointed at
//     it, loses its uplink for 30 s.
//
// Each time: every hook run exits 0, every output reaches the stream in
// exactly one built event, every path is published exactly once and pinned
// on the mirror, nothing is dead-lettered. The scenarios share one cluster
// and run one after another.
func TestFaultNATSCluster(t *testing.T) {
	h := newClusterHost(t)
	ctx := context.Background()

	t.Run("ReplicasEverywhere", func(t *testing.T) {
		// A consumer just created may be missing from a cluster's listing
		// until its group has a leader.
		var r *status.Report
		// (status's own short-lived readers may be listed too: wait for
		// the two durable ones by name.)
		testenv.Eventually(t, time.Minute, "both consumers in status", func() bool {
			r = h.statusReport(t)
			seen := 0
			for _, c := range r.Consumers {
				if c.Name == publisher.DefaultDurable || c.Name == mirror.Durable("b") {
					seen++
				}
			}
			return seen == 2
		})
		if r.Replicas != 3 || r.Cluster == nil || r.Cluster.Leader == "" || len(r.Cluster.Peers) != 2 {
			t.Errorf("status: stream replicas %d, cluster %+v; want R3 with a leader and two peers", r.Replicas, r.Cluster)
		}
		roles := map[string]int{}
		for _, c := range r.Consumers {
			roles[c.Name] = c.Replicas
			if c.Cluster == nil || c.Cluster.Leader == "" {
				t.Errorf("consumer %s: no cluster leader in status: %+v", c.Name, c.Cluster)
			}
		}
		if roles[publisher.DefaultDurable] != 3 || roles[mirror.Durable("b")] != 3 {
			t.Errorf("consumer replicas %v, want 3 each", roles)
		}
		kv, err := h.js.KeyValue(ctx, publisher.LockBucket)
		if err != nil {
			t.Fatalf("lock bucket: %v", err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 3 {
			t.Errorf("lock bucket %s has %d replicas, want 3", publisher.LockBucket, r)
		}
	})

	t.Run("LeaderKilled", func(t *testing.T) {
		const n = 60 // derivations, two outputs each: 120 paths
		done := h.build(t, "leaderkill", n)
		h.waitProgress(t, "publishing under way", 10)
		leader := h.c.StreamLeader(t, h.js, events.DefaultStream, time.Minute)
		m, _ := filepath.Glob(filepath.Join(h.cache, "*.narinfo"))
		atKill := len(m)
		leader.Kill()
		t.Logf("stream leader %s SIGKILLed with %d narinfos written", leader.Name, atKill)
		newLeader := h.c.StreamLeader(t, h.js, events.DefaultStream, time.Minute)
		t.Logf("new stream leader %s", newLeader.Name)
		time.Sleep(5 * time.Second)
		leader.Start(t)
		paths := h.waitBuilt(t, done, n)
		if atKill >= len(paths) {
			t.Fatalf("everything was published before the kill")
		}
		h.settle(t, "stream-leader-sigkill", paths, "published_at_kill", atKill)

		// replay onto a fresh node C still works on the cluster.
		c := testenv.StartKubo(t)
		env := mirEnv(h.c.URLs(), c.API)
		out, _ := mirMustRun(t, h.bin, env, "replay", "--mirror", "c", "--all",
			"--state-file", filepath.Join(t.TempDir(), "replay-c.seq"), "--progress", "none")
		t.Logf("replay: %s", strings.TrimSpace(out))
		nis, _ := checkCache(h.cache, paths)
		var cids []string
		for _, p := range paths {
			cids = append(cids, nis[p].IPFSHash)
		}
		if m := mirMissing(mirPins(t, c), cids); len(m) > 0 {
			t.Errorf("%d of %d CIDs not pinned on C after replay", len(m), len(cids))
		}
	})

	t.Run("FollowerStopped", func(t *testing.T) {
		const n = 50
		before := len(mustGlob(h.cache, "*.narinfo"))
		done := h.build(t, "followerstop", n)
		h.waitProgress(t, "publishing under way", before+10)
		leader := h.c.StreamLeader(t, h.js, events.DefaultStream, time.Minute)
		var follower *testenv.NATSProc
		for _, p := range h.c.Nodes {
			if p != leader {
				follower = p
				break
			}
		}
		follower.Stop()
		stopped := time.Now()
		t.Logf("non-leader %s stopped (leader %s)", follower.Name, leader.Name)
		// status names the stopped server among the lagging peers.
		testenv.Eventually(t, 25*time.Second, "status to show "+follower.Name+" lagging", func() bool {
			r, err := h.tryStatus()
			if err != nil {
				t.Logf("%v after the stop: %v", time.Since(stopped).Round(time.Millisecond), err)
				return false
			}
			if r.Cluster == nil {
				t.Logf("status shows no cluster: %+v", r)
				return false
			}
			for _, p := range r.Cluster.Lagging() {
				if p.Name == follower.Name {
					return true
				}
			}
			return false
		})
		time.Sleep(30*time.Second - time.Since(stopped))
		follower.Start(t)
		paths := h.waitBuilt(t, done, n)
		h.settle(t, "stream-follower-stopped-30s", paths)
	})

	t.Run("AllDown", func(t *testing.T) {
		const n = 50
		before := len(mustGlob(h.cache, "*.narinfo"))
		runsBefore, _ := h.hookRuns(t)
		done := h.build(t, "alldown", n)
		h.waitProgress(t, "publishing under way", before+10)
		for _, p := range h.c.Nodes {
			p.Stop()
		}
		down := time.Now()
		// Builds go on; the hooks spool.
		testenv.Eventually(t, 20*time.Second, "a hook to spool", func() bool {
			files, _ := (hook.Spool{Dir: h.spool}).List()
			return len(files) > 0
		})
		spooled, _ := (hook.Spool{Dir: h.spool}).List()
		time.Sleep(20*time.Second - time.Since(down))
		for _, p := range h.c.Nodes {
			p.Start(t)
		}
		h.c.WaitReady(t, 2*time.Minute)
		paths := h.waitBuilt(t, done, n)
		runs, _ := h.hookRuns(t)
		h.settle(t, "cluster-down-20s", paths, "spooled_during_outage", len(spooled), "hook_runs", len(runs)-len(runsBefore))
	})

	t.Run("LeafUplinkCut", func(t *testing.T) {
		var proxies []*testenv.TCPProxy
		var remotes []string
		for _, p := range h.c.Nodes {
			px := testenv.StartTCPProxy(t, strings.TrimPrefix(p.LeafURL, "nats-leaf://"))
			proxies = append(proxies, px)
			remotes = append(remotes, "nats-leaf://"+px.Addr)
		}
		leaf := testenv.StartNATSLeaf(t, remotes)
		// The builder's hook talks only to its leaf.
		env := h.nix.Env
		defer func() { h.nix.Env = env }()
		h.nix.Env = append(append([]string(nil), env...), "NIX_IPFS_NATS_URL="+leaf.URL)
		runsBefore, _ := h.hookRuns(t)

		const n = 15
		// Through the leaf while the uplink is up.
		first := h.waitBuilt(t, h.build(t, "leaf-up", n), n)
		for _, px := range proxies {
			px.Cut()
		}
		cut := time.Now()
		during := h.waitBuilt(t, h.build(t, "leaf-cut", n), n)
		spooled, _ := (hook.Spool{Dir: h.spool}).List()
		time.Sleep(30*time.Second - time.Since(cut))
		for _, px := range proxies {
			px.Mend()
		}
		// Once the leaf is back, the next hook runs drain the spool.
		mended := time.Now()
		defer func() {
			if t.Failed() {
				for _, p := range h.c.Nodes {
					b, _ := os.ReadFile(p.Log)
					var keep []string
					for _, l := range strings.Split(string(b), "\n") {
						if strings.Contains(strings.ToLower(l), "leaf") {
							keep = append(keep, l)
						}
					}
					t.Logf("%s leaf lines (mended at %s):\n%s", p.Name, mended.Format("15:04:05.000"), strings.Join(keep, "\n"))
				}
			}
		}()
		// A request from the leaf's side answered on the cluster's side.
		// (JetStream's API is not served to clients of a leaf without
		// JetStream; only publishes and their acks cross, which is all the
		// hook needs.)
		echo, _ := h.c.Connect(t)
		sub, serr := echo.Subscribe("testenv.leafcheck", func(m *nats.Msg) { m.Respond([]byte("ok")) })
		if serr != nil {
			t.Fatal(serr)
		}
		defer sub.Unsubscribe()
		testenv.Eventually(t, 2*time.Minute, "the leaf's uplink back", func() bool {
			nc, err := nats.Connect(leaf.URL, nats.Timeout(2*time.Second))
			if err != nil {
				return false
			}
			defer nc.Close()
			_, err = nc.Request("testenv.leafcheck", nil, 2*time.Second)
			return err == nil
		})
		after := h.waitBuilt(t, h.build(t, "leaf-mended", n), n)
		left, _ := (hook.Spool{Dir: h.spool}).List()

		codes, took := h.hookRuns(t)
		codes, took = codes[len(runsBefore):], took[len(runsBefore):]
		sorted := append([]time.Duration(nil), took...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		// A hang check with slack for process start on a loaded machine:
		// a hook that waited for the uplink would take seconds more.
		limit := hookTimeout + 4*time.Second
		for i, d := range took {
			if d > limit {
				t.Errorf("hook run %d took %v with --timeout %v", i, d, hookTimeout)
			}
		}
		t.Logf("%d hook runs via the leaf: exit codes all 0: %v; p50 %v, max %v; %d spooled during the cut, %d left after the next builds",
			len(codes), !containsNonZero(codes), sorted[len(sorted)/2], sorted[len(sorted)-1], len(spooled), len(left))
		if len(spooled) == 0 {
			t.Errorf("no hook run spooled while the leaf's uplink was cut")
		}
		all := append(append(append([]string(nil), first...), during...), after...)
		h.settle(t, "leaf-uplink-cut-30s", all, "spooled_during_cut", len(spooled), "left_after_mend", len(left))
	})
}

func containsNonZero(codes []int) bool {
	for _, c := range codes {
		if c != 0 {
			return true
		}
	}
	return false
}

func mustGlob(dir, pattern string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	return m
}

// TestDeployNATSClusterExamples: the cluster member and leaf node examples
// in deploy/nats/ are configurations nats-server accepts (`-t`), with the
// variables their comments say to set.
func TestDeployNATSClusterExamples(t *testing.T) {
	bin := testenv.NeedProgram(t, "nats-server")
	env := append(os.Environ(), "NATS_SERVER_NAME=nats1",
		"NIXIPFS_HOOK_PASSWORD=h", "NIXIPFS_PUBLISHER_PASSWORD=p", "NIXIPFS_MIRROR_B_PASSWORD=m",
		"NIXIPFS_STATUS_PASSWORD=s", "NIXIPFS_ADMIN_PASSWORD=a")
	for _, f := range []string{"deploy/nats/cluster-node.conf", "deploy/nats/leaf.conf"} {
		cmd := exec.Command(bin, "-t", "-c", repoFile(t, f))
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "is valid") {
			t.Errorf("nats-server -t -c %s: %v\n%s", f, err, out)
		}
	}
}
