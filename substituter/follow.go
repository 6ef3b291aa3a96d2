package substituter

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Following a read. A NAR whose CID is trusted (trust.go) is still read
// once, into a spool file, hashed on the way, like any other; but its
// requests do not wait for the end of that read. They follow the file as
// it fills, each sending what has been written so far with sendfile, less
// the last holdBack bytes, which go out only once the whole has matched
// NarSize and NarHash. So:
//
//   - a trusted CID is read ahead from its narinfo like any other, and
//     its request starts from whatever is already there;
//   - the read from IPFS never waits for the client: the spool file is
//     the buffer between kubo and Nix, and the bytes reach the socket
//     without another copy through user space;
//   - the NAR is in the spool when the response ends, kept for the next
//     request like any NAR read whole first;
//   - a read that fails half-way continues from upstream (fetchIPFS), so
//     a follower only ever sees the NAR's bytes, or the read's end.
//
// A CID that turns out to hold other bytes is found out at the end of the
// read: a request that had sent nothing yet gets the upstream NAR; one
// that had sent bytes is cut short of Content-Length (no Accept-Ranges
// was sent, so Nix cannot resume it), and the client never holds the
// whole of a wrong NAR.

// holdBack is how much of a followed read is kept from the client until
// the whole NAR has matched.
const holdBack = copyBuf

// readProgress is how far a spool file has been written, for the requests
// that follow it.
type readProgress struct {
	mu   sync.Mutex
	f    *os.File // the spool file; nil before it exists and after a failed read
	n    int64
	grew chan struct{} // closed, and replaced, at every write
}

func newReadProgress() *readProgress {
	return &readProgress{grew: make(chan struct{})}
}

func (p *readProgress) started(f *os.File) {
	p.mu.Lock()
	p.f = f
	p.mu.Unlock()
}

func (p *readProgress) wrote(n int) {
	p.mu.Lock()
	p.n += int64(n)
	close(p.grew)
	p.grew = make(chan struct{})
	p.mu.Unlock()
}

// failed closes the file of a read that failed. Under the lock, so that
// no follower reopens its descriptor number after it is closed.
func (p *readProgress) failed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// state is how many bytes are in the file, and a channel closed when there
// are more.
func (p *readProgress) state() (int64, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.grew
}

var errNoSpoolFile = errors.New("the spool file is gone")

// open returns a reader of the spool file, of size bytes once whole, of
// its own (see reopen).
func (p *readProgress) open(size int64) (io.ReadSeekCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return nil, errNoSpoolFile
	}
	return reopen(p.f, size)
}

// followSpool answers a request for e's NAR, whose CID is trusted, while
// e is still being read: see the comment at the top of this file.
func (s *Server) followSpool(w http.ResponseWriter, r *http.Request, log *zap.Logger, e *spoolEntry, start time.Time) {
	size := int64(e.ref.narSize)
	cw := &countingWriter{ResponseWriter: w, start: start}
	var rs io.ReadSeekCloser // our own reader of the file, once a byte is to go out
	defer func() {
		if rs != nil {
			rs.Close()
		}
	}()
	streamed := false // the response began before the read ended
	var sent int64
	for {
		n, grew := e.progress.state()
		done := false
		select {
		case <-e.done:
			done = true
		default:
		}
		if done && e.err != nil {
			if rs == nil {
				// Nothing sent: the request goes on, to upstream.
				s.proxyNar(w, r, log, e.ref, s.ipfsFailed(log, e.err), start)
				return
			}
			if holdsOtherBytes(e.err) {
				log.Error("trusted CID does not hold its NAR; connection cut", zap.String("reason", reasonOf(e.err)), zap.Int64("sent", sent), zap.Error(e.err))
			} else {
				log.Warn("NAR transfer failed; connection cut", zap.String("reason", reasonOf(e.err)), zap.Int64("sent", sent), zap.Error(e.err))
			}
			s.m.nars.WithLabelValues(SourceNone, ReasonIPFSError).Inc()
			panic(http.ErrAbortHandler)
		}
		upto := n - holdBack
		if done {
			upto = size
		}
		if upto > sent {
			if rs == nil {
				var err error
				if rs, err = e.progress.open(size); err != nil {
					// The read failed as we looked: its end says why.
					<-e.done
					continue
				}
				streamed = !done
				w.Header().Set("Content-Type", narContentType)
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
				cw.WriteHeader(http.StatusOK)
			}
			if _, err := rs.Seek(sent, io.SeekStart); err != nil {
				log.Warn("NAR transfer failed; connection cut", zap.Error(err))
				panic(http.ErrAbortHandler)
			}
			// An *os.File under a LimitedReader: sendfile.
			m, err := io.CopyN(cw, rs, upto-sent)
			sent += m
			if err != nil {
				log.Debug("client went away while the NAR was sent", zap.Int64("sent", sent), zap.Error(err))
				return
			}
			if sent == size {
				break
			}
			continue
		}
		select {
		case <-grew:
		case <-e.done:
		case <-r.Context().Done():
			log.Debug("client went away while the NAR was read from IPFS", zap.Error(r.Context().Err()))
			return
		}
	}
	s.narDone(log.With(zap.Bool("streamed", streamed), zap.Int64("upstream_bytes", e.upstreamBytes), zap.Duration("ipfs_took", e.took)),
		SourceIPFS, "", cw.n, start, cw.ttfb)
}
