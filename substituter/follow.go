package substituter

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/substituter/spool"
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

// followSpool answers a request for e's NAR, whose CID is trusted, while
// e is still being read: see the comment at the top of this file.
func (s *Server) followSpool(w http.ResponseWriter, r *http.Request, log *zap.Logger, e *spool.Entry[*narRef], start time.Time) {
	size := int64(e.Ref.narSize)
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
		n, grew := e.Progress.State()
		done := false
		select {
		case <-e.Done():
			done = true
		default:
		}
		if done && e.Err != nil {
			if rs == nil {
				// Nothing sent: the request goes on, to upstream.
				s.proxyNar(w, r, log, e.Ref, s.ipfsFailed(log, e.Err), start)
				return
			}
			if holdsOtherBytes(e.Err) {
				log.Error("trusted CID does not hold its NAR; connection cut", zap.String("reason", reasonOf(e.Err)), zap.Int64("sent", sent), zap.Error(e.Err))
			} else {
				log.Warn("NAR transfer failed; connection cut", zap.String("reason", reasonOf(e.Err)), zap.Int64("sent", sent), zap.Error(e.Err))
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
				if rs, err = e.Progress.Open(size); err != nil {
					// The read failed as we looked: its end says why.
					<-e.Done()
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
		case <-e.Done():
		case <-r.Context().Done():
			log.Debug("client went away while the NAR was read from IPFS", zap.Error(r.Context().Err()))
			return
		}
	}
	s.narDone(log.With(zap.Bool("streamed", streamed), zap.Int64("upstream_bytes", e.UpstreamBytes), zap.Duration("ipfs_took", e.Took)),
		SourceIPFS, "", cw.n, start, cw.ttfb)
}
