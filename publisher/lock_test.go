package publisher

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/lease"
)

// heldLocker says "held" for the first held calls, then grants the lease;
// onHeld runs at each refusal, as the other holder's progress would.
type heldLocker struct {
	held, calls int
	onHeld      func(call int)
}

func (l *heldLocker) Lock(ctx context.Context, key, sp string) (context.Context, func(), error) {
	l.calls++
	if l.calls <= l.held {
		if l.onHeld != nil {
			l.onHeld(l.calls)
		}
		return nil, nil, errs.E(errs.Transient, errors.Join(errors.New("being published by b/1"), lease.ErrHeld))
	}
	return ctx, func() {}, nil
}

// A path whose lease another publisher holds is waited for inside
// PublishPath, not failed back to the event's retry backoff; when the
// holder finishes, the path is found done and not published again.
func TestPublishWaitsOutAHeldLease(t *testing.T) {
	pub, st, fi, p := setup(t)
	other, err := New(Options{Cache: pub.opt.Cache, Key: pub.opt.Key, Params: pub.opt.Params}, st, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := &heldLocker{held: 3, onHeld: func(call int) {
		if call == 3 { // the holder finishes its publish
			if _, err := other.PublishPath(context.Background(), p); err != nil {
				t.Error(err)
			}
		}
	}}
	pub.opt.Locker = l
	if _, err := pub.PublishPath(context.Background(), p); err != nil {
		t.Fatalf("PublishPath while another publisher held the lease: %v", err)
	}
	if l.calls != 3 {
		t.Errorf("%d lease attempts, want 3 (then found done)", l.calls)
	}
	if n := fi.adds.Load(); n != 1 {
		t.Errorf("%d adds: the path was published again after its holder finished", n)
	}

	// Free after two refusals, nobody published it meanwhile: published here.
	os.Remove(pub.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
	pub.opt.Locker = &heldLocker{held: 2}
	if _, err := pub.PublishPath(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if n := fi.adds.Load(); n != 2 {
		t.Errorf("%d adds, want 2", n)
	}

	// Held for good: the wait ends with the context, not with an error
	// that would count against the event's attempts.
	os.Remove(pub.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
	pub.opt.Locker = &heldLocker{held: 1 << 30}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := pub.PublishPath(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's", err)
	}
}
