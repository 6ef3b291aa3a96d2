package substituter

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	imetrics "github.com/nix-ipfs/nix-ipfs/internal/metrics"
	"github.com/nix-ipfs/nix-ipfs/internal/watchdog"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// Sources of a NAR response (the "source" label).
const (
	SourceIPFS     = "ipfs"     // verified bytes from IPFS
	SourceUpstream = "upstream" // the upstream cache's NAR
	SourceNone     = "none"     // nothing could be served
)

// Reasons a NAR did not come from IPFS (the "reason" label; empty for
// SourceIPFS).
const (
	ReasonNoIPFSHash     = "no_ipfshash"     // the narinfo has no IPFSHash
	ReasonCompressed     = "compressed"      // Compression is not none: the NarHash cannot be checked on the file
	ReasonUnknownNarinfo = "unknown_narinfo" // no narinfo served names this URL
	ReasonInvalidCID     = "invalid_cid"     // the IPFSHash does not parse as a CID
	ReasonSpoolFull      = "spool_full"      // the spool budget (MaxSpoolBytes) is used up
	ReasonIPFSError      = "ipfs_error"      // IPFS failed (unreachable, not found, refused)
	ReasonBlockMismatch  = "block_mismatch"  // a gateway block did not hash to its CID
	ReasonTimeout        = "timeout"         // IPFS made no progress for IPFSTimeout
	ReasonSizeMismatch   = "size_mismatch"   // IPFS content is not NarSize bytes long
	ReasonHashMismatch   = "hash_mismatch"   // IPFS content does not hash to NarHash
)

type metrics struct {
	nars         *prometheus.CounterVec
	ipfsFailures *prometheus.CounterVec
	narBytes     *prometheus.CounterVec
	narinfos     *prometheus.CounterVec
	upstream     *prometheus.CounterVec
	badUpstream  prometheus.Counter
	rejected     *prometheus.CounterVec
	firstByte    *prometheus.HistogramVec
	prefetches   *prometheus.CounterVec
	keptHits     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		nars: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_nars_total",
			Help: "NAR requests answered, by source (ipfs, upstream, none) and the reason IPFS was not used.",
		}, []string{"source", "reason"}),
		ipfsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_ipfs_failures_total",
			Help: "IPFS fetches that failed or were refused, by reason.",
		}, []string{"reason"}),
		narBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_nar_bytes_total",
			Help: "NAR bytes sent to clients, by source.",
		}, []string{"source"}),
		narinfos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_narinfos_total",
			Help: "narinfo requests, by result (hit, negative_hit, fetched, not_found, error).",
		}, []string{"result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_upstream_requests_total",
			Help: "Requests to the upstream cache, by what was asked (cache_info, narinfo, nar) and HTTP status (or error).",
		}, []string{"what", "status"}),
		badUpstream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_substituter_upstream_verify_failures_total",
			Help: "Uncompressed upstream NARs that did not match their narinfo (the connection was cut).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_rejected_requests_total",
			Help: "Requests refused before anything was fetched, by status code.",
		}, []string{"code"}),
		firstByte: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nixipfs_substituter_nar_first_byte_seconds",
			Help:    "Time from a NAR request to its response headers (the first byte), by source.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"source"}),
		prefetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixipfs_substituter_prefetches_total",
			Help: "NARs read from IPFS ahead of their request, by outcome once requested or dropped (used, failed, unrequested).",
		}, []string{"outcome"}),
		keptHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixipfs_substituter_kept_nar_hits_total",
			Help: "NAR requests answered from a NAR kept, verified, in the spool since an earlier request (no read from IPFS).",
		}),
	}
	if reg != nil {
		m.nars = imetrics.Register(reg, m.nars)
		m.ipfsFailures = imetrics.Register(reg, m.ipfsFailures)
		m.narBytes = imetrics.Register(reg, m.narBytes)
		m.narinfos = imetrics.Register(reg, m.narinfos)
		m.upstream = imetrics.Register(reg, m.upstream)
		m.badUpstream = imetrics.Register(reg, m.badUpstream)
		m.rejected = imetrics.Register(reg, m.rejected)
		m.firstByte = imetrics.Register(reg, m.firstByte)
		m.prefetches = imetrics.Register(reg, m.prefetches)
		m.keptHits = imetrics.Register(reg, m.keptHits)
	}
	// Every way IPFS can fail is a series from the start, at 0, so a
	// dashboard or an alert on its rate works before the first failure.
	for _, r := range []string{ReasonInvalidCID, ReasonSpoolFull, ReasonIPFSError, ReasonBlockMismatch,
		ReasonTimeout, ReasonSizeMismatch, ReasonHashMismatch} {
		m.ipfsFailures.WithLabelValues(r)
	}
	return m
}

func (m *metrics) upstreamStatus(what string, status int, err error) {
	s := "error"
	if err == nil {
		s = strconv.Itoa(status)
	}
	m.upstream.WithLabelValues(what, s).Inc()
}

// Why a NAR did not come from IPFS, as errors: reasonOf turns them into
// the reason label.
var (
	errInvalidCID = errs.E(errs.Invalid, errors.New("the narinfo's IPFSHash is not a CID"))
	errSpoolFull  = errs.E(errs.Transient, errors.New("no room in the spool"))
)

// timeoutError is an IPFS read that made no progress for IPFSTimeout
// (ReasonTimeout); its message is its cause's. It is set where the IPFS
// watchdog is known to have fired (ipfsErr), so that upstream's
// own watchdog, in the same chain for a trusted read, is not taken for it.
type timeoutError struct{ error }

func (e timeoutError) Unwrap() error { return e.error }

// ipfsErr marks err, of an IPFS read that w bounds, as a timeout if w
// fired (see reasonOf).
func ipfsErr(w *watchdog.Watchdog, err error) error {
	if w.Stalled() {
		return timeoutError{err}
	}
	return err
}

// mismatchError is content, from IPFS or upstream, that is not the
// narinfo's NAR: of another size than NarSize, or not hashing to NarHash.
type mismatchError struct {
	size bool // the size differs (else the hash)
	msg  string
}

func (e *mismatchError) Error() string { return e.msg }

// mismatch returns a mismatchError of kind Corrupt.
func mismatch(size bool, format string, args ...any) error {
	return errs.E(errs.Corrupt, &mismatchError{size: size, msg: fmt.Sprintf(format, args...)})
}

// holdsOtherBytes reports whether err says IPFS returned other bytes than
// the narinfo's NAR (rather than failing to return them): for a trusted
// CID, a reason to distrust it.
func holdsOtherBytes(err error) bool {
	var mm *mismatchError
	return errors.As(err, &mm) || errors.Is(err, unixfs.ErrBlockMismatch)
}

// reasonOf is the reason label (a Reason* constant) of a NAR that IPFS did
// not give, derived from the error that says why: the one place a failure
// becomes a label.
func reasonOf(err error) string {
	var (
		to timeoutError
		mm *mismatchError
	)
	switch {
	case errors.As(err, &to):
		return ReasonTimeout
	case errors.Is(err, unixfs.ErrBlockMismatch):
		return ReasonBlockMismatch
	case errors.As(err, &mm) && mm.size:
		return ReasonSizeMismatch
	case mm != nil:
		return ReasonHashMismatch
	case errors.Is(err, errInvalidCID):
		return ReasonInvalidCID
	case errors.Is(err, errSpoolFull):
		return ReasonSpoolFull
	default:
		return ReasonIPFSError
	}
}
