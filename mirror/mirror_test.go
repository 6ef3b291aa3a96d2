package mirror

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/mirror/mirrortest"
)

func TestPinIsIdempotentAndAnnouncesNothingWithoutJS(t *testing.T) {
	node := mirrortest.NewNode()
	data := []byte("nar bytes")
	c := node.Add(data)
	it, err := FromPublished(mirrortest.Published("a", c, data))
	if err != nil {
		t.Fatal(err)
	}
	p := NewPinner(node, PinnerOptions{Verify: true, PinTimeout: time.Second})
	r, err := p.Pin(context.Background(), it)
	if err != nil || !r.Fresh || !r.Verified || r.Event != nil {
		t.Fatalf("first pin: %+v, %v", r, err)
	}
	r, err = p.Pin(context.Background(), it)
	if err != nil || r.Fresh || !r.Verified {
		t.Fatalf("second pin: %+v, %v", r, err)
	}
	if node.PinCalls != 1 {
		t.Errorf("%d pin calls, want 1: an already pinned CID is not pinned again", node.PinCalls)
	}
	if node.Connects != 1 {
		t.Errorf("%d connects, want 1", node.Connects)
	}
}

func TestPinConnectFailureIsNotFatal(t *testing.T) {
	node := mirrortest.NewNode()
	node.ConnErr = errs.Errorf(errs.Transient, "no route")
	data := []byte("x")
	c := node.Add(data)
	it, _ := FromPublished(mirrortest.Published("a", c, data))
	if _, err := NewPinner(node, PinnerOptions{}).Pin(context.Background(), it); err != nil {
		t.Fatalf("pin with an unreachable publisher: %v", err)
	}
}

// A CID nobody has runs into the pin timeout, and that must not be
// Transient, or the mirror would retry it for ever.
func TestPinTimeoutIsNotTransient(t *testing.T) {
	node := mirrortest.NewNode()
	data := []byte("nobody has this")
	h, _ := cid.Decode(node.Add(data).String())
	delete(node.Content, h.String())
	it, _ := FromPublished(mirrortest.Published("gone", h, data))
	_, err := NewPinner(node, PinnerOptions{PinTimeout: 50 * time.Millisecond}).Pin(context.Background(), it)
	if err == nil {
		t.Fatal("pin of a missing CID succeeded")
	}
	if k := errs.KindOf(err); k != errs.NotYet {
		t.Errorf("timeout has kind %v, want not_yet: %v", k, err)
	}
	if !strings.Contains(err.Error(), "pin timeout") {
		t.Errorf("error does not say why: %v", err)
	}
}

func TestPinUnreachableKuboIsTransient(t *testing.T) {
	node := mirrortest.NewNode()
	node.Down = true
	data := []byte("y")
	it, _ := FromPublished(mirrortest.Published("a", node.Add(data), data))
	_, err := NewPinner(node, PinnerOptions{}).Pin(context.Background(), it)
	if !errs.Is(err, errs.Transient) {
		t.Errorf("kubo down: %v (kind %v), want transient", err, errs.KindOf(err))
	}
}

func TestVerifyMismatchIsCorruptAndUnpins(t *testing.T) {
	node := mirrortest.NewNode()
	data := []byte("the real bytes")
	c := node.Add(data)
	ev := mirrortest.Published("a", c, []byte("what was signed"))
	it, _ := FromPublished(ev)
	_, err := NewPinner(node, PinnerOptions{Verify: true}).Pin(context.Background(), it)
	if !errs.Is(err, errs.Corrupt) {
		t.Fatalf("mismatch: %v (kind %v), want corrupt", err, errs.KindOf(err))
	}
	if node.Pinned(c.String()) || len(node.Unpins) != 1 {
		t.Errorf("corrupt CID still pinned (unpins %v)", node.Unpins)
	}
	// Same hash, wrong size.
	it.NarHash = mirrortest.NixHash(data)
	it.NarSize = int64(len(data)) - 1
	if _, err := NewPinner(node, PinnerOptions{Verify: true}).Pin(context.Background(), it); !errs.Is(err, errs.Corrupt) {
		t.Errorf("size mismatch: %v", err)
	}
}

func TestBackoffFlag(t *testing.T) {
	var b Backoff
	if err := b.Set("1s, 500ms,2m"); err != nil {
		t.Fatal(err)
	}
	if b.String() != "1s,500ms,2m0s" {
		t.Errorf("String() = %q", b.String())
	}
	for _, bad := range []string{"", "1s,x", "-1s", "0s"} {
		if err := b.Set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"b", "mirror_2", "eu-west-1"} {
		if err := ValidateName("--name", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "x>", strings.Repeat("a", 65)} {
		if err := ValidateName("--name", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateAnnounce(t *testing.T) {
	if err := ValidateAnnounce([]string{"/dns4/b.example.org/tcp/4001", "/ip6/2a01:4f8::1/udp/4001/quic-v1"}); err != nil {
		t.Error(err)
	}
	for _, bad := range [][]string{{"b.example.org:4001"}, {"/ip4/1.2.3.4/tcp/4001/p2p/12D3KooWCMpDvrSw6GVYQ85Pk12ztqRM247pZddW6c8VQz36xAff"}} {
		if err := ValidateAnnounce(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
