// Package mirrortest holds what the tests of the mirror and of the programs
// built on its Pinner share: an in-memory IPFS node and valid events. It is
// for unit tests of single functions; the proof against real kubo is in
// integration/mirror_test.go.
package mirrortest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// Node is an in-memory IPFS node. Its methods are safe for concurrent
// use; a test sets its fields before the code under test runs, and reads
// them after.
type Node struct {
	mu       sync.Mutex
	Identity ipfs.Node
	Content  map[string][]byte // what the network has, by CID
	PinSet   map[string]bool   // what is pinned, by CID
	Hang     map[string]bool   // Pin blocks until its context ends
	Down     bool              // every call fails as if kubo were unreachable
	ConnErr  error
	Connects int
	PinCalls int
	Unpins   []string
	GCRuns   int
}

// NewNode returns an empty node.
func NewNode() *Node {
	return &Node{
		Identity: ipfs.Node{PeerID: "12D3KooWSelf", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}},
		Content:  map[string][]byte{}, PinSet: map[string]bool{}, Hang: map[string]bool{},
	}
}

var errDown = errs.Errorf(errs.Transient, "kubo unreachable")

func (f *Node) Connect(ctx context.Context, n ipfs.Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Connects++
	return f.ConnErr
}

func (f *Node) Pin(ctx context.Context, c cid.Cid, name string) error {
	f.mu.Lock()
	f.PinCalls++
	hang, down := f.Hang[c.String()], f.Down
	_, have := f.Content[c.String()]
	f.mu.Unlock()
	if down {
		return errDown
	}
	if hang || !have {
		<-ctx.Done()
		return fmt.Errorf("pin %s: %w", c, ctx.Err())
	}
	f.mu.Lock()
	f.PinSet[c.String()] = true
	f.mu.Unlock()
	return nil
}

func (f *Node) IsPinned(ctx context.Context, c cid.Cid) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Down {
		return false, errDown
	}
	return f.PinSet[c.String()], nil
}

func (f *Node) Unpin(ctx context.Context, c cid.Cid) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.PinSet, c.String())
	f.Unpins = append(f.Unpins, c.String())
	return nil
}

func (f *Node) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.Content[c.String()]
	if !ok {
		return nil, errors.New("not found")
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *Node) Self(ctx context.Context) (ipfs.Node, error) { return f.Identity, nil }

func (f *Node) Pins(ctx context.Context) ([]cid.Cid, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cid.Cid
	for s := range f.PinSet {
		out = append(out, cid.MustParse(s))
	}
	return out, nil
}

func (f *Node) RepoGC(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.GCRuns++
	return nil
}

// Pinned reports whether c is pinned.
func (f *Node) Pinned(c string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.PinSet[c]
}

// Add puts data "on the network" and returns its CID.
func (f *Node) Add(data []byte) cid.Cid {
	h, _ := mh.Sum(data, mh.SHA2_256, -1)
	c := cid.NewCidV1(cid.Raw, h)
	f.mu.Lock()
	f.Content[c.String()] = data
	f.mu.Unlock()
	return c
}

// NixHash is data's NarHash.
func NixHash(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256:" + nixbase32.EncodeToString(s[:])
}

// StorePath returns a valid store path for name.
func StorePath(name string) string {
	s := sha256.Sum256([]byte(name))
	return "/nix/store/" + nixbase32.EncodeToString(s[:20]) + "-" + name
}

// Published returns a valid "published" event for data under name.
func Published(name string, c cid.Cid, data []byte) *events.Published {
	h := NixHash(data)
	ev := &events.Published{
		Host: "a", StoreDir: "/nix/store", StorePath: StorePath(name),
		NarHash: h, NarSize: int64(len(data)), References: []string{},
		CacheURL: "file:///cache", NarURL: "nar/" + h[len("sha256:"):] + ".nar", CID: c.String(),
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWPublisher", Addrs: []string{"/ip4/127.0.0.1/tcp/4002"}},
	}
	events.Seal(ev)
	return ev
}

// Retired returns a valid "retired" event for data under name.
func Retired(name string, c cid.Cid, data []byte) *events.Retired {
	ev := &events.Retired{Host: "a", StoreDir: "/nix/store", StorePath: StorePath(name), NarHash: NixHash(data),
		NarSize: int64(len(data)), CID: c.String(), Reason: "test"}
	events.Seal(ev)
	return ev
}

// PublishRaw puts e on the stream without a Nats-Msg-Id, so that a second
// publish of the same fact is stored again (as after the dedup window).
func PublishRaw(t testing.TB, js jetstream.JetStream, subject string, e events.Event) {
	t.Helper()
	data, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
}

// StreamJS starts an embedded NATS server with the event stream.
func StreamJS(t testing.TB) jetstream.JetStream {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	if _, err := events.EnsureStream(context.Background(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return js
}
