package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/publisher"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// smallPubArgs are the publisher settings for many small paths, the
// publisher's side of the small-path rate besides its defaults.
var smallPubArgs = []string{"--events=64", "--concurrency=32"}

var smallN = flag.Int("small-paths", 0, "small and avail sections: small paths to build and publish (default 2,000; 200 with -quick)")

var smallArgsF = flag.String("small-args", "", "small section: publisher flags of its tuned side, space-separated (default: "+strings.Join(smallPubArgs, " ")+"); with -sides pub,pub-tuned,pub-one,pub-one-tuned,floor,workflow,mirror,batch to run only some sides")

// keepSide reports whether -sides (when set) lists key.
func keepSide(key string) bool {
	if *sidesF == "" {
		return true
	}
	for _, k := range strings.Split(*sidesF, ",") {
		if strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}

// benchSmall: the rate a build farm needs, in paths per second, on the
// paths it mostly publishes: thousands of outputs of a few KB, each from
// its own build (one built event each, as the hook sends them), and the
// same paths as the closure of one event (a machine's first system build:
// one top path referring to all of them). The publisher against the
// original workflow; then how soon a mirror pins the same paths, against
// the batch way.
func benchSmall(b *Bench, s *scope, sec *Section) {
	sec.Title = "7. Small-path rate"
	if *smallArgsF != "" {
		smallPubArgs = strings.Fields(*smallArgsF)
	}
	if *smallN > 0 {
		b.sz.smallPaths = *smallN
	}
	paths := b.fewKBPaths(s, b.sz.smallPaths)
	n := len(paths)
	total := b.narSize(s, paths)
	t := &pubTarget{key: "small", outs: paths, paths: paths, bytes: total}
	top, closure := b.fewKBClosure(s, b.sz.smallPaths)
	one := &pubTarget{key: "one", outs: []string{top}, paths: closure, bytes: b.narSize(s, closure)}
	nOne := len(closure)

	sides := []*pubSide{
		{key: "pub", name: "publisher (defaults)", pub: true,
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure { return b.runPublisherEach(s, ts) }},
		{key: "pub-tuned", name: "publisher " + strings.Join(smallPubArgs, " "), pub: true,
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure {
				return b.runPublisherEach(s, ts, smallPubArgs...)
			}},
		{key: "pub-one", name: "publisher (defaults), the paths as one event's closure", pub: true,
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure {
				return b.runPublisher(s, []*pubTarget{one}, false)
			}},
		{key: "pub-one-tuned", name: "publisher " + strings.Join(smallPubArgs, " ") + ", the paths as one event's closure", pub: true,
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure {
				return b.runPublisher(s, []*pubTarget{one}, false, smallPubArgs...)
			}},
		{key: "floor", name: "kubo's floor: one `ipfs dag import` of a CAR of every NAR's DAG, made beforehand, every root pinned",
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure {
				return map[string]pubMeasure{"one": b.runDagImportFloor(s, one)}
			}},
		// Its nix copy of the top path copies the same paths (and the
		// top): the one baseline for both shapes, run once.
		{key: "workflow", name: "original workflow: nix copy, then ipfs add of each NAR, then IPFSHash appended",
			run: func(s *scope, ts []*pubTarget) map[string]pubMeasure { return b.runWorkflow(s, []*pubTarget{one}) }},
	}
	// The paths each side publishes.
	pathsOf := func(key string) int {
		if key == "pub-one" || key == "pub-one-tuned" || key == "workflow" || key == "floor" {
			return nOne
		}
		return n
	}
	var kept []*pubSide
	for _, sd := range sides {
		if keepSide(sd.key) {
			kept = append(kept, sd)
		}
	}
	sides = kept
	// One round at full size: the workflow alone takes minutes.
	rounds := 1
	res := map[string][]pubMeasure{}
	for r := 0; r < rounds; r++ {
		for _, sd := range rotate(sides, r) {
			progress("small: %s, %d paths", sd.name, n)
			var got map[string]pubMeasure
			err := runScope("small/"+sd.key, func(s *scope) { got = sd.run(s, []*pubTarget{t}) })
			s.check(err, sd.name)
			for _, m := range got {
				res[sd.key] = append(res[sd.key], m)
				logf("small %s: %s, %.0f paths/s", sd.key, fmtDur(m.took), float64(pathsOf(sd.key))/m.took.Seconds())
			}
		}
	}
	rate := func(key string) float64 {
		var xs []float64
		for _, m := range res[key] {
			xs = append(xs, float64(pathsOf(key))/m.took.Seconds())
		}
		return median(xs)
	}
	wf := rate("workflow")
	for _, key := range []string{"pub-one", "pub-one-tuned"} {
		if len(res[key]) == 0 {
			continue
		}
		r := rate(key)
		name := map[string]string{"pub-one": "defaults", "pub-one-tuned": strings.Join(smallPubArgs, " ")}[key]
		sec.add(Row{What: fmt.Sprintf("Small paths (%d of a few KB, one built event whose closure they are): publisher (%s) vs original workflow", nOne, name),
			Ratio: r / wf, Ours: fmt.Sprintf("%.0f paths/s", r), Base: fmt.Sprintf("%.0f paths/s", wf),
			Aim: ">= 10x", Verdict: verdictOf(r/wf, r/wf >= 10)})
	}
	if len(res["pub-one"]) > 0 && len(res["floor"]) > 0 {
		r, f := rate("pub-one"), rate("floor")
		sec.add(Row{What: fmt.Sprintf("Small paths (%d, one event): publisher (defaults) vs kubo's floor (one dag import of every NAR, each root pinned)", nOne),
			Ratio: r / f, Ours: fmt.Sprintf("%.0f paths/s", r), Base: fmt.Sprintf("%.0f paths/s", f)})
	}
	for _, key := range []string{"pub", "pub-tuned"} {
		if len(res[key]) == 0 {
			continue
		}
		name := map[string]string{"pub": "defaults", "pub-tuned": strings.Join(smallPubArgs, " ")}[key]
		sec.add(Row{What: fmt.Sprintf("Small paths (%d of a few KB, one built event each): publisher (%s) vs original workflow", n, name),
			Ratio: rate(key) / wf, Ours: fmt.Sprintf("%.0f paths/s", rate(key)), Base: fmt.Sprintf("%.0f paths/s", wf),
			Aim: ">= 10x", Verdict: verdictOf(rate(key)/wf, rate(key)/wf >= 10)})
	}

	sec.detailf("%d store paths of 1-8 KiB (one file each, %s of NAR in all), built once with nix-build, one derivation each, and a top path that refers to all of them (the closure of %d paths a machine's first system build hands over in one event). "+
		"The publisher gets either one `built` event per path, all sent at once as a farm's hooks would send them, or one `built` event naming the top path (the `pub-one` side): a built event carries at most 1,024 outputs (schemas/built.v2.json), so thousands of paths reach one event as its closure. "+
		"The clock runs from the first event until the last narinfo with an `IPFSHash` is on disk (fresh NATS, kubo and cache directory per side). "+
		"The original workflow is one `nix copy --to 'file://DIR?compression=none&secret-key=KEY'` of the top path (so of all the paths), then `ipfs add --cid-version=1 -Q` (CLI) of each NAR in turn, then an `IPFSHash:` line appended to each narinfo; it is the baseline of both shapes. "+
		"The floor side is one `ipfs dag import` (CLI) of a CAR of every NAR's DAG of the one-event closure, built beforehand with the publisher's chunker (not timed), whose header names every root: what kubo itself takes to store the blocks and pin (and flush) each root, the limit of any publisher that pins each path's CID. One round at full size.\n\n",
		n, fmtBytes(total), nOne)
	sec.detailf("| Side | took | paths/s | publisher CPU | kubo CPU |\n|---|---|---|---|---|\n")
	for _, sd := range sides {
		if len(res[sd.key]) == 0 {
			continue
		}
		m := res[sd.key][0]
		cp := ""
		if sd.pub {
			cp = fmtDur(m.cpuPub)
		}
		sec.detailf("| %s | %s | %.0f | %s | %s |\n", sd.name, fmtDur(m.took), float64(pathsOf(sd.key))/m.took.Seconds(), cp, fmtDur(m.cpuKubo))
	}
	// Mirror rate on the same paths.
	msides := []struct {
		key, name string
		run       func(s *scope, paths []string) mirrorRun
	}{
		{"mirror", "nix-ipfs mirror (pins as each path is published)", func(s *scope, p []string) mirrorRun { return b.runMirrorOf(s, p, true) }},
		{"batch", "batch: wait for the whole batch, then ipfs pin add of each CID in turn", func(s *scope, p []string) mirrorRun { return b.runBatchPinOf(s, p, true) }},
	}
	if *profileDir != "" {
		progress("small: profiling the publisher and kubo on the one-event closure")
		var md string
		err := runScope("small/profile", func(s *scope) { md = b.profilePublish(s, []*pubTarget{one}, *profileDir) })
		s.check(err, "profile")
		defer sec.detailf("\n%s\n", md)
	}
	mres := map[string]mirrorRun{}
	for _, sd := range msides {
		if !keepSide(sd.key) {
			continue
		}
		progress("small: %s, %d paths", sd.name, n)
		var got mirrorRun
		err := runScope("small/"+sd.key, func(s *scope) { got = sd.run(s, paths) })
		s.check(err, sd.name)
		mres[sd.key] = got
		logf("small %s: all pinned after %s, p99 %s", sd.key, fmtDur(got.allPinned), fmtDur(percentile(got.latency, 99)))
	}
	mm, bm := mres["mirror"], mres["batch"]
	if len(mm.latency) == 0 || len(bm.latency) == 0 {
		return // an experiment with -sides
	}
	sec.add(Row{What: fmt.Sprintf("Small paths: all %d pinned on B, mirror vs the batch way", n), Ratio: float64(bm.allPinned) / float64(mm.allPinned),
		Ours: fmtDur(mm.allPinned), Base: fmtDur(bm.allPinned)})
	sec.add(Row{What: "Small paths: per path, published to pinned", Ratio: float64(percentile(bm.latency, 99)) / float64(percentile(mm.latency, 99)),
		Ours: fmt.Sprintf("p50 %s, p99 %s", fmtDur(percentile(mm.latency, 50)), fmtDur(percentile(mm.latency, 99))),
		Base: fmt.Sprintf("p50 %s, p99 %s", fmtDur(percentile(bm.latency, 50)), fmtDur(percentile(bm.latency, 99)))})

	sec.detailf("\nMirror rate on the same paths, one built event each, publisher with defaults; the mirror side runs `nix-ipfs mirror --name %s` (defaults) on B; the batch side waits for every narinfo, then `ipfs pin add` (CLI) of each CID in turn on B. Latency is from a path's `published` event to its `pinned` event (mirror) or its pin add returning (batch).\n\n", mirrorName)
	sec.detailf("| Side | all pinned | all published | per-path p50 | p99 | max |\n|---|---|---|---|---|---|\n")
	for _, sd := range msides {
		r := mres[sd.key]
		sec.detailf("| %s | %s | %s | %s | %s | %s |\n", sd.name, fmtDur(r.allPinned), fmtDur(r.allPublished),
			fmtDur(percentile(r.latency, 50)), fmtDur(percentile(r.latency, 99)), fmtDur(maxDur(r.latency)))
	}
}

// fewKBPaths returns n independent paths of 1 to 8 KiB each.
func (b *Bench) fewKBPaths(s *scope, n int) []string {
	return b.buildOnce(s, fmt.Sprintf("kb-%d", n), fmt.Sprintf("%d paths of a few KB", n), "[\n"+b.fewKBItems(n)+"\n]")
}

// fewKBItems is the Nix list items of fewKBPaths' derivations.
func (b *Bench) fewKBItems(n int) string {
	var items []string
	for i := 0; i < n; i++ {
		size := 1024 + (i*7919)%(7*1024)
		items = append(items, "("+testenv.Drv(fmt.Sprintf("bench-kb-%d-%s", i, b.nonce),
			fmt.Sprintf("head -c %d /dev/urandom > $out", size), "")+")")
	}
	return strings.Join(items, "\n")
}

// fewKBClosure returns a top path referring to the n paths of
// fewKBPaths (the same derivations, so only the top is built), and its
// closure: the top and those paths.
func (b *Bench) fewKBClosure(s *scope, n int) (top string, closure []string) {
	key := fmt.Sprintf("kb-top-%d", n)
	if c, ok := b.data[key]; ok {
		return c[0], c[1:]
	}
	// passAsFile: thousands of paths are more than one environment
	// variable may hold (128 KiB).
	expr := testenv.Drv("bench-kb-top-"+b.nonce, `cat $partsPath > $out`,
		"passAsFile = [ \"parts\" ];\nparts = [\n"+b.fewKBItems(n)+"\n];")
	top = b.buildOnce(s, key+"-build", fmt.Sprintf("a top path over %d paths of a few KB", n), expr)[0]
	closure, err := b.db.Closure(b.ctx, []string{top})
	s.check(err, "closure of "+top)
	b.data[key] = append([]string{top}, closure...)
	return top, closure
}

// publishBuiltEach publishes one built event per path, as many hooks
// would, pipelined (asynchronous publishes, then every ack).
func (b *Bench) publishBuiltEach(s *scope, js jetstream.JetStream, paths []string) {
	var acks []jetstream.PubAckFuture
	for _, p := range paths {
		ev := &events.Built{Host: "bench", StoreDir: "/nix/store", OutPaths: []string{p}}
		events.Seal(ev)
		data, err := events.Encode(ev)
		s.check(err, "encode built event")
		f, err := js.PublishAsync(events.SubjectBuilt, data, jetstream.WithMsgID(ev.ID))
		s.check(err, "publish built event")
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			s.check(err, "built event ack")
		case <-time.After(time.Minute):
			s.Fatalf("no ack for a built event in a minute")
		}
	}
}

// runPublisherEach is runPublisher with one built event per path.
func (b *Bench) runPublisherEach(s *scope, ts []*pubTarget, args ...string) map[string]pubMeasure {
	a := b.newHostA(s)
	b.startPublisher(s, a, args...)
	pid := a.pub.Cmd.Process.Pid
	kpid := kuboPID(a.kubo.Repo)
	out := map[string]pubMeasure{}
	for _, t := range ts {
		c0, k0 := cpuOf(pid), cpuOf(kpid)
		start := time.Now()
		b.publishBuiltEach(s, a.js, t.outs)
		b.waitNarinfos(s, a.cache, t.paths, pubTimeout, 20*time.Millisecond, a.pub)
		m := pubMeasure{took: time.Since(start)}
		m.cpuPub, m.cpuKubo = cpuOf(pid)-c0, cpuOf(kpid)-k0
		out[t.key] = m
	}
	return out
}

// runDagImportFloor is the least time any publisher that pins each
// path's CID can take on this kubo: the DAGs of every NAR of t, built
// beforehand (not timed), in one CAR whose header names every root, and
// one `ipfs dag import` of it, which stores every block and pins (and
// flushes) each root in turn.
func (b *Bench) runDagImportFloor(s *scope, t *pubTarget) pubMeasure {
	var (
		roots  []cid.Cid
		blocks bytes.Buffer
	)
	for _, p := range t.paths {
		info, err := b.db.QueryPathInfo(b.ctx, p)
		s.check(err, "path info of "+p)
		hashes := []string{storepath.HashPart(p)}
		for _, r := range info.References {
			hashes = append(hashes, storepath.HashPart(r))
		}
		var nb bytes.Buffer
		s.check(nar.DumpPath(&nb, p), "NAR of "+p)
		root, err := nardag.Build(b.ctx, &nb, publisher.DefaultChunker, hashes, func(c cid.Cid, data []byte) error {
			blocks.Write(nardag.CARBlock(c, data))
			return nil
		})
		s.check(err, "DAG of "+p)
		roots = append(roots, root)
	}
	car := filepath.Join(s.TempDir(), "all.car")
	s.check(os.WriteFile(car, append(nardag.CARHeader(roots), blocks.Bytes()...), 0o644), "write the CAR")
	k := testenv.StartKubo(s)
	kpid := kuboPID(k.Repo)
	k0 := cpuOf(kpid)
	start := time.Now()
	s.run(b.ctx, ipfsEnv(k), "ipfs", "dag", "import", "--stats=false", car)
	return pubMeasure{took: time.Since(start), cpuKubo: cpuOf(kpid) - k0}
}
