package unixfs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	format "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

type mapSource map[cid.Cid][]byte

func (m mapSource) Block(_ context.Context, c cid.Cid) ([]byte, error) {
	if b, ok := m[c]; ok {
		return b, nil
	}
	return nil, ErrNotLocal
}
func (m mapSource) Checks() Check  { return CheckNone }
func (m mapSource) String() string { return "map" }

// fetcher records the leaves asked for; the first request for hang waits
// until it is cancelled, as a want bitswap leaves unanswered does.
type fetcher struct {
	mu    sync.Mutex
	order []cid.Cid
	hang  cid.Cid
	hung  bool
}

func (f *fetcher) Fetch(ctx context.Context, c cid.Cid) error {
	f.mu.Lock()
	f.order = append(f.order, c)
	hang := c == f.hang && !f.hung
	if hang {
		f.hung = true
	}
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// twoLevelFile is a root over two inner nodes over n raw leaves each.
func twoLevelFile(t *testing.T, n int) (cid.Cid, mapSource, []cid.Cid) {
	src := mapSource{}
	var leaves []cid.Cid
	root := merkledag.NodeWithData([]byte{0x08, 0x02})
	for i := 0; i < 2; i++ {
		inner := merkledag.NodeWithData([]byte{0x08, 0x02})
		for j := 0; j < n; j++ {
			h, _ := mh.Sum([]byte(fmt.Sprint(i, j)), mh.SHA2_256, -1)
			l := cid.NewCidV1(cid.Raw, h)
			leaves = append(leaves, l)
			if err := inner.AddRawLink(fmt.Sprint(j), &format.Link{Cid: l}); err != nil {
				t.Fatal(err)
			}
		}
		src[inner.Cid()] = inner.RawData()
		if err := root.AddNodeLink(fmt.Sprint(i), inner); err != nil {
			t.Fatal(err)
		}
	}
	src[root.Cid()] = root.RawData()
	return root.Cid(), src, leaves
}

func TestWarmFetchesEveryLeafOnce(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 50)
	f := &fetcher{}
	w := &Warmer{Parallel: 4, Stall: time.Hour}
	st, err := w.Warm(context.Background(), src, f, nil, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 3+len(leaves) || st.Fetched != len(leaves) || st.Retries != 0 {
		t.Errorf("stats %+v, want %d blocks, %d fetched", st, 3+len(leaves), len(leaves))
	}
	seen := map[cid.Cid]int{}
	inOrder := true
	for i, c := range f.order {
		seen[c]++
		if c != leaves[i] {
			inOrder = false
		}
	}
	for _, l := range leaves {
		if seen[l] != 1 {
			t.Errorf("leaf %s asked for %d times", l, seen[l])
		}
	}
	if inOrder {
		// 100! orders: the walk's own order by chance is not a worry.
		t.Error("leaves asked for in the file's order, not a random one")
	}
}

func TestWarmSkipsHeldLeaves(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 5)
	f := &fetcher{}
	held := haver{leaves[0]: true, leaves[7]: true}
	st, err := (&Warmer{Parallel: 2, Stall: time.Hour}).Warm(context.Background(), src, f, held, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Fetched != len(leaves)-2 || len(f.order) != len(leaves)-2 {
		t.Errorf("fetched %d (%d asked), want %d", st.Fetched, len(f.order), len(leaves)-2)
	}
}

type haver map[cid.Cid]bool

func (h haver) Has(c cid.Cid) bool { return h[c] }

// A leaf whose request hangs is asked again once nothing else arrives.
func TestWarmAsksAgainForAStalledLeaf(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 3)
	f := &fetcher{hang: leaves[4]}
	st, err := (&Warmer{Parallel: 8, Stall: 20 * time.Millisecond}).Warm(context.Background(), src, f, nil, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries != 1 || len(f.order) != len(leaves)+1 {
		t.Errorf("stats %+v, %d requests; want 1 retry, %d requests", st, len(f.order), len(leaves)+1)
	}
}

func TestWarmStopsOnAMissingNode(t *testing.T) {
	root, src, _ := twoLevelFile(t, 3)
	for c := range src {
		if c != root {
			delete(src, c)
			break
		}
	}
	if _, err := (&Warmer{Parallel: 2, Stall: time.Hour}).Warm(context.Background(), src, &fetcher{}, nil, root, nil); err == nil {
		t.Error("no error for a node the source lacks")
	}
}

// The stall rule, by a clock the test moves.
func TestStallTracker(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	tr := newStallTracker(time.Second, 2, clock)
	nop := func() {}
	old := tr.begin(nop)
	now = now.Add(500 * time.Millisecond)
	if len(tr.stalledNow()) != 0 {
		t.Fatal("stalled before its time")
	}
	// Others answered, but fewer than overtake, and recently: a slow
	// link, where each waits its turn.
	tr.end(tr.begin(nop), true)
	now = now.Add(600 * time.Millisecond)
	if len(tr.stalledNow()) != 0 {
		t.Fatal("stalled while one later request was answered")
	}
	tr.end(tr.begin(nop), true)
	if got := tr.stalledNow(); len(got) != 1 || got[0] != old {
		t.Fatalf("overtaken by 2, not stalled: %v", got)
	}
	if len(tr.stalledNow()) != 0 {
		t.Fatal("marked twice")
	}
	if !tr.end(old, false) || tr.retries() != 1 {
		t.Fatal("a cancelled stalled request is not reported as one")
	}
	// Nothing answered for a whole stall: every old request is stalled.
	a, b := tr.begin(nop), tr.begin(nop)
	now = now.Add(2 * time.Second)
	if len(tr.stalledNow()) != 2 {
		t.Fatal("quiet source: requests not stalled")
	}
	// One that is answered after all is not counted as retried.
	if !tr.end(a, true) {
		t.Fatal("a was marked")
	}
	tr.end(b, false)
	if tr.retries() != 2 {
		t.Fatalf("retries %d, want 2", tr.retries())
	}
}

// listFetcher is a ListFetcher over a set of held blocks: a list's
// blocks become held in order; the first list to reach hang waits there
// until it is cancelled (the blocks after it arriving meanwhile, as
// bitswap's do), and with fail set every list fails at once.
type listFetcher struct {
	fetcher
	held  map[cid.Cid]bool
	lists [][]cid.Cid
	fail  bool
}

func (f *listFetcher) Has(c cid.Cid) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[c]
}

func (f *listFetcher) Fetch(ctx context.Context, c cid.Cid) error {
	if err := f.fetcher.Fetch(ctx, c); err != nil {
		return err
	}
	f.mu.Lock()
	f.held[c] = true
	f.mu.Unlock()
	return nil
}

func (f *listFetcher) FetchList(ctx context.Context, list []cid.Cid, got func(int)) error {
	f.mu.Lock()
	f.lists = append(f.lists, append([]cid.Cid(nil), list...))
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return fmt.Errorf("refused")
	}
	for i, c := range list {
		f.mu.Lock()
		hang := c == f.hang && !f.hung
		if hang {
			f.hung = true
			// What comes after the stuck block arrives meanwhile.
			for _, l := range list[i+1:] {
				f.held[l] = true
			}
		}
		f.mu.Unlock()
		if hang {
			<-ctx.Done()
			return ctx.Err()
		}
		f.mu.Lock()
		f.held[c] = true
		f.mu.Unlock()
		got(i)
	}
	return nil
}

func TestWarmFetchesLeavesAsOneShuffledList(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 50)
	f := &listFetcher{held: map[cid.Cid]bool{leaves[7]: true}}
	w := &Warmer{Parallel: 4, Stall: time.Hour}
	var progress atomic.Int64
	st, err := w.Warm(context.Background(), src, f, f, root, func() { progress.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if len(f.lists) != 1 || len(f.order) != 0 {
		t.Fatalf("%d lists and %d single requests, want one list", len(f.lists), len(f.order))
	}
	list := f.lists[0]
	if len(list) != len(leaves)-1 || st.Fetched != len(list) || st.Blocks != len(leaves)+3 {
		t.Fatalf("list of %d, stats %+v; want the %d leaves not held", len(list), st, len(leaves)-1)
	}
	inOrder := 0
	for i, c := range list {
		if c == leaves[7] {
			t.Fatal("a held leaf was asked for")
		}
		if j := slices.Index(leaves, c); i > 0 && j > 0 && list[i-1] == leaves[j-1] {
			inOrder++
		}
	}
	if inOrder > len(list)/2 {
		t.Errorf("%d of %d leaves follow their predecessor: the list is not shuffled", inOrder, len(list))
	}
	for _, l := range leaves {
		if !f.Has(l) {
			t.Fatalf("leaf %s not held", l)
		}
	}
	if n := progress.Load(); n != int64(3+len(list)) {
		t.Errorf("progress called %d times, want %d", n, 3+len(list))
	}
}

func TestWarmListStalledIsMadeAgainWithWhatIsMissing(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 50)
	f := &listFetcher{held: map[cid.Cid]bool{}}
	f.hang = leaves[20]
	w := &Warmer{Parallel: 4, Stall: 40 * time.Millisecond}
	st, err := w.Warm(context.Background(), src, f, f, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.lists) != 2 || st.Retries != 1 {
		t.Fatalf("%d lists, %d retries; want the stalled list made again once", len(f.lists), st.Retries)
	}
	first, second := f.lists[0], f.lists[1]
	at := slices.Index(first, leaves[20])
	if len(second) != 1 || second[0] != leaves[20] {
		t.Fatalf("second list %v, want only the stuck leaf (the %d after it arrived meanwhile, the %d before it in order)", second, len(first)-at-1, at)
	}
	for _, l := range leaves {
		if !f.Has(l) {
			t.Fatalf("leaf %s not held", l)
		}
	}
}

func TestWarmListRefusedFallsBackToBlocks(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 50)
	f := &listFetcher{held: map[cid.Cid]bool{}, fail: true}
	w := &Warmer{Parallel: 4, Stall: time.Hour}
	st, err := w.Warm(context.Background(), src, f, f, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ListErr == nil {
		t.Error("the refused list's error is not in the stats")
	}
	if len(f.lists) != 1 || len(f.order) != len(leaves) {
		t.Fatalf("%d lists, %d single requests; want the refused list's %d leaves asked one by one", len(f.lists), len(f.order), len(leaves))
	}
	for _, l := range leaves {
		if !f.Has(l) {
			t.Fatalf("leaf %s not held", l)
		}
	}
}

func TestWarmFewLeavesListsDeclinedOrNoHaverAskBlockByBlock(t *testing.T) {
	root, src, leaves := twoLevelFile(t, (MinList-1)/2)
	f := &listFetcher{held: map[cid.Cid]bool{}}
	w := &Warmer{Parallel: 4, Stall: time.Hour}
	if _, err := w.Warm(context.Background(), src, f, f, root, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.lists) != 0 || len(f.order) != len(leaves) {
		t.Fatalf("%d leaves: %d lists, %d single requests; want no list under MinList", len(leaves), len(f.lists), len(f.order))
	}
	// Lists declined (a fleet's client on a LAN): no list.
	root, src, leaves = twoLevelFile(t, 50)
	f = &listFetcher{held: map[cid.Cid]bool{}}
	w = &Warmer{Parallel: 4, Stall: time.Hour, Lists: func() bool { return false }}
	if _, err := w.Warm(context.Background(), src, f, f, root, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.lists) != 0 || len(f.order) != len(leaves) {
		t.Fatalf("lists declined: %d lists, %d single requests; want none", len(f.lists), len(f.order))
	}
	w = &Warmer{Parallel: 4, Stall: time.Hour}
	// Without a Haver, a stalled list could not tell what came: no list.
	root, src, leaves = twoLevelFile(t, 50)
	f = &listFetcher{held: map[cid.Cid]bool{}}
	if _, err := w.Warm(context.Background(), src, f, nil, root, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.lists) != 0 || len(f.order) != len(leaves) {
		t.Fatalf("no Haver: %d lists, %d single requests; want none", len(f.lists), len(f.order))
	}
}

// slowHeadFetcher holds a list's first block back while the others come,
// one every tick, then names them all in order, as kubo's refs does when
// one want is slow to be answered.
type slowHeadFetcher struct {
	listFetcher
	tick         time.Duration
	progress     *atomic.Int64
	beforeHeadAt int64 // progress reports before the first block was named
}

func (f *slowHeadFetcher) FetchList(ctx context.Context, list []cid.Cid, got func(int)) error {
	f.mu.Lock()
	f.lists = append(f.lists, list)
	f.mu.Unlock()
	for _, c := range list[1:] {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.tick):
		}
		f.mu.Lock()
		f.held[c] = true
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.held[list[0]] = true
	f.mu.Unlock()
	// The ticker's last look may not have found the last blocks yet.
	f.beforeHeadAt = f.progress.Load()
	for i := range list {
		got(i)
	}
	return nil
}

// TestWarmListReportsBlocksThatCameOutOfOrder: blocks that come while the
// list's first waits are reported as they come (a fleet's client falls
// back to the mirrors when nothing seems to come), and a first block that
// waits while the others keep coming is not a stall.
func TestWarmListReportsBlocksThatCameOutOfOrder(t *testing.T) {
	root, src, leaves := twoLevelFile(t, 10)
	var progress atomic.Int64
	f := &slowHeadFetcher{listFetcher: listFetcher{held: map[cid.Cid]bool{}}, tick: 15 * time.Millisecond, progress: &progress}
	// The first block comes after 19 ticks (285 ms), more than the stall;
	// a block comes every tick meanwhile.
	w := &Warmer{Parallel: 4, Stall: 100 * time.Millisecond}
	st, err := w.Warm(context.Background(), src, f, f, root, func() { progress.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries != 0 || len(f.lists) != 1 {
		t.Fatalf("%d retries, %d lists: a list whose blocks keep coming was made again", st.Retries, len(f.lists))
	}
	// 3 nodes with links, then the leaves: most of the 19 that came
	// before the first must have been reported before it was named.
	if n := f.beforeHeadAt - 3; n < 10 {
		t.Errorf("%d of the 19 blocks that came before the list's first were reported before it was named", n)
	}
	if n := progress.Load(); n != int64(3+len(leaves)) {
		t.Errorf("progress called %d times, want once a block: %d", n, 3+len(leaves))
	}
}
