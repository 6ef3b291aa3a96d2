package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

const (
	hookTimeout = 500 * time.Millisecond // the hook's default --timeout, set explicitly
	hookAimUp   = 15 * time.Millisecond
)

// benchHook times nix-ipfs-hook as Nix runs it: the real binary, exec'd
// with OUT_PATHS set, each run a distinct store path.
func benchHook(b *Bench, s *scope, sec *Section) {
	sec.Title = "1. Hook latency"
	ctx := b.ctx
	hookBin := filepath.Join(b.bins, "nix-ipfs-hook")

	nats := testenv.StartNATS(s)
	_, js := nats.Connect(s)
	_, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	s.check(err, "create the stream")

	dir := s.TempDir()
	conf := filepath.Join(dir, "hook.conf")
	s.check(os.WriteFile(conf, []byte("# settings come from the environment\n"), 0o644), "write hook.conf")

	// A port nothing listens on: connections are refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "listen")
	closedURL := "nats://" + l.Addr().String()
	l.Close()
	// A server that accepts and never says a word: the hook must give up
	// at its timeout.
	hung := hangingServer(s)

	hookEnv := func(url, spool string) []string {
		return []string{
			"NIX_IPFS_CONFIG=" + conf,
			"NIX_IPFS_NATS_URL=" + url,
			"NIX_IPFS_SPOOL_DIR=" + filepath.Join(dir, spool),
			"NIX_IPFS_TIMEOUT=" + hookTimeout.String(),
			"DRV_PATH=",
		}
	}
	base := os.Environ()
	hookCmdOf := func(bin string, env []string, i int) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(append(append([]string{}, base...), env...), "OUT_PATHS="+fakeStorePath(b.nonce, i))
		return cmd
	}
	hookCmd := func(env []string, i int) *exec.Cmd { return hookCmdOf(hookBin, env, i) }

	// The Nix manual's post-build-hook recipe, uploading to a file://
	// cache instead of S3: a synchronous nix copy of the built paths.
	small := b.smallPaths(s, 1)[0]
	recipe := filepath.Join(dir, "upload-to-cache.sh")
	s.check(os.WriteFile(recipe, []byte(`#!/bin/sh
set -eu
set -f # disable globbing
export IFS=' '
echo "Uploading paths" $OUT_PATHS
exec nix copy --option substituters '' --option experimental-features nix-command --to "file://$CACHE" $OUT_PATHS
`), 0o755), "write recipe")
	caches := filepath.Join(dir, "caches")

	type variant struct {
		name    string
		cmd     func(i int) *exec.Cmd
		samples []time.Duration
		after   func(i int)
	}
	trueV := &variant{name: "/bin/true", cmd: func(int) *exec.Cmd { return exec.Command("/bin/true") }}
	upEnv, downEnv, hungEnv := hookEnv(nats.URL, "spool-up"), hookEnv(closedURL, "spool-down"), hookEnv(hung, "spool-hung")
	up := &variant{name: "hook, NATS up", cmd: func(i int) *exec.Cmd { return hookCmd(upEnv, i) }}
	down := &variant{name: "hook, NATS down (port closed)", cmd: func(i int) *exec.Cmd { return hookCmd(downEnv, 1_000_000+i) }}
	hungV := &variant{name: "hook, NATS hung (accepts, never answers)", cmd: func(i int) *exec.Cmd { return hookCmd(hungEnv, 2_000_000+i) }}
	nixV := &variant{name: "Nix manual recipe (nix copy to file://)", cmd: func(i int) *exec.Cmd {
		cmd := exec.Command(recipe)
		cmd.Env = append(append([]string{}, base...), "OUT_PATHS="+small, "DRV_PATH=", fmt.Sprintf("CACHE=%s/%d", caches, i))
		return cmd
	}, after: func(i int) { removeAll(fmt.Sprintf("%s/%d", caches, i)) }}

	runOnce := func(v *variant, i int, record bool) {
		cmd := v.cmd(i)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			s.Fatalf("%s: %v\n%s", v.name, err, out)
		}
		if v.after != nil {
			v.after(i)
		}
		if record {
			v.samples = append(v.samples, took)
		}
	}

	progress("hook: warming up")
	seq := 0
	for _, v := range []*variant{trueV, up, down, hungV, nixV} {
		runOnce(v, seq, false)
		seq++
	}
	main := []*variant{trueV, up, down}
	var abV *variant
	if *abBins != "" {
		// An A/B comparison of a change to the hook: the same runs with
		// the hook binary built elsewhere.
		abBin := filepath.Join(*abBins, "nix-ipfs-hook")
		abV = &variant{name: "hook, NATS up, build B (" + abBin + ")", cmd: func(i int) *exec.Cmd { return hookCmdOf(abBin, upEnv, 3_000_000+i) }}
		runOnce(abV, seq, false)
		seq++
		main = append(main, abV)
	}
	perRound := (b.sz.hookRuns + b.rounds - 1) / b.rounds
	hungEvery := max(1, perRound*b.rounds/b.sz.hookHung)
	nixEvery := max(1, perRound*b.rounds/b.sz.hookNix)
	i := 0
	for r := 0; r < b.rounds; r++ {
		progress("hook: round %d/%d (%d runs of each, alternating)", r+1, b.rounds, perRound)
		for k := 0; k < perRound; k++ {
			if ctx.Err() != nil {
				s.Fatalf("interrupted")
			}
			for _, v := range rotate(main, i) {
				runOnce(v, seq, true)
				seq++
			}
			if i%hungEvery == 0 && len(hungV.samples) < b.sz.hookHung {
				runOnce(hungV, seq, true)
				seq++
			}
			if i%nixEvery == 0 && len(nixV.samples) < b.sz.hookNix {
				runOnce(nixV, seq, true)
				seq++
			}
			i++
		}
	}

	// What the runs did: every event on the stream, every failure spooled.
	upMsgs := streamCount(ctx, s, js, events.SubjectBuilt)
	upSpool, _ := hook.Spool{Dir: filepath.Join(dir, "spool-up")}.List()
	downSpool, _ := hook.Spool{Dir: filepath.Join(dir, "spool-down")}.List()
	hungSpool, _ := hook.Spool{Dir: filepath.Join(dir, "spool-hung")}.List()

	p := func(v *variant, q float64) time.Duration { return percentile(v.samples, q) }
	tr50 := p(trueV, 50)
	pp := func(v *variant) string { return fmt.Sprintf("p50 %s, p99 %s", fmtDur(p(v, 50)), fmtDur(p(v, 99))) }
	sec.add(Row{What: "Hook, NATS up, vs /bin/true", Ratio: float64(tr50) / float64(p(up, 50)),
		Ours: pp(up), Base: pp(trueV), Aim: "p99 < 15 ms", Verdict: verdict(p(up, 99) < hookAimUp)})
	sec.add(Row{What: "Hook, NATS down (port closed), vs /bin/true", Ratio: float64(tr50) / float64(p(down, 50)),
		Ours: pp(down), Base: pp(trueV), Aim: "p99 < --timeout (500 ms)", Verdict: verdict(p(down, 99) < hookTimeout)})
	sec.add(Row{What: "Hook, NATS hung (never answers)", Ratio: nan,
		Ours: fmt.Sprintf("p50 %s, max %s", fmtDur(p(hungV, 50)), fmtDur(maxDur(hungV.samples))), Base: "",
		Aim: "max < --timeout + 100 ms", Verdict: verdict(maxDur(hungV.samples) < hookTimeout+100*time.Millisecond)})
	sec.add(Row{What: "Hook, NATS up, vs the Nix manual's recipe (nix copy)", Ratio: float64(p(nixV, 50)) / float64(p(up, 50)),
		Ours: pp(up), Base: pp(nixV)})

	sec.detailf("The real `nix-ipfs-hook` binary, exec'd as Nix runs it (no arguments, `OUT_PATHS` set, a distinct valid-looking store path each run, `NIX_IPFS_TIMEOUT=%s`), timed from fork to exit by the benchmark process. "+
		"Variants alternate run by run, in %d rounds; /bin/true is the cost of exec alone. NATS is the embedded server, its stream already created.\n\n", hookTimeout, b.rounds)
	sec.detailf("| Variant | Runs | p50 | p99 | max | p50 per round |\n|---|---|---|---|---|---|\n")
	all := []*variant{trueV, up, down, hungV, nixV}
	if abV != nil {
		all = append(all, abV)
	}
	for _, v := range all {
		sec.detailf("| %s | %d | %s | %s | %s | %s |\n", v.name, len(v.samples), fmtDur(p(v, 50)), fmtDur(p(v, 99)), fmtDur(maxDur(v.samples)), perRoundP50(v.samples, b.rounds))
	}
	abNote := ""
	if abV != nil {
		abNote = fmt.Sprintf(", %d of build B", len(abV.samples)+1)
	}
	sec.detailf("\nChecks: %d built events on the stream (%d runs + 1 warm-up with NATS up%s), %d left in the NATS-up spool; %d spooled with the port closed, %d with NATS hung (every run, warm-up included).\n\n",
		upMsgs, len(up.samples), abNote, len(upSpool), len(downSpool), len(hungSpool))
	sec.detailf("The recipe is the Nix manual's `upload-to-cache.sh` with `nix copy --to file://DIR` (default xz compression, as the manual has it) of %s (%s NAR), a fresh cache directory each run.\n",
		small, fmtBytes(b.narSize(s, []string{small})))
}

// perRoundP50 splits samples (taken in round order) into rounds and
// prints each round's median, to show how stable the figure is.
func perRoundP50(xs []time.Duration, rounds int) string {
	if len(xs) < rounds {
		return ""
	}
	var out []time.Duration
	n := len(xs) / rounds
	for r := 0; r < rounds; r++ {
		chunk := xs[r*n : (r+1)*n]
		if r == rounds-1 {
			chunk = xs[r*n:]
		}
		out = append(out, medianDur(chunk))
	}
	return fmtDurs(out)
}

// fakeStorePath returns a valid store path that does not exist; the hook
// only validates its form.
func fakeStorePath(nonce string, i int) string {
	const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"
	var seed [8]byte
	binary.BigEndian.PutUint64(seed[:], uint64(i))
	sum := sha256.Sum256(append([]byte(nonce), seed[:]...))
	h := make([]byte, 32)
	for j := range h {
		h[j] = nix32[sum[j]%32]
	}
	return fmt.Sprintf("/nix/store/%s-bench-hook-%d", h, i)
}

// hangingServer accepts TCP connections and never writes to them, like a
// NATS server that is wedged; it returns its nats:// URL.
func hangingServer(s *scope) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "listen")
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	s.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "nats://" + l.Addr().String()
}

// streamCount returns how many messages the stream holds on subject.
func streamCount(ctx context.Context, s *scope, js jetstream.JetStream, subject string) uint64 {
	st, err := js.Stream(ctx, events.DefaultStream)
	s.check(err, "stream")
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	s.check(err, "stream info")
	return info.State.Subjects[subject]
}
