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
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/internal/watchdog"
	"github.com/nix-ipfs/nix-ipfs/substituter/spool"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/upstream"
)

const narContentType = "application/x-nix-nar"

func (s *Server) serveNar(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	key := r.URL.Path
	ref, known := s.nars.Get(key, time.Time{})
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
		s.proxyNar(w, r, log, ref, s.ipfsFailed(log, fmt.Errorf("%w: %w", errInvalidCID, err)), start)
		return
	}
	how, trusted := s.trust(c, ref)
	follow := trusted && r.Header.Get("Range") == ""
	e, ok := s.spools.Acquire(ref.spoolNAR(c), ref)
	if !ok && follow {
		// No room in the spool for it: it streams straight through.
		if done, reason := s.streamVerified(w, r, log.With(zap.String("trust", how)), c, ref, start); !done {
			s.proxyNar(w, r, log, ref, reason, start)
		}
		return
	}
	if !ok {
		s.proxyNar(w, r, log, ref, s.ipfsFailed(log, fmt.Errorf("%w: %d bytes would exceed the spool budget of %d", errSpoolFull, ref.narSize, s.opts.MaxSpoolBytes)), start)
		return
	}
	defer s.spools.Release(e)
	if e.Trust != "" {
		log = log.With(zap.String("trust", e.Trust))
	}
	if follow && e.Trust != "" && !e.IsDone() {
		// Being read as a trusted CID: sent as the read goes (follow.go).
		s.followSpool(w, r, log, e, start)
		return
	}
	select {
	case <-e.Done():
	case <-r.Context().Done():
		log.Debug("client went away while the NAR was read from IPFS", zap.Error(r.Context().Err()))
		return
	}
	if e.Err != nil {
		s.proxyNar(w, r, log, ref, s.ipfsFailed(log, e.Err), start)
		return
	}
	// Verified: now, and only now, a response, from a descriptor of our
	// own (others may be sending the same file). ServeContent answers
	// Range requests (Nix resumes interrupted downloads with one), sets
	// Content-Length, which is NarSize, and sends an *os.File with
	// sendfile.
	f, err := e.Open()
	if err != nil {
		s.proxyNar(w, r, log, ref, s.ipfsFailed(log, err), start)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", narContentType)
	cw := &countingWriter{ResponseWriter: w, start: start}
	http.ServeContent(cw, r, "", time.Time{}, f)
	s.narDone(log.With(zap.Duration("ipfs_took", e.Took)), SourceIPFS, "", cw.n, start, cw.ttfb)
}

// streamVerified sends a NAR whose CID is trusted to hold it (proved
// before, or signed by a trusted key: trust.go) as IPFS reads it, with no
// spool: what a trusted CID gets when the spool has no room for it
// (--nar-spool-max-bytes). The hash is still checked on the way, the last
// chunk held back until it matches. If IPFS fails on the way, the rest
// comes from upstream (the bytes sent so far are the NAR's, so the
// upstream NAR continues them). done is false when nothing was sent; then
// reason says why (the request goes to upstream).
func (s *Server) streamVerified(w http.ResponseWriter, r *http.Request, log *zap.Logger, c cid.Cid, ref *narRef, start time.Time) (done bool, reason string) {
	kwd := watchdog.New(r.Context(), s.opts.IPFSTimeout)
	defer kwd.Stop()
	rc, err := s.ipfs.Cat(kwd.Context(), c)
	if err != nil {
		return false, s.ipfsFailed(log, ipfsErr(kwd, err))
	}
	defer rc.Close()
	if n := announcedSize(rc); n >= 0 && uint64(n) != ref.narSize {
		// Before a byte is sent, a CID of another size (for a signed
		// one: a publisher bug) goes to upstream, and is read and
		// checked first from now on.
		reason := s.ipfsFailed(log, mismatch(true, "ipfs %s has %d bytes, the narinfo's NarSize is %d", c, n, ref.narSize))
		s.distrust(c, ref)
		return false, reason
	}
	kr := kwd.Reader(rc)
	first := make([]byte, copyBuf)
	n, err := kr.Read(first)
	if n == 0 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return false, s.ipfsFailed(log, ipfsErr(kwd, fmt.Errorf("ipfs cat %s: %w", c, err)))
	}
	// The upstream fallback has its own watchdog (wd, in copyVerified).
	wd := watchdog.New(r.Context(), s.opts.UpstreamTimeout+s.opts.IPFSTimeout)
	defer wd.Stop()
	fr := unixfs.NewResumer(io.NopCloser(io.MultiReader(bytes.NewReader(first[:n]), kr)), 0, int64(ref.narSize), 1, "upstream",
		func(off int64, cause error) (io.ReadCloser, error) {
			s.ipfsFailed(log, ipfsErr(kwd, fmt.Errorf("ipfs cat %s at byte %d: %w; the rest comes from upstream", c, off, cause)))
			return s.upstreamFrom(wd.Context(), ref, off)
		})
	defer fr.Close()
	w.Header().Set("Content-Type", narContentType)
	w.Header().Set("Content-Length", strconv.FormatUint(ref.narSize, 10))
	w.WriteHeader(http.StatusOK)
	ttfb := time.Since(start)
	sent, err := copyVerified(w, wd, fr, ref)
	if err != nil {
		var mm *mismatchError
		if errors.As(err, &mm) {
			// Only a damaged block store, or for a signed CID a
			// publisher that signed the wrong one, gets here: from now
			// on the CID is read and checked first.
			s.distrust(c, ref)
			log.Error("trusted CID does not hold its NAR; connection cut", zap.Error(err))
		} else {
			log.Warn("NAR transfer failed; connection cut", zap.Error(err))
		}
		s.m.nars.WithLabelValues(SourceNone, ReasonIPFSError).Inc()
		panic(http.ErrAbortHandler)
	}
	s.narDone(log.With(zap.Bool("streamed", true), zap.Int64("upstream_bytes", fr.ResumedBytes())), SourceIPFS, "", sent, start, ttfb)
	return true, ""
}

// upstreamFrom returns ref's upstream NAR from byte off: a Range request,
// or, if upstream ignores it, the whole NAR with the first off bytes
// skipped.
func (s *Server) upstreamFrom(ctx context.Context, ref *narRef, off int64) (io.ReadCloser, error) {
	hdr := http.Header{}
	if off > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := s.up.Get(ctx, http.MethodGet, ref.key[1:], "", hdr)
	if err != nil {
		s.m.upstreamStatus("nar", 0, err)
		return nil, err
	}
	s.m.upstreamStatus("nar", resp.Status, nil)
	switch {
	case resp.Status == http.StatusPartialContent && off > 0 && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", off)):
		return resp.Body, nil
	case resp.Status == http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			resp.Body.Close()
			return nil, fmt.Errorf("upstream NAR %s: skipping to byte %d: %w", ref.key, off, err)
		}
		return resp.Body, nil
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("upstream NAR %s: HTTP %d", ref.key, resp.Status)
	}
}

// ipfsFailed counts and logs a NAR that IPFS did not give, and returns
// the reason label of err, for the upstream answer that follows.
func (s *Server) ipfsFailed(log *zap.Logger, err error) (reason string) {
	reason = reasonOf(err)
	s.m.ipfsFailures.WithLabelValues(reason).Inc()
	log.Warn("NAR not served from IPFS; falling back to upstream", zap.String("reason", reason), zap.Error(err))
	return reason
}

func (s *Server) narDone(log *zap.Logger, source, reason string, n int64, start time.Time, ttfb time.Duration) {
	s.m.nars.WithLabelValues(source, reason).Inc()
	if n > 0 {
		s.m.narBytes.WithLabelValues(source).Add(float64(n))
	}
	s.m.firstByte.WithLabelValues(source).Observe(ttfb.Seconds())
	fields := []zap.Field{zap.String("source", source), zap.Int64("bytes", n), zap.Duration("took", time.Since(start)), zap.Duration("ttfb", ttfb)}
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	log.Info("NAR served", fields...)
}

// fetch is the spool's Fetch: fetchIPFS, and what the outcome says of
// the CID, known before any request waiting for the read is told.
func (s *Server) fetch(ctx context.Context, e *spool.Entry[*narRef]) (*os.File, error) {
	f, err := s.fetchIPFS(ctx, e)
	switch {
	case err == nil:
		s.proved(e.NAR.CID, e.Ref)
	case e.Trust != "" && holdsOtherBytes(err):
		// Trusted, and found holding other bytes: read and checked
		// first from now on.
		s.distrust(e.NAR.CID, e.Ref)
	}
	return f, err
}

// prefetch reads ref's NAR ahead of its request (package spool), when it
// is one IPFS can give.
func (s *Server) prefetch(ref *narRef) {
	if ref == nil || ref.compression != "none" || ref.ipfsHash == "" {
		return
	}
	c, err := cid.Decode(ref.ipfsHash)
	if err != nil {
		return
	}
	s.spools.Prefetch(ref.spoolNAR(c), ref)
}

// fetchIPFS reads e's CID into an unlinked spool file, checking it against
// its narinfo, and reports each write to e.Progress. On success the file is
// positioned at its start; otherwise the error says why not (reasonOf). For a trusted CID, which requests follow as it is read
// (follow.go), IPFS failing half-way is not the end: the rest comes from
// upstream, counted in e.UpstreamBytes, and the whole is checked as
// always.
func (s *Server) fetchIPFS(ctx context.Context, e *spool.Entry[*narRef]) (*os.File, error) {
	c, ref := e.NAR.CID, e.Ref
	wd := watchdog.New(ctx, s.opts.IPFSTimeout)
	defer wd.Stop()
	fail := func(err error) (*os.File, error) {
		if wd.Stalled() {
			return nil, timeoutError{fmt.Errorf("ipfs %s: %w", c, context.Cause(wd.Context()))}
		}
		return nil, err
	}
	s.warmBlocks(wd, c, ref)
	rc, err := s.ipfs.Cat(wd.Context(), c)
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	if n := announcedSize(rc); n >= 0 && uint64(n) != ref.narSize {
		// kubo's gateway says the file's size before its bytes: no need
		// to read a wrong CID's content to find out.
		return nil, mismatch(true, "ipfs %s has %d bytes, the narinfo's NarSize is %d", c, n, ref.narSize)
	}

	f, err := os.CreateTemp(s.opts.SpoolDir, "nar-*.spool")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Unlinked at once: the open descriptor is all that is needed, and a
	// crash leaves nothing behind.
	os.Remove(f.Name())
	e.Progress.Started(f)
	var src io.Reader = wd.Reader(io.LimitReader(rc, int64(ref.narSize)+1))
	if e.Trust != "" {
		// The upstream part has a watchdog of its own: wd's may be
		// what ended the IPFS part.
		var uwd *watchdog.Watchdog
		defer func() {
			if uwd != nil {
				uwd.Stop()
			}
		}()
		fr := unixfs.NewResumer(io.NopCloser(src), 0, int64(ref.narSize), 1, "upstream", func(off int64, cause error) (io.ReadCloser, error) {
			if off == 0 {
				// Nothing read: the request goes to upstream whole,
				// with the reason.
				return nil, nil
			}
			s.ipfsFailed(s.log.With(zap.String("url", ref.key), zap.String("cid", c.String())),
				ipfsErr(wd, fmt.Errorf("ipfs cat %s at byte %d: %w; the rest comes from upstream", c, off, cause)))
			uwd = watchdog.New(ctx, s.opts.UpstreamTimeout)
			rc, err := s.upstreamFrom(uwd.Context(), ref, off)
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{uwd.Reader(io.LimitReader(rc, int64(ref.narSize)-off+1)), rc}, nil
		})
		defer func() { e.UpstreamBytes = fr.ResumedBytes() }()
		defer fr.Close()
		src = fr
	}
	h := sha256.New()
	sw := &spoolWriter{f: f, h: h, progress: e.Progress}
	// Large reads: a stream of gigabytes in fewer system calls, and read
	// straight into buf past the HTTP client's own small buffer.
	n, err := io.CopyBuffer(sw, src, make([]byte, spoolBuf))
	if err != nil {
		e.Progress.Failed()
		if sw.err != nil {
			return nil, fmt.Errorf("spool: %w", sw.err)
		}
		return fail(fmt.Errorf("ipfs cat %s: %w", c, err))
	}
	if uint64(n) != ref.narSize {
		e.Progress.Failed()
		what := "fewer"
		if uint64(n) > ref.narSize {
			what = "more"
		}
		return nil, mismatch(true, "ipfs %s has %s bytes than the narinfo's NarSize %d", c, what, ref.narSize)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, ref.narHash) {
		e.Progress.Failed()
		return nil, mismatch(false, "ipfs %s: content does not hash to the narinfo's NarHash", c)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		e.Progress.Failed()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return f, nil
}

// warmBlocks has the kubo fetch c's blocks in a random order, many at
// once (unixfs.Warmer), before the NAR is read: clients on one network
// fetching the same NAR at once then ask the mirror for different blocks
// and take the rest from each other (docs/BENCHMARKS.md, fan-out). Best
// effort: what it leaves missing, the read fetches; a stall ends it
// through wd, and the read then fails as it would have.
func (s *Server) warmBlocks(wd *watchdog.Watchdog, c cid.Cid, ref *narRef) {
	if s.bf == nil || s.warm == nil {
		return
	}
	start := time.Now()
	// A fleet's client that let go of the mirrors (package fleet) takes
	// them back when its LAN gives it nothing: no block for any NAR for a
	// stall's time.
	defer s.peers.Fetching()()
	stopQuiet := s.watchQuiet(start)
	defer stopQuiet()
	progress := func() {
		wd.Progress()
		s.lastBlock.Store(time.Now().UnixNano())
	}
	st, err := s.bf.Warm(wd.Context(), s.warm, c, progress)
	log := s.log.With(zap.String("url", ref.key), zap.String("cid", c.String()), zap.Int("blocks", st.Blocks),
		zap.Int("fetched", st.Fetched), zap.Int("retries", st.Retries), zap.Duration("took", time.Since(start)))
	if st.ListErr != nil {
		log.Info("the daemon did not take the NAR's blocks as one list; they were asked for one by one", zap.NamedError("list_error", st.ListErr))
	}
	if err != nil {
		log.Info("fetching the NAR's blocks ahead stopped; the read fetches the rest", zap.Error(err))
		return
	}
	log.Debug("NAR's blocks fetched ahead")
}

// watchQuiet calls the peering's Fallback whenever no block has arrived,
// for any NAR, for a stall's time since start; stop ends it and waits.
func (s *Server) watchQuiet(start time.Time) (stop func()) {
	stall := s.warm.Stall
	if stall <= 0 {
		stall = unixfs.DefaultWarmStall
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(stall / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				last := time.Unix(0, s.lastBlock.Load())
				if last.Before(start) {
					last = start
				}
				if now.Sub(last) >= stall {
					s.fallback()
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// announcedSize is the size of the file rc reads, if its source said it
// before the bytes (unixfs.Sizer: a UnixFS root, kubo's gateway's
// Content-Length), else -1.
func announcedSize(rc io.Reader) int64 {
	if s, ok := rc.(unixfs.Sizer); ok {
		return s.Size()
	}
	return -1
}

type spoolWriter struct {
	f        *os.File
	h        hash.Hash
	progress *spool.Progress
	err      error
}

func (w *spoolWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.h.Write(b[:n])
	w.progress.Wrote(n)
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
// advertised Accept-Ranges, which only a NAR sent from the spool does,
// through http.ServeContent; a streamed one does not) is passed through
// unchecked: a part cannot be checked against a whole-NAR hash, and Nix
// checks the whole once it has it.
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
	resp, err := s.up.Get(ctx, r.Method, r.URL.Path[1:], r.URL.RawQuery, hdr)
	if err != nil {
		s.m.upstreamStatus("nar", 0, err)
		log.Warn("upstream NAR failed", zap.Error(err))
		s.narFailed(w, r, log, reason, http.StatusBadGateway, start)
		return
	}
	defer resp.Body.Close()
	s.m.upstreamStatus("nar", resp.Status, nil)
	switch {
	case upstream.IsNotFound(resp.Status):
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
	ttfb := time.Since(start)
	if r.Method == http.MethodHead {
		return
	}

	wd := watchdog.New(ctx, s.opts.UpstreamTimeout)
	defer wd.Stop()
	// Cancelling the request's context is what interrupts a stalled
	// upstream body read.
	go func() {
		<-wd.Context().Done()
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
			log.Warn("upstream NAR transfer failed; connection cut", zap.Error(err), zap.Bool("stalled", wd.Stalled()))
		}
		s.m.nars.WithLabelValues(SourceNone, reason).Inc()
		// A response that ends early must not look complete: with a
		// chunked body, returning would send the final chunk.
		panic(http.ErrAbortHandler)
	}
	s.narDone(log, SourceUpstream, reason, n, start, ttfb)
}

func (s *Server) narFailed(w http.ResponseWriter, r *http.Request, log *zap.Logger, reason string, status int, start time.Time) {
	s.m.nars.WithLabelValues(SourceNone, reason).Inc()
	log.Warn("NAR not served", zap.String("reason", reason), zap.Int("status", status), zap.Duration("took", time.Since(start)))
	http.Error(w, http.StatusText(status), status)
}

const copyBuf = 64 << 10

// spoolBuf is the buffer of a read from IPFS into the spool.
const spoolBuf = 256 << 10

// copyBody copies r to w, counting reads as progress and not counting the
// time w takes.
func copyBody(w io.Writer, wd *watchdog.Watchdog, r io.Reader) (int64, error) {
	buf := make([]byte, copyBuf)
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			wd.Pause()
			if _, werr := w.Write(buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
			wd.Progress()
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			if wd.Stalled() {
				err = context.Cause(wd.Context())
			}
			return n, err
		}
	}
}

// copyVerified copies r to w, checking it is ref's NAR. It always holds
// back the last chunk read until the whole body has matched, so on a
// mismatch the client has fewer bytes than Content-Length announced.
func copyVerified(w io.Writer, wd *watchdog.Watchdog, r io.Reader, ref *narRef) (int64, error) {
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
			wd.Progress()
			chunk := bufs[cur][:m]
			h.Write(chunk)
			total += uint64(m)
			if total > ref.narSize {
				return sent, mismatch(true, "upstream NAR is longer than NarSize %d", ref.narSize)
			}
			if len(held) > 0 {
				wd.Pause()
				if _, werr := w.Write(held); werr != nil {
					return sent, werr
				}
				sent += int64(len(held))
				wd.Progress()
			}
			held = chunk
			cur = 1 - cur
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if wd.Stalled() {
				err = context.Cause(wd.Context())
			}
			return sent, err
		}
	}
	if total != ref.narSize {
		return sent, mismatch(true, "upstream NAR has %d bytes, NarSize is %d", total, ref.narSize)
	}
	if !bytes.Equal(h.Sum(nil), ref.narHash) {
		return sent, mismatch(false, "upstream NAR does not hash to NarHash")
	}
	if _, err := w.Write(held); err != nil {
		return sent, err
	}
	return sent + int64(len(held)), nil
}

// countingWriter counts the body bytes written, for the metrics, and the
// time to the response headers. It passes ReadFrom on, so that an
// *os.File body still goes out with sendfile.
type countingWriter struct {
	http.ResponseWriter
	n     int64
	start time.Time
	ttfb  time.Duration
}

func (c *countingWriter) mark() {
	if c.ttfb == 0 {
		c.ttfb = time.Since(c.start)
	}
}

func (c *countingWriter) WriteHeader(code int) {
	c.mark()
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.mark()
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	c.mark()
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		c.n += n
		return n, err
	}
	n, err := io.Copy(onlyWriter{c.ResponseWriter}, r)
	c.n += n
	return n, err
}

type onlyWriter struct{ io.Writer }

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
