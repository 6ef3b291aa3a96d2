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
	g.mu.Lock()
	if f, ok := g.calls[key]; ok {
		g.mu.Unlock()
		select {
		case <-f.done:
			return f.ev, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.calls == nil {
		g.calls = map[string]*flight{}
	}
	f := &flight{done: make(chan struct{})}
	g.calls[key] = f
	g.mu.Unlock()

	f.ev, f.err = fn()

	g.mu.Lock()
	delete(g.calls, key)
	g.mu.Unlock()
	close(f.done)
	return f.ev, f.err
}
