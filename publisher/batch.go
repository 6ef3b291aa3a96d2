package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Batches: the small paths of one closure published together.
//
// A machine's first system build hands the publisher one event whose
// closure has thousands of paths of a few KB. One by one, each cost a
// lease taken and released on NATS, an HTTP request and a pin flush in
// kubo, two fsyncs of a directory and an acked event, each waited for in
// turn; the NAR bytes were nothing. A batch does the same work for up to
// batchMaxPaths such paths with one batch slot, and shares what can be
// shared without weakening any promise:
//
//   - the leases are taken (and released) side by side;
//   - one `dag import` carries every NAR's blocks and pins every root
//     (nardag.ImportMany);
//   - the NARs are fsynced side by side, renamed, then nar/ is fsynced
//     once (cachedir.CommitNARs); only then are the narinfos written, the
//     same way (cachedir.WriteNarInfos): a narinfo still never appears
//     before its NAR and its pinned CID are durable;
//   - the "published" events, one per path as before (a mirror pins each
//     as it arrives), are sent without waiting for each ack in turn, then
//     every ack is awaited before the event is acked.
//
// A crash anywhere leaves what a crash of single publishes leaves: temp
// files (removed once stale), NARs without narinfos (written again, same
// name and bytes), narinfos not yet announced (announced by the next
// publish, doneAlready). The built event is acked only when every path is.
const (
	// batchMaxNar: paths whose NAR is larger are published alone; their
	// bytes, not their round trips, are their cost. A batch holds one NAR
	// in memory at a time.
	batchMaxNar = 256 << 10
	// batchMaxPaths is the most paths one batch takes. kubo pins (and
	// flushes) each root of an import in turn, and took a closure of
	// 1,000 small paths 2.5-3x sooner in two batches of up to 512 than in
	// sixteen of 64 (docs/BENCHMARKS.md, issue 25). A batch keeps a temp
	// file open per path until its NARs are synced: batchPaths lowers it
	// when the open-file limit is low.
	batchMaxPaths = 512
	// leaseWorkers bounds the leases of one batch taken at once.
	leaseWorkers = 16
)

// batchPaths is the most paths in one batch: batchMaxPaths, or fewer if
// every slot's batch open at once would take more than half of the
// process's open-file limit.
func batchPaths(concurrency int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 64
	}
	return max(2, min(batchMaxPaths, int(rl.Cur/2)/max(1, concurrency)))
}

// batchable reports whether this publisher can batch: the DAGs are built
// in process (nardag), so many can go into one import. kubo's add (a kubo
// chunker, or --ipfs-nocopy) takes one file a request.
func (p *Publisher) batchable() bool { return !p.opt.Params.Kubo() && !p.opt.Params.Nocopy }

// infosQuerier is a Store that reads many paths' metadata in one query
// (nixstore.DB).
type infosQuerier interface {
	QueryPathInfos(ctx context.Context, paths []string) (map[string]*nixstore.PathInfo, error)
}

var _ infosQuerier = (*nixstore.DB)(nil)

// plan splits a closure into batches of small paths and the paths to
// publish one by one (indices into closure). Any doubt sends a path the
// single way: it is always correct, only slower.
func (p *Publisher) plan(ctx context.Context, closure []string) (batches []batch, single []int) {
	all := make([]int, len(closure))
	for i := range all {
		all[i] = i
	}
	q, ok := p.store.(infosQuerier)
	if !p.batchable() || !ok || len(closure) < 2 {
		return nil, all
	}
	infos, err := q.QueryPathInfos(ctx, closure)
	if err != nil {
		p.log.Warn("cannot read the closure's path infos at once; publishing its paths one by one", zap.Error(err))
		return nil, all
	}
	var small []int
	for i, sp := range closure {
		if info := infos[sp]; info == nil || info.NarSize == 0 || info.NarSize > batchMaxNar {
			single = append(single, i)
		} else {
			small = append(small, i)
		}
	}
	// As few batches as the size allows, but one for every slot: a
	// closure of a few hundred paths still uses them all.
	size := min(p.batchPaths, (len(small)+p.opt.Concurrency-1)/p.opt.Concurrency)
	var cur batch
	for _, i := range small {
		cur.idx, cur.infos = append(cur.idx, i), append(cur.infos, infos[closure[i]])
		if len(cur.idx) >= size {
			batches, cur = append(batches, cur), batch{}
		}
	}
	switch len(cur.idx) {
	case 0:
	case 1:
		// A batch of one is a single publish with extra steps.
		single = append(single, cur.idx[0])
		slices.Sort(single)
	default:
		batches = append(batches, cur)
	}
	return batches, single
}

// batch is some paths of a closure: their indices in it, and their
// metadata.
type batch struct {
	idx   []int
	infos []*nixstore.PathInfo
}

// batchItem is one path of a batch, and how far it got.
type batchItem struct {
	info     *nixstore.PathInfo
	hashPart string
	// tried: the batch worked on it (it was not done already).
	tried  bool
	start  time.Time
	fl     *flight
	phase  itemPhase
	lctx   context.Context // the lease's context, or the batch's
	unlock func()
	tmp    *atomicfile.File
	root   cid.Cid
	ni     *narinfo.NarInfo
	ev     *events.Published
	err    error
}

// itemPhase is where a batch item is.
type itemPhase int

const (
	// working: still in the batch.
	working itemPhase = iota
	// finished: ev or err is its outcome.
	finished
	// alone: to be published the single way, in its own flight (its
	// lease is held by another publisher).
	alone
	// joined: another publish of it runs in this process; waited for.
	joined
)

// fail finishes it with err, unless it is finished already.
func (it *batchItem) fail(err error) {
	if it.phase == working {
		it.phase, it.err = finished, err
	}
}

// publishBatch publishes the paths of infos together, and returns one
// error per path, nil where the path is published and announced.
func (p *Publisher) publishBatch(ctx context.Context, infos []*nixstore.PathInfo) []error {
	items := make([]*batchItem, len(infos))
	for i, info := range infos {
		it := &batchItem{info: info, hashPart: storepath.HashPart(info.Path), start: time.Now(), lctx: ctx}
		items[i] = it
		var mine bool
		if it.fl, mine = p.flights.begin(info.Path); !mine {
			it.phase = joined
			continue
		}
		// Done already? Checked before taking a slot, as the single way does.
		if ev, done, err := p.doneAlready(ctx, info.Path, it.hashPart, it.start); done || err != nil {
			it.phase, it.ev, it.err = finished, ev, err
		}
	}
	if live(items) > 0 {
		if err := p.batchSlots.Acquire(ctx, 1); err != nil {
			for _, it := range items {
				it.fail(err)
			}
		} else {
			p.runBatch(ctx, items)
			p.batchSlots.Release(1)
		}
	}
	// The flights this batch owns end here; the paths it handed on are
	// published the single way, and those another publish had are
	// waited for.
	out := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		switch it.phase {
		case finished:
			p.flights.end(it.info.Path, it.fl, it.ev, it.err)
			out[i] = it.err
		case alone:
			wg.Add(1)
			go func() {
				defer wg.Done()
				ev, err := p.publishPath(ctx, it.info.Path)
				p.flights.end(it.info.Path, it.fl, ev, err)
				out[i] = err
			}()
		case joined:
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, out[i] = p.PublishPath(ctx, it.info.Path)
			}()
		default:
			panic("publisher: batch item left working")
		}
	}
	wg.Wait()
	return out
}

// live counts the items still in the batch.
func live(items []*batchItem) int {
	n := 0
	for _, it := range items {
		if it.phase == working {
			n++
		}
	}
	return n
}

// runBatch takes the items' leases and publishes them, holding a batch
// slot.
func (p *Publisher) runBatch(ctx context.Context, items []*batchItem) {
	defer p.unlockAll(items)
	start := time.Now()
	p.leaseAll(ctx, items)
	if live(items) == 0 {
		return
	}
	for _, it := range items {
		it.tried = it.phase == working
	}
	// Where a batch's time goes, for the log: the import is kubo's share.
	leased := time.Now()
	p.importAll(ctx, items)
	imported := time.Now()
	p.commitNARs(items)
	narsDone := time.Now()
	p.writeNarInfos(items)
	written := time.Now()
	p.announceAll(ctx, items)
	took := [5]time.Duration{leased.Sub(start), imported.Sub(leased), narsDone.Sub(imported), written.Sub(narsDone), time.Since(written)}
	n := 0
	for _, it := range items {
		if it.phase == working {
			it.phase = finished
			n++
		}
		if it.tried {
			p.report(it.ev, true, it.start, it.err)
		}
	}
	p.log.Info("published a batch", zap.Int("paths", n), zap.Int("of", len(items)),
		zap.Duration("lease", took[0]), zap.Duration("import", took[1]), zap.Duration("nars", took[2]),
		zap.Duration("narinfos", took[3]), zap.Duration("announce", took[4]))
}

// leaseAll takes the leases of the working items side by side. An item
// whose lease another publisher holds goes the single way, which waits
// for it; one found done under its lease is finished.
func (p *Publisher) leaseAll(ctx context.Context, items []*batchItem) {
	if p.opt.Locker == nil {
		return
	}
	sem := make(chan struct{}, leaseWorkers)
	var wg sync.WaitGroup
	for _, it := range items {
		if it.phase != working {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			lctx, unlock, err := p.opt.Locker.Lock(ctx, it.hashPart, it.info.Path)
			switch {
			case IsHeld(err):
				it.phase = alone
				return
			case err != nil:
				it.fail(err)
				return
			}
			it.lctx, it.unlock = lctx, unlock
			if ev, done, err := p.doneAlready(lctx, it.info.Path, it.hashPart, it.start); done || err != nil {
				it.phase, it.ev, it.err = finished, ev, err
			}
		}()
	}
	wg.Wait()
}

// unlockAll releases the leases leaseAll took, side by side.
func (p *Publisher) unlockAll(items []*batchItem) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, leaseWorkers)
	for _, it := range items {
		if it.unlock == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			it.unlock()
		}()
	}
	wg.Wait()
}

// importAll writes every working item's NAR to a temp file in the cache,
// checking it against the store's record, and imports the DAGs of all of
// them into kubo in one dag import, pinned.
func (p *Publisher) importAll(ctx context.Context, items []*batchItem) {
	var kuboSide error // a put failed: kubo stopped reading
	pinned, err := nardag.ImportMany(ctx, p.ipfs, func(put nardag.Sink) ([]cid.Cid, error) {
		var roots []cid.Cid
		sink := func(c cid.Cid, data []byte) error {
			if err := put(c, data); err != nil {
				kuboSide = err
				return err
			}
			return nil
		}
		for _, it := range items {
			if it.phase != working {
				continue
			}
			if err := p.batchNAR(ctx, it, sink); err != nil {
				if kuboSide != nil {
					return nil, kuboSide
				}
				it.fail(err)
				continue
			}
			roots = append(roots, it.root)
		}
		return roots, nil
	}, true)
	for _, it := range items {
		if it.phase != working {
			continue
		}
		switch msg, ok := pinned[it.root]; {
		case err != nil:
			it.fail(fmt.Errorf("add NAR of %s to IPFS: %w", it.info.Path, err))
		case !ok:
			it.fail(errs.Errorf(errs.Transient, "add NAR of %s to IPFS: dag import: root %s not reported pinned", it.info.Path, it.root))
		case msg != "":
			it.fail(errs.Errorf(errs.Transient, "add NAR of %s to IPFS: dag import: pin %s: %s", it.info.Path, it.root, msg))
		}
	}
	for _, it := range items {
		if it.phase != working && it.tmp != nil {
			it.tmp.Abort()
			it.tmp = nil
		}
	}
}

// batchNAR dumps it's NAR into memory, checks it against the store's
// record, writes it to a temp file in the cache (synced later, with the
// others: commitNARs), and hands its DAG's blocks to put.
func (p *Publisher) batchNAR(ctx context.Context, it *batchItem, put nardag.Sink) error {
	info := it.info
	buf := bytes.NewBuffer(make([]byte, 0, info.NarSize))
	// A path larger than its record is corrupt; it is not read further.
	if err := nar.DumpPath(&capWriter{w: buf, left: info.NarSize + 1}, info.Path); err != nil && !errors.Is(err, errOverCap) {
		return classifyIOErr(fmt.Errorf("dump NAR of %s: %w", info.Path, err))
	}
	sum := sha256.Sum256(buf.Bytes())
	narHash := "sha256:" + nixbase32.EncodeToString(sum[:])
	size := uint64(buf.Len())
	if narHash != info.NarHash || size != info.NarSize {
		return errs.Errorf(errs.Corrupt,
			"store path %s is corrupt: its NAR hashes to %s (%d bytes) but the store recorded %s (%d bytes); run nix-store --verify --check-contents",
			info.Path, narHash, size, info.NarHash, info.NarSize)
	}
	tmp, err := p.opt.Cache.CreateNAR()
	if err != nil {
		return errs.E(errs.Transient, fmt.Errorf("nar temp file: %w", err))
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Abort()
		return classifyIOErr(fmt.Errorf("write NAR of %s: %w", info.Path, err))
	}
	it.tmp = tmp
	root, err := nardag.Build(ctx, bytes.NewReader(buf.Bytes()), p.opt.Params.Chunker, refHashes(info), put)
	if err != nil {
		return fmt.Errorf("DAG of %s: %w", info.Path, err)
	}
	it.root = root
	it.ni = newNarInfo(info, cachedir.NarURL(narHash), narHash, size, root)
	return nil
}

// newNarInfo is the narinfo of a path whose NAR, hashing to narHash and
// of size bytes, is at url with CID c, with everything but the cache's
// signatures: the fields `nix copy --to file://...?compression=none`
// writes, and IPFSHash.
func newNarInfo(info *nixstore.PathInfo, url, narHash string, size uint64, c cid.Cid) *narinfo.NarInfo {
	ni := &narinfo.NarInfo{
		StorePath:   info.Path,
		URL:         url,
		Compression: "none",
		FileHash:    narHash,
		FileSize:    size,
		NarHash:     narHash,
		NarSize:     size,
		References:  baseNames(info.References),
		Sigs:        append([]string(nil), info.Sigs...),
		CA:          info.CA,
		IPFSHash:    c.String(),
	}
	if info.Deriver != "" {
		ni.Deriver = path.Base(info.Deriver)
	}
	return ni
}

// refHashes are the hash parts nix-refs chunking cuts around: the path's
// own and its references'.
func refHashes(info *nixstore.PathInfo) []string {
	hashes := make([]string, 0, len(info.References)+1)
	hashes = append(hashes, storepath.HashPart(info.Path))
	for _, ref := range info.References {
		hashes = append(hashes, storepath.HashPart(ref))
	}
	return hashes
}

// errOverCap is capWriter's error past its cap.
var errOverCap = errors.New("more bytes than the store recorded")

// capWriter writes to w until left bytes are written, then fails.
type capWriter struct {
	w    *bytes.Buffer
	left uint64
}

func (c *capWriter) Write(b []byte) (int, error) {
	if uint64(len(b)) > c.left {
		n, _ := c.w.Write(b[:c.left])
		c.left = 0
		return n, errOverCap
	}
	c.left -= uint64(len(b))
	return c.w.Write(b)
}

// commitNARs makes the working items' NARs durable in place, together.
func (p *Publisher) commitNARs(items []*batchItem) {
	var (
		its  []*batchItem
		tmps []*atomicfile.File
		urls []string
	)
	for _, it := range items {
		if it.phase == working {
			its, tmps, urls = append(its, it), append(tmps, it.tmp), append(urls, it.ni.URL)
		}
	}
	for i, err := range p.opt.Cache.CommitNARs(tmps, urls) {
		its[i].tmp = nil
		if err != nil {
			its[i].fail(fmt.Errorf("write NAR of %s: %w", its[i].info.Path, err))
		}
	}
}

// writeNarInfos signs the working items' narinfos and writes them,
// together. A path whose lease was lost meanwhile is left to its new
// holder.
func (p *Publisher) writeNarInfos(items []*batchItem) {
	var (
		its   []*batchItem
		hps   []string
		texts [][]byte
	)
	for _, it := range items {
		if it.phase != working {
			continue
		}
		if err := it.lctx.Err(); err != nil {
			it.fail(errs.E(errs.Transient, fmt.Errorf("%s: %w", it.info.Path, context.Cause(it.lctx))))
			continue
		}
		if err := it.ni.Sign(p.opt.Key); err != nil {
			it.fail(errs.E(errs.Invalid, fmt.Errorf("sign %s: %w", it.info.Path, err)))
			continue
		}
		if err := it.ni.SignCID(p.opt.Key); err != nil {
			it.fail(errs.E(errs.Invalid, fmt.Errorf("sign CID of %s: %w", it.info.Path, err)))
			continue
		}
		its, hps, texts = append(its, it), append(hps, it.hashPart), append(texts, []byte(it.ni.String()))
	}
	for i, err := range p.opt.Cache.WriteNarInfos(hps, texts) {
		if err != nil {
			its[i].fail(fmt.Errorf("write narinfo of %s: %w", its[i].info.Path, err))
		}
	}
}

// announceAll sends the working items' "published" events without
// waiting for each ack in turn, then waits for every ack, and records
// each acked one.
func (p *Publisher) announceAll(ctx context.Context, items []*batchItem) {
	type pending struct {
		it  *batchItem
		ack jetstream.PubAckFuture
	}
	var sent []pending
	for _, it := range items {
		if it.phase != working {
			continue
		}
		ev, err := p.eventFor(ctx, it.ni)
		if err != nil {
			it.fail(err)
			continue
		}
		it.ev = ev
		if p.js == nil {
			continue
		}
		data, err := events.Encode(ev)
		if err != nil {
			it.fail(err)
			continue
		}
		ack, err := p.js.PublishAsync(events.SubjectPublished, data, jetstream.WithMsgID(ev.ID))
		if err != nil {
			it.fail(errs.E(errs.Transient, fmt.Errorf("publish %s %s: %w", events.SubjectPublished, ev.ID, err)))
			continue
		}
		sent = append(sent, pending{it, ack})
	}
	for _, s := range sent {
		select {
		case <-s.ack.Ok():
			if err := p.opt.Cache.MarkAnnounced(s.it.hashPart, s.it.ev.CID); err != nil {
				p.log.Warn("cannot record announcement", zap.String("store_path", s.it.info.Path), zap.Error(err))
			}
			p.log.Info("published", zap.String("store_path", s.it.info.Path), zap.String("cid", s.it.ni.IPFSHash),
				zap.Uint64("nar_size", s.it.ni.NarSize), zap.Duration("took", time.Since(s.it.start)), zap.Bool("batch", true))
		case err := <-s.ack.Err():
			s.it.fail(errs.E(errs.Transient, fmt.Errorf("publish %s %s: %w", events.SubjectPublished, s.it.ev.ID, err)))
		case <-ctx.Done():
			s.it.fail(ctx.Err())
		}
	}
}
