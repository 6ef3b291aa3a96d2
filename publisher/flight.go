package publisher

import (
	"context"
	"sync"

	"github.com/nix-ipfs/nix-ipfs/events"
)

// flights shares one publish of a store path among the callers that ask
// for it while it runs (two events whose closures share a path).
//
// It is golang.org/x/sync/singleflight's Do but for one thing: a caller
// whose context ends stops waiting (its event is being given up) while the
// publish goes on for the others. singleflight offers that only through
// DoChan, which runs every publish on a goroutine nobody waits for; here
// the first caller runs it on its own goroutine.
type flights struct {
	mu    sync.Mutex
	calls map[string]*flight
}

type flight struct {
	done chan struct{} // closed when ev and err are set
	ev   *events.Published
	err  error
}

// do runs fn for key, or waits for the run already under way and returns
// its result.
func (g *flights) do(ctx context.Context, key string, fn func() (*events.Published, error)) (*events.Published, error) {
	f, mine := g.begin(key)
	if !mine {
		return f.wait(ctx)
	}
	ev, err := fn()
	g.end(key, f, ev, err)
	return ev, err
}

// begin registers a run for key by the caller, who must end it; or, if
// one is under way, returns it with mine false.
func (g *flights) begin(key string) (f *flight, mine bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.calls[key]; ok {
		return f, false
	}
	if g.calls == nil {
		g.calls = map[string]*flight{}
	}
	f = &flight{done: make(chan struct{})}
	g.calls[key] = f
	return f, true
}

// end records the result of the run begin registered and wakes its
// waiters.
func (g *flights) end(key string, f *flight, ev *events.Published, err error) {
	f.ev, f.err = ev, err
	g.mu.Lock()
	delete(g.calls, key)
	g.mu.Unlock()
	close(f.done)
}

// wait returns the run's result once it ends, or ctx's error first.
func (f *flight) wait(ctx context.Context) (*events.Published, error) {
	select {
	case <-f.done:
		return f.ev, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
