package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// fakeNode is an in-memory IPFS node for unit tests of single functions;
// the proof against real kubo is in integration/mirror_test.go.
type fakeNode struct {
	mu       sync.Mutex
	self     ipfs.Node
	content  map[string][]byte // what the network has, by CID
	pins     map[string]bool
	hang     map[string]bool // Pin blocks until its context ends
	down     bool            // every call fails as if kubo were unreachable
	connErr  error
	connects int
	pinCalls int
	unpins   []string
	gcRuns   int
}

func newFakeNode() *fakeNode {
	return &fakeNode{
		self:    ipfs.Node{PeerID: "12D3KooWSelf", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}},
		content: map[string][]byte{}, pins: map[string]bool{}, hang: map[string]bool{},
	}
}

var errDown = errs.Errorf(errs.Transient, "kubo unreachable")

func (f *fakeNode) Connect(ctx context.Context, n ipfs.Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.connects++
	return f.connErr
}

func (f *fakeNode) Pin(ctx context.Context, c cid.Cid, name string) error {
	f.mu.Lock()
	f.pinCalls++
	hang, down := f.hang[c.String()], f.down
	_, have := f.content[c.String()]
	f.mu.Unlock()
	if down {
		return errDown
	}
	if hang || !have {
		<-ctx.Done()
		return fmt.Errorf("pin %s: %w", c, ctx.Err())
	}
	f.mu.Lock()
	f.pins[c.String()] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeNode) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false, errDown
	}
	return f.pins[c.String()], nil
}

func (f *fakeNode) Unpin(ctx context.Context, c cid.Cid) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pins, c.String())
	f.unpins = append(f.unpins, c.String())
	return nil
}

func (f *fakeNode) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.content[c.String()]
	if !ok {
		return nil, errors.New("not found")
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeNode) Self(ctx context.Context) (ipfs.Node, error) { return f.self, nil }

func (f *fakeNode) Pins(ctx context.Context) ([]cid.Cid, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cid.Cid
	for s := range f.pins {
		out = append(out, cid.MustParse(s))
	}
	return out, nil
}

func (f *fakeNode) RepoGC(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcRuns++
	return nil
}

func (f *fakeNode) pinned(c string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pins[c]
}

// add puts data "on the network" and returns its CID.
func (f *fakeNode) add(data []byte) cid.Cid {
	h, _ := mh.Sum(data, mh.SHA2_256, -1)
	c := cid.NewCidV1(cid.Raw, h)
	f.mu.Lock()
	f.content[c.String()] = data
	f.mu.Unlock()
	return c
}

func nixHash(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + nixbase32.EncodeToString(s[:])
}

// storePath returns a valid store path for name.
func storePath(name string) string {
	s := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(s[:20]) + "-" + name
}

// published returns a valid "published" event for data under name.
func published(name string, c cid.Cid, data []byte) *events.Published {
	h := nixHash(data)
	ev := &events.Published{
		Host: "a", StoreDir: "/nix/store", StorePath: storePath(name),
		NarHash: h, NarSize: int64(len(data)), References: []string{},
		CacheURL: "file:///cache", NarURL: "nar/" + h[len("sha256:"):] + ".nar", CID: c.String(),
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWPublisher", Addrs: []string{"/ip4/127.0.0.1/tcp/4002"}},
	}
	events.Seal(ev)
	return ev
}
