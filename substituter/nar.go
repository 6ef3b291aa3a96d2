package substituter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"
)

const narContentType = "application/x-nix-nar"

func (s *Server) serveNar(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key := r.URL.Path
	ref, known := s.nars.get(key, time.Time{})
	if !known {
		ref, known = s.resolveNar(r.Context(), key)
	}
	log := s.log.With(zap.String("url", key))
	if !known {
		s.proxyNar(w, r, log, nil, ReasonUnknownNarinfo, start)
		return
	}
	log = log.With(zap.String("store_path", ref.storePath))
	switch {
	case ref.compression != "none":
		s.proxyNar(w, r, log, ref, ReasonCompressed, start)
		return
	case ref.ipfsHash == "":
		s.proxyNar(w, r, log, ref, ReasonNoIPFSHash, start)
		return
	}
	log = log.With(zap.String("cid", ref.ipfsHash))
	if r.Method == http.MethodHead {
		// The narinfo already says what a GET would return; fetching
		// the NAR to answer a HEAD would cost the whole transfer.
		w.Header().Set("Content-Type", narContentType)
		w.Header().Set("Content-Length", strconv.FormatUint(ref.narSize, 10))
		w.WriteHeader(http.StatusOK)
		return
	}

	c, err := cid.Decode(ref.ipfsHash)
	if err != nil {
		s.ipfsFailed(log, ReasonInvalidCID, err)
		s.proxyNar(w, r, log, ref, ReasonInvalidCID, start)
		return
	}
	size := int64(ref.narSize)
	if !s.spool.acquire(size) {
		s.ipfsFailed(log, ReasonSpoolFull, fmt.Errorf("%d bytes would exceed the spool budget of %d", size, s.opts.MaxSpoolBytes))
		s.proxyNar(w, r, log, ref, ReasonSpoolFull, start)
		return
	}
	defer s.spool.release(size)

	f, reason, err := s.fetchIPFS(r.Context(), c, ref)
	if r.Context().Err() != nil {
		if f != nil {
			f.Close()
		}
		log.Debug("client went away while the NAR was read from IPFS", zap.Error(r.Context().Err()))
		return
	}
	if err != nil {
		s.ipfsFailed(log, reason, err)
		s.proxyNar(w, r, log, ref, reason, start)
		return
	}
	defer f.Close()
	// Verified: now, and only now, a response. ServeContent answers
	// Range requests (Nix resumes interrupted downloads with one) and sets
	// Content-Length, which is NarSize.
	w.Header().Set("Content-Type", narContentType)
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, f)
	s.narDone(log, SourceIPFS, "", cw.n, start)
}

func (s *Server) ipfsFailed(log *zap.Logger, reason string, err error) {
	s.m.ipfsFailures.WithLabelValues(reason).Inc()
	log.Warn("NAR not served from IPFS; falling back to upstream", zap.String("reason", reason), zap.Error(err))
}

func (s *Server) narDone(log *zap.Logger, source, reason string, n int64, start time.Time) {
	s.m.nars.WithLabelValues(source, reason).Inc()
	if n > 0 {
		s.m.narBytes.WithLabelValues(source).Add(float64(n))
	}
	fields := []zap.Field{zap.String("source", source), zap.Int64("bytes", n), zap.Duration("took", time.Since(start))}
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	log.Info("NAR served", fields...)
}

// fetchIPFS reads c into an unlinked spool file, checking it against ref.
// On success the file is positioned at its start; otherwise reason says why
// not (a Reason* constant).
func (s *Server) fetchIPFS(ctx context.Context, c cid.Cid, ref *narRef) (_ *os.File, reason string, _ error) {
	wd := newWatchdog(ctx, s.opts.IPFSTimeout)
	defer wd.stop()
	fail := func(err error) (*os.File, string, error) {
		switch {
		case wd.stalled():
			return nil, ReasonTimeout, fmt.Errorf("ipfs %s: %w", c, context.Cause(wd.ctx))
		case errors.Is(err, ErrBlockMismatch):
			return nil, ReasonBlockMismatch, err
		default:
			return nil, ReasonIPFSError, err
		}
	}
	rc, err := s.ipfs.Cat(wd.ctx, c)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()

	f, err := os.CreateTemp(s.opts.SpoolDir, "nar-*.spool")
	if err != nil {
		return nil, ReasonIPFSError, fmt.Errorf("spool: %w", err)
	}
	// Unlinked at once: the open descriptor is all that is needed, and a
	// crash leaves nothing behind.
	os.Remove(f.Name())
	h := sha256.New()
	sw := &spoolWriter{f: f, h: h}
	n, err := io.Copy(sw, wd.reader(io.LimitReader(rc, int64(ref.narSize)+1)))
	if err != nil {
		f.Close()
		if sw.err != nil {
			return nil, ReasonIPFSError, fmt.Errorf("spool: %w", sw.err)
		}
		return fail(fmt.Errorf("ipfs cat %s: %w", c, err))
	}
	if uint64(n) != ref.narSize {
		f.Close()
		what := "fewer"
		if uint64(n) > ref.narSize {
			what = "more"
		}
		return nil, ReasonSizeMismatch, fmt.Errorf("ipfs %s has %s bytes than the narinfo's NarSize %d", c, what, ref.narSize)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, ref.narHash) {
		f.Close()
		return nil, ReasonHashMismatch, fmt.Errorf("ipfs %s: content does not hash to the narinfo's NarHash", c)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, ReasonIPFSError, fmt.Errorf("spool: %w", err)
	}
	return f, "", nil
}

type spoolWriter struct {
	f   *os.File
	h   hash.Hash
	err error
}

func (w *spoolWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.h.Write(b[:n])
	if err != nil {
		w.err = err
	}
	return n, err
}

// proxyNar answers from upstream. With ref of an uncompressed NAR the body
// is checked against the narinfo as it streams, and a mismatch cuts the
// connection before the last bytes go out; otherwise it is passed on as is
// (Nix checks what it unpacks against the NarHash anyway).
//
// A Range request (Nix resuming an interrupted transfer of a response that
// advertised Accept-Ranges, which only the verified IPFS path does) is passed
// through unchecked: a part cannot be checked against a whole-NAR hash, and
// Nix checks the whole once it has it.
func (s *Server) proxyNar(w http.ResponseWriter, r *http.Request, log *zap.Logger, ref *narRef, reason string, start time.Time) {
	verify := ref != nil && ref.compression == "none" && r.Header.Get("Range") == ""
	var hdr http.Header
	if !verify {
		hdr = http.Header{}
		for _, k := range []string{"Range", "If-Range"} {
			if v := r.Header.Get(k); v != "" {
				hdr.Set(k, v)
			}
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	resp, err := s.up.get(ctx, r.Method, r.URL.Path[1:], r.URL.RawQuery, hdr)
	if err != nil {
		s.m.upstreamStatus("nar", 0, err)
		log.Warn("upstream NAR failed", zap.Error(err))
		s.narFailed(w, r, log, reason, http.StatusBadGateway, start)
		return
	}
	defer resp.Body.Close()
	s.m.upstreamStatus("nar", resp.Status, nil)
	switch {
	case isNotFound(resp.Status):
		s.narFailed(w, r, log, reason, http.StatusNotFound, start)
		return
	case resp.Status == http.StatusOK, resp.Status == http.StatusPartialContent && !verify:
	default:
		log.Warn("upstream NAR failed", zap.Int("status", resp.Status))
		s.narFailed(w, r, log, reason, http.StatusBadGateway, start)
		return
	}

	if verify && resp.Length >= 0 && uint64(resp.Length) != ref.narSize {
		s.m.badUpstream.Inc()
		log.Error("upstream NAR has the wrong size; not sent", zap.Int64("length", resp.Length), zap.Uint64("nar_size", ref.narSize))
		s.narFailed(w, r, log, reason, http.StatusBadGateway, start)
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !verify {
		w.Header().Set("Content-Type", ct)
	} else {
		w.Header().Set("Content-Type", narContentType)
	}
	switch {
	case verify:
		w.Header().Set("Content-Length", strconv.FormatUint(ref.narSize, 10))
	case resp.Length >= 0:
		w.Header().Set("Content-Length", strconv.FormatInt(resp.Length, 10))
	}
	if cr := resp.Header.Get("Content-Range"); cr != "" && !verify {
		w.Header().Set("Content-Range", cr)
	}
	w.WriteHeader(resp.Status)
	if r.Method == http.MethodHead {
		return
	}

	wd := newWatchdog(ctx, s.opts.UpstreamTimeout)
	defer wd.stop()
	// Cancelling the request's context is what interrupts a stalled
	// upstream body read.
	go func() {
		<-wd.ctx.Done()
		cancel()
	}()
	var n int64
	if verify {
		n, err = copyVerified(w, wd, resp.Body, ref)
	} else {
		n, err = copyBody(w, wd, resp.Body)
		if err == nil && resp.Length >= 0 && n != resp.Length {
			err = fmt.Errorf("upstream sent %d bytes of %d", n, resp.Length)
		}
	}
	if err != nil {
		var mm *mismatchError
		if errors.As(err, &mm) {
			s.m.badUpstream.Inc()
			log.Error("upstream NAR does not match its narinfo; connection cut", zap.Error(err))
		} else {
			log.Warn("upstream NAR transfer failed; connection cut", zap.Error(err), zap.Bool("stalled", wd.stalled()))
		}
		s.m.nars.WithLabelValues(SourceNone, reason).Inc()
		// A response that ends early must not look complete: with a
		// chunked body, returning would send the final chunk.
		panic(http.ErrAbortHandler)
	}
	s.narDone(log, SourceUpstream, reason, n, start)
}

func (s *Server) narFailed(w http.ResponseWriter, r *http.Request, log *zap.Logger, reason string, status int, start time.Time) {
	s.m.nars.WithLabelValues(SourceNone, reason).Inc()
	log.Warn("NAR not served", zap.String("reason", reason), zap.Int("status", status), zap.Duration("took", time.Since(start)))
	http.Error(w, http.StatusText(status), status)
}

type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }

const copyBuf = 64 << 10

// copyBody copies r to w, counting reads as progress and not counting the
// time w takes.
func copyBody(w io.Writer, wd *watchdog, r io.Reader) (int64, error) {
	buf := make([]byte, copyBuf)
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			wd.pause()
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
			wd.progress()
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			if wd.stalled() {
				err = context.Cause(wd.ctx)
			}
			return n, err
		}
	}
}

// copyVerified copies r to w, checking it is ref's NAR. It always holds
// back the last chunk read until the whole body has matched, so on a
// mismatch the client has fewer bytes than Content-Length announced.
func copyVerified(w io.Writer, wd *watchdog, r io.Reader, ref *narRef) (int64, error) {
	bufs := [2][]byte{make([]byte, copyBuf), make([]byte, copyBuf)}
	cur := 0
	var held []byte
	h := sha256.New()
	var total uint64
	lr := io.LimitReader(r, int64(ref.narSize)+1)
	var sent int64
	for {
		m, err := lr.Read(bufs[cur])
		if m > 0 {
			wd.progress()
			chunk := bufs[cur][:m]
			h.Write(chunk)
			total += uint64(m)
			if total > ref.narSize {
				return sent, &mismatchError{fmt.Sprintf("upstream NAR is longer than NarSize %d", ref.narSize)}
			}
			if len(held) > 0 {
				wd.pause()
				if _, werr := w.Write(held); werr != nil {
					return sent, werr
				}
				sent += int64(len(held))
				wd.progress()
			}
			held = chunk
			cur = 1 - cur
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if wd.stalled() {
				err = context.Cause(wd.ctx)
			}
			return sent, err
		}
	}
	if total != ref.narSize {
		return sent, &mismatchError{fmt.Sprintf("upstream NAR has %d bytes, NarSize is %d", total, ref.narSize)}
	}
	if !bytes.Equal(h.Sum(nil), ref.narHash) {
		return sent, &mismatchError{"upstream NAR does not hash to NarHash"}
	}
	if _, err := w.Write(held); err != nil {
		return sent, err
	}
	return sent + int64(len(held)), nil
}

// countingWriter counts the body bytes written, for the metrics.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
