package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/scalestate"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

var (
	scaleMirrorSizes = flag.String("scale-mirror-sizes", "", "the scale section's mirror part: its sizes, comma-separated (default: -scale-sizes if given, else 100000,250000,500000, -quick 5000,20000; none: no mirror part): "+
		"filling kubo with pins runs at a few hundred a second, so a million takes hours; the rows end with a linear prediction for a million")
	scaleNewPaths = flag.Int("scale-new-paths", 200, "the scale section's mirror: new paths published, one at a time, onto a mirror holding every size's pins, for the pin latency")
	scaleReplay   = flag.Int("scale-replay", 20_000, "the scale section's replay: how many of the newest published events `nix-ipfs replay` pins onto a fresh node through bitswap (the whole history at a million would take hours; the rate is per path)")
)

// scaleMirrorName is the mirror the scale section runs.
const scaleMirrorName = "scale"

// mirrorPoint is one size's figures for the mirror, the replay and the
// stream.
type mirrorPoint struct {
	n int
	// Building the state: the events, the pins (CAR imports), the
	// narinfos.
	fillEvents, fillPins, fillNarInfos time.Duration
	narInfoBytes                       int64
	// The stream: bytes on disk after the fill (published events) and
	// after the mirror caught up (a pinned event each as well);
	// nats-server's RSS; its restart until the stream answers.
	streamDisk, streamDiskPinned, natsRSS int64
	natsRestart                           time.Duration
	// kubo: the repository's bytes and files, its RSS, and listing every
	// pin with names (what a cache root event costs the mirror).
	kuboRepo, kuboFiles, kuboRSS int64
	pinsNamed                    time.Duration
	// The mirror: its first start through the whole history (every CID
	// pinned already), its peak RSS there; a restart until it pulls, the
	// bytes it read by then, and the events redelivered.
	catchUp    time.Duration
	catchUpRSS int64
	// liveHeap is the mirror's heap live after its last garbage
	// collection in the history (gctrace), maxLiveHeap the largest such.
	liveHeap, maxLiveHeap   int64
	restart                 time.Duration
	restartRead             int64
	redelivered             int64
	latency                 []time.Duration
	mirrorRSS, mirrorPeak   int64
	pubRestart              time.Duration
	replayN                 int
	replay                  time.Duration
	replayRSS               int64
	replayPinned, replayAll int
	// Open file descriptors of the mirror, kubo B and nats-server, after
	// the new paths.
	mirrorFDs, kuboFDs, natsFDs int
}

// benchScaleMirror: a mirror, a replay and the stream at each size
// (issue 24, the mirror's part). State is built by package scalestate:
// the stream gets a published event per path, the mirror's kubo every NAR
// pinned (CAR imports with --pin-roots), its --cache-dir every narinfo.
func benchScaleMirror(b *Bench, s *scope, sec *Section, sizes []int) {
	switch {
	case *scaleMirrorSizes == "none":
		return
	case *scaleMirrorSizes != "":
		sizes = nil
		for _, f := range strings.Split(*scaleMirrorSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			s.check(err, "-scale-mirror-sizes")
			sizes = append(sizes, n)
		}
	case *scaleSizes == "" && !b.quick:
		sizes = []int{100_000, 250_000, 500_000}
	}
	var pts []mirrorPoint
	for _, n := range sizes {
		var pt mirrorPoint
		if err := runScope(fmt.Sprintf("scale-mirror/%d", n), func(s *scope) { pt = b.scaleMirrorAt(s, n) }); err != nil {
			s.Fatalf("scale, mirror at %d paths: %v", n, err)
		}
		pts = append(pts, pt)
	}
	for _, pt := range pts {
		n := int64(pt.n)
		p99 := percentile(pt.latency, 99)
		sec.add(Row{What: fmt.Sprintf("%d pins: a new path's pin on the mirror, published to pinned (%d paths)", pt.n, len(pt.latency)), Ratio: nan,
			Ours: fmt.Sprintf("p50 %s, p99 %s", fmtDur(percentile(pt.latency, 50)), fmtDur(p99)), Aim: "p99 < 2 s", Verdict: verdict(p99 < 2*time.Second)})
		sec.add(Row{What: fmt.Sprintf("%d pins: kubo's repository, per path (%s, %d files in all)", pt.n, fmtBytes(pt.kuboRepo), pt.kuboFiles), Ratio: nan,
			Ours: fmt.Sprintf("%s, %.1f files", fmtBytes(pt.kuboRepo/n), float64(pt.kuboFiles)/float64(n)), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d pins: the mirror's RSS, after the new paths / peak while it went through the history", pt.n), Ratio: nan,
			Ours: fmtBytes(pt.mirrorRSS) + " / " + fmtBytes(pt.catchUpRSS), Aim: "< 256 MiB", Verdict: verdict(max(pt.mirrorRSS, pt.catchUpRSS) < 256<<20)})
		sec.add(Row{What: fmt.Sprintf("%d events: the mirror's live heap after its last collection in the history / the largest", pt.n), Ratio: nan,
			Ours: fmtBytes(pt.liveHeap) + " / " + fmtBytes(pt.maxLiveHeap), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d pins: open file descriptors of the mirror / kubo / nats-server", pt.n), Ratio: nan,
			Ours: fmt.Sprintf("%d / %d / %d", pt.mirrorFDs, pt.kuboFDs, pt.natsFDs), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d narinfos in --cache-dir: the mirror's restart until it pulls; bytes it read meanwhile", pt.n), Ratio: nan,
			Ours: fmt.Sprintf("%s; %s (narinfos: %s)", fmtDur(pt.restart), fmtBytes(pt.restartRead), fmtBytes(pt.narInfoBytes)),
			Aim:  "< 10 s, reads no narinfo", Verdict: verdict(pt.restart < 10*time.Second && pt.restartRead < pt.narInfoBytes/4)})
		sec.add(Row{What: fmt.Sprintf("%d events: the mirror's restart, events delivered again", pt.n), Ratio: nan,
			Ours: strconv.FormatInt(pt.redelivered, 10), Aim: "0 (the durable consumer's ack floor)", Verdict: verdict(pt.redelivered == 0)})
		sec.add(Row{What: fmt.Sprintf("%d events: a publisher's restart until it pulls", pt.n), Ratio: nan,
			Ours: fmtDur(pt.pubRestart), Aim: "< 10 s", Verdict: verdict(pt.pubRestart < 10*time.Second)})
		sec.add(Row{What: fmt.Sprintf("%d events: a mirror's first run through the whole history, every CID pinned already", pt.n), Ratio: nan,
			Ours: fmt.Sprintf("%s, %.0f events/s", fmtDur(pt.catchUp), float64(pt.n)/pt.catchUp.Seconds()), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d events: `nix-ipfs replay` of the newest %d onto a fresh node (bitswap)", pt.n, pt.replayN), Ratio: nan,
			Ours: fmt.Sprintf("%.0f paths/s, peak RSS %s", float64(pt.replayN)/pt.replay.Seconds(), fmtBytes(pt.replayRSS)),
			Aim:  "every path pinned, RSS < 256 MiB", Verdict: verdict(pt.replayPinned == pt.replayAll && pt.replayRSS < 256<<20)})
		sec.add(Row{What: fmt.Sprintf("%d paths: the stream on disk, per path (published; + pinned by one mirror)", pt.n), Ratio: nan,
			Ours: fmt.Sprintf("%s; %s (%s in all)", fmtBytes(pt.streamDisk/n), fmtBytes(pt.streamDiskPinned/n), fmtBytes(pt.streamDiskPinned)), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d paths: nats-server's RSS; its restart until the stream answers", pt.n), Ratio: nan,
			Ours: fmtBytes(pt.natsRSS) + "; " + fmtDur(pt.natsRestart), Aim: "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d paths: building the state: events / pins (CAR imports) / narinfos, per second", pt.n), Ratio: nan,
			Ours: fmt.Sprintf("%.0f / %.0f / %.0f", float64(pt.n)/pt.fillEvents.Seconds(), float64(pt.n)/pt.fillPins.Seconds(), float64(pt.n)/pt.fillNarInfos.Seconds()),
			Aim:  "", Verdict: ""})
		sec.add(Row{What: fmt.Sprintf("%d pins: listing every pin with its name (a cache root event's old root)", pt.n), Ratio: nan,
			Ours: fmtDur(pt.pinsNamed), Aim: "", Verdict: ""})
	}
	if len(pts) >= 2 {
		a, z := pts[0], pts[len(pts)-1]
		live := float64(z.maxLiveHeap-a.maxLiveHeap) / float64(z.n-a.n)
		sec.add(Row{What: fmt.Sprintf("The mirror's largest live heap a path, the slope between %d and %d paths", a.n, z.n), Ratio: nan,
			Ours: fmt.Sprintf("%.0f B", live), Aim: "< 100 B (nothing kept per event)", Verdict: verdict(live < 100)})
		slope := float64(z.catchUpRSS-a.catchUpRSS) / float64(z.n-a.n)
		sec.add(Row{What: fmt.Sprintf("The mirror's peak RSS a path, the slope between %d and %d paths", a.n, z.n), Ratio: nan,
			Ours: fmt.Sprintf("%.0f B", slope), Aim: "< 1 KB", Verdict: verdict(slope < 1024)})
		// A million, from the last two sizes, where each grows linearly.
		y, zz := pts[len(pts)-2], z
		at := func(f func(mirrorPoint) float64) float64 {
			return f(y) + (f(zz)-f(y))*float64(1_000_000-y.n)/float64(zz.n-y.n)
		}
		peak := int64(at(func(p mirrorPoint) float64 { return float64(p.catchUpRSS) }))
		sec.add(Row{What: fmt.Sprintf("1,000,000 predicted from %d and %d: the mirror's peak through the history / nats-server's RSS / the stream with one mirror / kubo's repository", y.n, zz.n), Ratio: nan,
			Ours: fmtBytes(peak) + " / " + fmtBytes(int64(at(func(p mirrorPoint) float64 { return float64(p.natsRSS) }))) + " / " +
				fmtBytes(int64(at(func(p mirrorPoint) float64 { return float64(p.streamDiskPinned) }))) + " / " +
				fmtBytes(int64(at(func(p mirrorPoint) float64 { return float64(p.kuboRepo) }))),
			Aim: "peak < 256 MiB", Verdict: verdict(peak < 256<<20)})
		pa, pz := percentile(a.latency, 99), percentile(z.latency, 99)
		sec.add(Row{What: fmt.Sprintf("Pin latency p99 at %d pins ÷ at %d", z.n, a.n), Ratio: nan,
			Ours: fmt.Sprintf("%.2fx", float64(pz)/float64(pa)), Aim: "", Verdict: ""})
	}
	sec.detailf("\nThe mirror's part, at each size: a real `nats-server` (file store), two kubo daemons (B, the mirror's; A, the publisher's for new paths), "+
		"and the state a mirror has after a long life built by `internal/scalestate`: one `published` event per path (synthcache's nixpkgs-shaped paths, "+
		"a 64-byte NAR each, so one raw block), every NAR pinned on B (CAR files of 50,000 blocks through `ipfs dag import --pin-roots`: unnamed pins, "+
		"where the mirror names its own), every narinfo in the mirror's `--cache-dir`. "+
		"Then `nix-ipfs mirror --name %s --cache-dir` starts with a new durable consumer and goes through the whole history (every CID pinned already: "+
		"`pin ls`, the narinfo compared, a pinned event each), is stopped and started again (restart: until its consumer has a pull waiting; "+
		"bytes read: `rchar` of /proc/PID/io by then; events delivered again: the consumer's delivered count after a few seconds), "+
		"and %d new paths held by A are published one every 50 ms (latency: pinned event's time minus published event's time). "+
		"A publisher (`nix-ipfs publisher`, its consumer created once before) is restarted likewise. `nix-ipfs replay --from-seq` pins the newest events onto a "+
		"fresh kubo C that fetches from B. Disk: `du` of the directories; RSS: VmRSS/VmHWM. The machine is shared and loaded: read the times as upper bounds.\n",
		scaleMirrorName, *scaleNewPaths)
}

// scaleMirrorAt measures one size.
func (b *Bench) scaleMirrorAt(s *scope, n int) mirrorPoint {
	ctx := b.ctx
	pt := mirrorPoint{n: n}
	natsBin := testenv.NeedProgram(s, "nats-server")
	natsDir := filepath.Join(s.TempDir(), "jetstream")
	port := testenv.FreePort(s)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	ns := testenv.StartProc(s, natsBin, []string{"-js", "-sd", natsDir, "-a", "127.0.0.1", "-p", strconv.Itoa(port)})
	nc, js := scaleConnect(s, url)
	defer func() { nc.Close() }()
	_, err := events.EnsureStream(ctx, js, events.StreamOptions{})
	s.check(err, "stream")

	// As deploy/kubo/mirror.sh configures a mirror's node: only NAR roots
	// are announced, so a million pins are not a million provider records.
	kb := testenv.StartKubo(s, testenv.KuboConfig("Provide.Strategy", `"roots"`))
	kubo, err := ipfs.Dial(kb.API)
	s.check(err, "kubo B")
	selfB, err := kubo.Self(ctx)
	s.check(err, "kubo B's identity")
	self := events.Node{PeerID: selfB.PeerID, Addrs: selfB.Addrs}
	cacheDir := filepath.Join(s.TempDir(), "mirror-cache")

	progress("scale: building %d paths: published events, pins on B, narinfos in the mirror's cache", n)
	st, err := scalestate.Build(ctx, scalestate.Options{Seed: "scale", N: n, JS: js, Publisher: self, KuboRepo: kb.Repo, CacheDir: cacheDir})
	s.check(err, "build the state")
	pt.fillEvents, pt.fillPins, pt.fillNarInfos, pt.narInfoBytes = st.Publish, st.Pin, st.Write, st.NarInfoBytes
	progress("scale: %d paths built: events %s, pins %s, narinfos %s", n, fmtDur(st.Publish), fmtDur(st.Pin), fmtDur(st.Write))
	pt.streamDisk = duBytes(s, natsDir)
	pt.natsRSS, _ = procStatus(ns.Cmd.Process.Pid, "VmRSS")
	pt.kuboRepo = duBytes(s, kb.Repo)
	pt.kuboFiles = countFiles(s, kb.Repo)
	pt.kuboRSS, _ = procStatus(kb.PID(), "VmRSS")
	start := time.Now()
	_, err = kubo.PinsNamed(ctx, "nix-ipfs-cache-root")
	s.check(err, "pin ls --names")
	pt.pinsNamed = time.Since(start)

	env := []string{"NIX_IPFS_NATS_URL=" + url, "NIX_IPFS_KUBO_API=" + kb.API, "NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn"}
	durable := "mirror-" + scaleMirrorName
	progress("scale: the mirror goes through %d events", n)
	start = time.Now()
	// gctrace: the heap live after each collection, in the mirror's log,
	// tells memory kept per event from garbage not yet collected.
	m := testenv.StartProc(s, filepath.Join(b.bins, "nix-ipfs"), []string{"mirror", "--name", scaleMirrorName, "--cache-dir", cacheDir},
		append(env, "GODEBUG=gctrace=1")...)
	lastSeq := streamLastSeq(ctx, s, js)
	s.waitFor(ctx, 24*time.Hour, 100*time.Millisecond, "the mirror through the history", func() bool {
		if m.Wait(0) {
			s.Fatalf("the mirror exited:\n%s", m.Tail(30))
		}
		if hwm, err := procStatus(m.Cmd.Process.Pid, "VmHWM"); err == nil {
			pt.catchUpRSS = max(pt.catchUpRSS, hwm)
		}
		c := consumerInfo(ctx, js, durable)
		return c != nil && c.AckFloor.Stream >= lastSeq && c.NumAckPending == 0
	})
	pt.catchUp = time.Since(start)
	pt.liveHeap, pt.maxLiveHeap = gcLiveHeap(s, m.Log)
	pt.streamDiskPinned = duBytes(s, natsDir)

	progress("scale: the mirror restarts over %d narinfos and events", n)
	m.Signal(syscall.SIGTERM)
	if !m.Wait(time.Minute) {
		s.Fatalf("the mirror did not stop")
	}
	waitNoPull(ctx, s, js, durable)
	before := consumerInfo(ctx, js, durable)
	start = time.Now()
	m.Restart(s)
	pid := m.Cmd.Process.Pid
	s.waitFor(ctx, 10*time.Minute, 10*time.Millisecond, "the restarted mirror pulling", func() bool {
		if m.Wait(0) {
			s.Fatalf("the mirror exited:\n%s", m.Tail(30))
		}
		c := consumerInfo(ctx, js, durable)
		return c != nil && c.NumWaiting > 0
	})
	pt.restart = time.Since(start)
	pt.restartRead = procIO(pid, "rchar")
	time.Sleep(3 * time.Second)
	if after := consumerInfo(ctx, js, durable); after != nil && before != nil {
		pt.redelivered = int64(after.Delivered.Consumer) - int64(before.Delivered.Consumer)
	}

	progress("scale: %d new paths onto the mirror holding %d pins", *scaleNewPaths, n)
	pt.latency = b.scaleNewPaths(s, js, m)
	pt.mirrorRSS, _ = procStatus(pid, "VmRSS")
	pt.mirrorPeak, _ = procStatus(pid, "VmHWM")
	pt.mirrorFDs, pt.kuboFDs, pt.natsFDs = openFDs(pid), openFDs(kb.PID()), openFDs(ns.Cmd.Process.Pid)

	progress("scale: a publisher's restart over %d events", n)
	pt.pubRestart = b.scalePublisherRestart(s, js, url)

	progress("scale: nats-server's restart over the stream")
	nc.Close()
	ns.Signal(syscall.SIGTERM)
	if !ns.Wait(time.Minute) {
		s.Fatalf("nats-server did not stop")
	}
	start = time.Now()
	ns.Restart(s)
	s.waitFor(ctx, 10*time.Minute, 20*time.Millisecond, "the stream after nats-server's restart", func() bool {
		c, err := nats.Connect(url, nats.Timeout(time.Second))
		if err != nil {
			return false
		}
		defer c.Close()
		j, err := jetstream.New(c)
		if err != nil {
			return false
		}
		_, err = j.Stream(ctx, events.DefaultStream)
		return err == nil
	})
	pt.natsRestart = time.Since(start)
	nc, js = scaleConnect(s, url)

	pt.replayN = min(n, *scaleReplay)
	progress("scale: replay of the newest %d events onto a fresh node", pt.replayN)
	kc := testenv.StartKubo(s)
	from := lastSeq - uint64(pt.replayN) + 1
	renv := []string{"NIX_IPFS_NATS_URL=" + url, "NIX_IPFS_KUBO_API=" + kc.API, "NIX_IPFS_LOG_LEVEL=warn"}
	pt.replay, pt.replayRSS, _ = timedRSS(ctx, s, renv, filepath.Join(b.bins, "nix-ipfs"), "replay", "--mirror", "fresh", "--from-seq", strconv.FormatUint(from, 10),
		"--progress", "none", "--state-file", filepath.Join(s.TempDir(), "replay.seq"))
	pins := kc.IPFS(s, "pin", "ls", "--type=recursive", "--quiet")
	have := map[string]bool{}
	for _, c := range strings.Fields(pins) {
		have[c] = true
	}
	pt.replayAll = pt.replayN
	s.check(scalestate.Each("scale", n-pt.replayN, n, self, time.Now(), func(i int, p scalestate.Path) error {
		if have[p.CID.String()] {
			pt.replayPinned++
		}
		return nil
	}), "the replayed paths")
	progress("scale %d: p99 %s, restart %s (read %s), catch-up %s, replay %d/%d in %s", n, fmtDur(percentile(pt.latency, 99)),
		fmtDur(pt.restart), fmtBytes(pt.restartRead), fmtDur(pt.catchUp), pt.replayPinned, pt.replayAll, fmtDur(pt.replay))
	return pt
}

// scaleNewPaths publishes new paths held by a second kubo, one every 50
// ms, and returns each one's latency from its published event to the
// mirror's pinned event.
func (b *Bench) scaleNewPaths(s *scope, js jetstream.JetStream, m *testenv.Proc) []time.Duration {
	ctx := b.ctx
	ka := testenv.StartKubo(s)
	a, err := ipfs.Dial(ka.API)
	s.check(err, "kubo A")
	nodeA, err := a.Self(ctx)
	s.check(err, "kubo A's identity")
	selfA := events.Node{PeerID: nodeA.PeerID, Addrs: nodeA.Addrs}
	k := *scaleNewPaths
	seed := fmt.Sprintf("scale-new-%d", time.Now().UnixNano())
	_, err = scalestate.Build(ctx, scalestate.Options{Seed: seed, N: k, KuboRepo: ka.Repo})
	s.check(err, "the new paths on A")
	startSeq := streamLastSeq(ctx, s, js) + 1
	published := map[string]time.Time{}
	err = scalestate.Each(seed, 0, k, selfA, time.Time{}, func(i int, p scalestate.Path) error {
		ev := scalestate.MakePath(p.Path, selfA, time.Now()).Event
		published[ev.StorePath] = ev.Time
		_, err := events.Publish(ctx, js, events.SubjectPublished, ev)
		time.Sleep(50 * time.Millisecond)
		return err
	})
	s.check(err, "publish the new paths")
	subject := events.SubjectPinned(scaleMirrorName)
	var lat []time.Duration
	s.waitFor(ctx, 10*time.Minute, 200*time.Millisecond, fmt.Sprintf("%d new paths pinned", k), func() bool {
		if m.Wait(0) {
			s.Fatalf("the mirror exited:\n%s", m.Tail(30))
		}
		lat = lat[:0]
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: startSeq}
		err := events.Scan(ctx, js, events.DefaultStream, events.ScanOptions{Consumer: cfg}, func(msg jetstream.Msg) error {
			ev, err := events.Decode(msg.Data())
			if err != nil {
				return err
			}
			if p, ok := ev.(*events.Pinned); ok {
				if t, ok := published[p.StorePath]; ok {
					lat = append(lat, p.Time.Sub(t))
				}
			}
			return nil
		})
		s.check(err, "read pinned events")
		return len(lat) >= k
	})
	return lat
}

// scalePublisherRestart starts a publisher (its consumer new, nothing
// built to publish), stops it, and times its restart until it pulls.
func (b *Bench) scalePublisherRestart(s *scope, js jetstream.JetStream, url string) time.Duration {
	ctx := b.ctx
	ka := testenv.StartKubo(s)
	env := []string{"NIX_IPFS_NATS_URL=" + url, "NIX_IPFS_KUBO_API=" + ka.API, "NIX_IPFS_CACHE_DIR=" + filepath.Join(s.TempDir(), "cache"),
		"NIX_IPFS_SECRET_KEY_FILE=" + b.nix.SecretKey, "NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn"}
	p := testenv.StartProc(s, filepath.Join(b.bins, "nix-ipfs"), []string{"publisher"}, env...)
	pulling := func() bool {
		if p.Wait(0) {
			s.Fatalf("the publisher exited:\n%s", p.Tail(30))
		}
		c := consumerInfo(ctx, js, "publisher")
		return c != nil && c.NumWaiting > 0
	}
	s.waitFor(ctx, 10*time.Minute, 10*time.Millisecond, "the publisher pulling", pulling)
	p.Signal(syscall.SIGTERM)
	if !p.Wait(time.Minute) {
		s.Fatalf("the publisher did not stop")
	}
	waitNoPull(ctx, s, js, "publisher")
	start := time.Now()
	p.Restart(s)
	s.waitFor(ctx, 10*time.Minute, 10*time.Millisecond, "the restarted publisher pulling", pulling)
	took := time.Since(start)
	p.Signal(syscall.SIGTERM)
	p.Wait(time.Minute)
	return took
}

// scaleConnect connects to the nats-server at url, waiting for it to
// listen.
// waitNoPull waits until the stopped process's pull requests are gone
// from its consumer, so that a pull waiting afterwards is its successor's.
func waitNoPull(ctx context.Context, s *scope, js jetstream.JetStream, durable string) {
	s.waitFor(ctx, 2*time.Minute, 20*time.Millisecond, durable+"'s pulls gone", func() bool {
		c := consumerInfo(ctx, js, durable)
		return c != nil && c.NumWaiting == 0
	})
}

func scaleConnect(s *scope, url string) (*nats.Conn, jetstream.JetStream) {
	var nc *nats.Conn
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if nc, err = nats.Connect(url, nats.MaxReconnects(-1)); err == nil || time.Now().After(deadline) {
			break
		}
	}
	s.check(err, "connect to nats-server")
	js, err := jetstream.New(nc)
	s.check(err, "jetstream")
	return nc, js
}

// consumerInfo returns the durable consumer's state, nil if there is none
// (yet) or the server does not answer.
func consumerInfo(ctx context.Context, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := testenv.DurableInfo(ctx, js, events.DefaultStream, durable)
	if err != nil {
		return nil
	}
	return info
}

func streamLastSeq(ctx context.Context, s *scope, js jetstream.JetStream) uint64 {
	st, err := js.Stream(ctx, events.DefaultStream)
	s.check(err, "stream")
	info, err := st.Info(ctx)
	s.check(err, "stream info")
	return info.State.LastSeq
}

// duBytes is the disk a directory tree takes (allocated blocks, as du).
func duBytes(s *scope, dir string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed meanwhile
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	s.check(err, "du "+dir)
	return total
}

// countFiles counts the files and directories (inodes) under dir.
func countFiles(s *scope, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(string, fs.DirEntry, error) error { n++; return nil })
	s.check(err, "count files in "+dir)
	return n
}

// gcLiveHeap reads a Go program's gctrace lines ("gc N @t s p%: ... A->B->C
// MB, ...") from its log and returns the live heap C after the last
// collection and the largest one, in bytes.
func gcLiveHeap(s *scope, log string) (last, most int64) {
	b, err := os.ReadFile(log)
	s.check(err, "the mirror's log")
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			if !strings.HasSuffix(f, " MB") || strings.Count(f, "->") != 2 {
				continue
			}
			parts := strings.Split(strings.TrimSuffix(f, " MB"), "->")
			if mb, err := strconv.ParseFloat(parts[2], 64); err == nil {
				last = int64(mb * (1 << 20))
				most = max(most, last)
			}
		}
	}
	return last, most
}

// openFDs counts a process's open file descriptors, -1 if unknown.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// procIO reads a field of /proc/PID/io (rchar: bytes read through read
// calls, from files and sockets alike), or -1.
func procIO(pid int, field string) int64 {
	n, err := procField(pid, "io", field)
	if err != nil {
		return -1
	}
	return n
}
