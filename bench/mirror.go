package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

const mirrorName = "bench"

// mirrorRun is one side's result in one round.
type mirrorRun struct {
	allPinned    time.Duration   // from the built event to the last pin
	allPublished time.Duration   // from the built event to the last published event
	latency      []time.Duration // per path: published event's time to pinned
	// latency is wait + pin, per path: wait from the published event's
	// time until the path's pin began (delivery, and a queue while every
	// pin slot is busy), pin the pin itself (the pinned event's duration).
	wait, pin []time.Duration
}

// benchMirror: many small paths published at once; how soon is every one
// pinned on a second node by `nix-ipfs mirror`, against the batch way.
func benchMirror(b *Bench, s *scope, sec *Section) {
	sec.Title = "3. Mirror latency"
	if !b.hasCommand("mirror") {
		sec.NotRun = "`nix-ipfs mirror` is not in this tree yet"
		return
	}
	paths := b.smallPaths(s, b.sz.mirrorPaths)
	n := len(paths)
	total := b.narSize(s, paths)

	sides := []struct {
		key, name string
		run       func(s *scope, paths []string) mirrorRun
	}{
		{"mirror", "nix-ipfs mirror (pins as each path is published)", b.runMirror},
		{"batch", "batch: wait for the whole batch, then ipfs pin add of each CID in turn", b.runBatchPin},
	}
	res := map[string][]mirrorRun{}
	for r := 0; r < b.rounds; r++ {
		for _, sd := range rotate(sides, r) {
			progress("mirror: round %d/%d: %s", r+1, b.rounds, sd.name)
			var got mirrorRun
			if err := runScope("mirror/"+sd.key, func(s *scope) { got = sd.run(s, paths) }); err != nil {
				s.Fatalf("%s, round %d: %v", sd.name, r+1, err)
			}
			res[sd.key] = append(res[sd.key], got)
			logf("%s: all pinned after %s (published after %s), p99 %s", sd.key, fmtDur(got.allPinned), fmtDur(got.allPublished), fmtDur(percentile(got.latency, 99)))
		}
	}
	all := func(key string) time.Duration {
		var xs []time.Duration
		for _, m := range res[key] {
			xs = append(xs, m.allPinned)
		}
		return medianDur(xs)
	}
	lat := func(key string) []time.Duration {
		var xs []time.Duration
		for _, m := range res[key] {
			xs = append(xs, m.latency...)
		}
		return xs
	}
	parts := func(key string) (wait, pin []time.Duration) {
		for _, m := range res[key] {
			wait, pin = append(wait, m.wait...), append(pin, m.pin...)
		}
		return wait, pin
	}
	ma, ba := all("mirror"), all("batch")
	ml, bl := lat("mirror"), lat("batch")
	sec.add(Row{What: fmt.Sprintf("Mirror: all %d paths pinned on B, vs the batch way", n), Ratio: float64(ba) / float64(ma),
		Ours: fmtDur(ma), Base: fmtDur(ba), Aim: ">= 3x sooner", Verdict: verdict(float64(ba)/float64(ma) >= 3)})
	sec.add(Row{What: "Mirror: per path, published to pinned", Ratio: float64(percentile(bl, 99)) / float64(percentile(ml, 99)),
		Ours: fmt.Sprintf("p50 %s, p99 %s", fmtDur(percentile(ml, 50)), fmtDur(percentile(ml, 99))),
		Base: fmt.Sprintf("p50 %s, p99 %s", fmtDur(percentile(bl, 50)), fmtDur(percentile(bl, 99))),
		Aim:  "p99 < 2 s", Verdict: verdict(percentile(ml, 99) < 2*time.Second)})

	sec.detailf("%d small paths (4-64 KiB each, %s of NAR in all) built once, published at once: one `built` event listing them all, sent to the real publisher on host A (fresh NATS, kubo A, empty cache each round). "+
		"Host B is a second kubo daemon (fresh each round, online, loopback). "+
		"The mirror side runs `nix-ipfs mirror --name %s` (defaults: --concurrency %d, no --verify) against B from before the event; a path's latency is its `pinned` event's time minus its `published` event's time, the sum of its wait (until its pin began: the event's delivery, and the queue while all the mirror's pin slots are busy) and its pin (the `pinned` event's `duration_ms`: `pin ls`, then `pin add` through bitswap from A), and \"all pinned\" runs from sending the `built` event to the last `pinned` event's time. "+
		"The batch side waits until every narinfo is on disk, then runs `ipfs swarm connect` to A and `ipfs pin add` (CLI) of each CID in turn on B; a path's latency is from its `published` event to its pin add returning (its wait lasts until its own pin add starts). Ratios are batch ÷ mirror.\n\n",
		n, fmtBytes(total), mirrorName, mirror.DefaultConcurrency)
	sec.detailf("| Side | all pinned (median) | per round | all published, per round | per-path p50 | p99 | max | wait p50, p99 | pin p50, p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sd := range sides {
		var alls, pubs []time.Duration
		for _, m := range res[sd.key] {
			alls = append(alls, m.allPinned)
			pubs = append(pubs, m.allPublished)
		}
		l := lat(sd.key)
		w, p := parts(sd.key)
		sec.detailf("| %s | %s | %s | %s | %s | %s | %s | %s, %s | %s, %s |\n", sd.name, fmtDur(medianDur(alls)), fmtDurs(alls), fmtDurs(pubs),
			fmtDur(percentile(l, 50)), fmtDur(percentile(l, 99)), fmtDur(maxDur(l)),
			fmtDur(percentile(w, 50)), fmtDur(percentile(w, 99)), fmtDur(percentile(p, 50)), fmtDur(percentile(p, 99)))
	}
}

// setupMirrorRound starts host A with its publisher, and host B's kubo.
func (b *Bench) setupMirrorRound(s *scope) (*hostA, *testenv.Kubo) {
	a := b.newHostA(s)
	kb := testenv.StartKubo(s)
	b.startPublisher(s, a)
	return a, kb
}

func (b *Bench) runMirror(s *scope, paths []string) mirrorRun { return b.runMirrorOf(s, paths, false) }

// runMirrorOf is runMirror; with each, one built event per path.
func (b *Bench) runMirrorOf(s *scope, paths []string, each bool) mirrorRun {
	return b.runMirrorTo(s, paths, paths, each)
}

// runMirrorTo is runMirrorOf for built events naming outs, whose
// closure is paths: every one of paths must be pinned.
func (b *Bench) runMirrorTo(s *scope, outs, paths []string, each bool) mirrorRun {
	a, kb := b.setupMirrorRound(s)
	m := testenv.StartProc(s, filepath.Join(b.bins, "nix-ipfs"), []string{"mirror", "--name", mirrorName},
		"NIX_IPFS_NATS_URL="+a.nats.URL, "NIX_IPFS_KUBO_API="+kb.API, "NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
	b.waitConsumer(s, a.js, func(c *jetstream.ConsumerInfo) bool { return c.Name == "mirror-"+mirrorName }, "the mirror's consumer", m)

	start := time.Now()
	b.publishBuiltAll(s, a.js, outs, each)
	subject := events.SubjectPinned(mirrorName)
	s.waitFor(b.ctx, 10*time.Minute, 20*time.Millisecond, fmt.Sprintf("%d pinned events", len(paths)), func() bool {
		if m.Wait(0) {
			s.Fatalf("the mirror exited:\n%s", m.Tail(30))
		}
		return streamCount(b.ctx, s, a.js, subject) >= uint64(len(paths))
	})
	pubs := publishedTimes(b.ctx, s, a.js)
	var run mirrorRun
	for _, e := range readEvents(b.ctx, s, a.js, subject) {
		p := e.(*events.Pinned)
		pt, ok := pubs[p.StorePath]
		if !ok {
			s.Fatalf("pinned %s, which was never published", p.StorePath)
		}
		took := time.Duration(p.DurationMS) * time.Millisecond
		run.latency = append(run.latency, p.Time.Sub(pt))
		run.wait = append(run.wait, p.Time.Add(-took).Sub(pt))
		run.pin = append(run.pin, took)
		run.allPinned = max(run.allPinned, p.Time.Sub(start))
	}
	for _, t := range pubs {
		run.allPublished = max(run.allPublished, t.Sub(start))
	}
	return run
}

func (b *Bench) runBatchPin(s *scope, paths []string) mirrorRun {
	return b.runBatchPinOf(s, paths, false)
}

// runBatchPinOf is runBatchPin; with each, one built event per path.
func (b *Bench) runBatchPinOf(s *scope, paths []string, each bool) mirrorRun {
	a, kb := b.setupMirrorRound(s)
	start := time.Now()
	b.publishBuiltAll(s, a.js, paths, each)
	cids := b.waitNarinfos(s, a.cache, paths, 10*time.Minute, 5*time.Millisecond, a.pub)
	self, err := a.kubo.Client.Self(b.ctx)
	s.check(err, "kubo A identity")
	env := ipfsEnv(kb)
	var addrs []string
	for _, ad := range self.Addrs {
		addrs = append(addrs, ad+"/p2p/"+self.PeerID)
	}
	s.run(b.ctx, env, "ipfs", append([]string{"swarm", "connect"}, addrs...)...)
	began, done := map[string]time.Time{}, map[string]time.Time{}
	for _, p := range paths {
		began[p] = time.Now()
		s.run(b.ctx, env, "ipfs", "pin", "add", "--progress=false", cids[p])
		done[p] = time.Now()
	}
	var run mirrorRun
	run.allPinned = time.Since(start)
	pubs := publishedTimes(b.ctx, s, a.js)
	for _, p := range paths {
		run.latency = append(run.latency, done[p].Sub(pubs[p]))
		run.wait = append(run.wait, began[p].Sub(pubs[p]))
		run.pin = append(run.pin, done[p].Sub(began[p]))
		run.allPublished = max(run.allPublished, pubs[p].Sub(start))
	}
	return run
}

// publishBuiltAll sends paths in one built event, or one per path.
func (b *Bench) publishBuiltAll(s *scope, js jetstream.JetStream, paths []string, each bool) {
	if each {
		b.publishBuiltEach(s, js, paths)
		return
	}
	b.publishBuilt(s, js, paths)
}

// publishedTimes returns each published path's event time.
func publishedTimes(ctx context.Context, s *scope, js jetstream.JetStream) map[string]time.Time {
	out := map[string]time.Time{}
	for _, e := range readEvents(ctx, s, js, events.SubjectPublished) {
		p := e.(*events.Published)
		out[p.StorePath] = p.Time
	}
	return out
}

// readEvents returns every event on the stream under subject.
func readEvents(ctx context.Context, s *scope, js jetstream.JetStream, subject string) []events.Event {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var out []events.Event
	err := events.Scan(ctx, js, events.DefaultStream, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}},
		func(m jetstream.Msg) error {
			ev, err := events.Decode(m.Data())
			if err != nil {
				s.Fatalf("invalid event on %s: %v (%s)", subject, err, strings.TrimSpace(string(m.Data())))
			}
			out = append(out, ev)
			return nil
		})
	s.check(err, "read "+subject)
	return out
}
