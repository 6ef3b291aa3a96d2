// Package announce puts prune's "retired" events on the stream, a batch at
// a time: each event encoded and checked against its schema on every CPU,
// then published a thousand at a time, waiting for the stream's acks.
// A million paths retire in a year's first prune (issue 24), so this is
// CPU work worth spreading, and acks worth waiting for in windows rather
// than one by one.
package announce

import (
	"context"
	"fmt"
	"path"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
)

// Path is one retired store path, as its event says it.
type Path struct {
	StorePath string
	NarHash   string
	NarSize   int64
	CID       string
	Reason    string // cut to 1,000 bytes
}

// Window is how many events are unacknowledged at once at most: the
// client refuses more than its pending limit (4,000 by default).
const Window = 1000

// AckTimeout bounds the wait for one batch's acks.
const AckTimeout = time.Minute

// Retired publishes a "retired" event from host for each path and
// returns, per path, why its event was not stored (nil when it was).
func Retired(ctx context.Context, js jetstream.JetStream, host string, paths []Path) []error {
	errsOf := make([]error, len(paths))
	datas := make([][]byte, len(paths))
	ids := make([]string, len(paths))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(paths); i = int(next.Add(1) - 1) {
				p := paths[i]
				reason := p.Reason
				if len(reason) > 1000 {
					reason = reason[:1000] + "..."
				}
				ev := &events.Retired{Host: host, StoreDir: path.Dir(p.StorePath), StorePath: p.StorePath,
					NarHash: p.NarHash, NarSize: p.NarSize, CID: p.CID, Reason: reason}
				events.Seal(ev)
				datas[i], errsOf[i] = events.Encode(ev)
				ids[i] = ev.ID
			}
		}()
	}
	wg.Wait()
	futures := make([]jetstream.PubAckFuture, len(paths))
	dctx, cancel := context.WithTimeout(ctx, AckTimeout)
	defer cancel()
	for start := 0; start < len(paths); start += Window {
		end := min(start+Window, len(paths))
		for i := start; i < end; i++ {
			var err error
			if errsOf[i] == nil {
				futures[i], err = js.PublishAsync(events.SubjectRetired, datas[i], jetstream.WithMsgID(ids[i]))
			} else {
				err = errsOf[i]
			}
			if err != nil {
				errsOf[i] = fmt.Errorf("announce retirement of %s: %w", paths[i].StorePath, err)
			}
		}
		for i := start; i < end; i++ {
			f := futures[i]
			if f == nil {
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errsOf[i] = fmt.Errorf("announce retirement of %s: %w", paths[i].StorePath, err)
			case <-dctx.Done():
				errsOf[i] = fmt.Errorf("announce retirement of %s: no ack from the stream: %w", paths[i].StorePath, dctx.Err())
			}
		}
	}
	return errsOf
}
