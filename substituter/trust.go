package substituter

import (
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// When a CID may stream. A CID streams (followSpool: sent as it is read
// into the spool and hashed, the last bytes held back until the whole
// matched, the upstream NAR taking over if IPFS fails) once the binding
// "this CID holds this NAR" is established, in one of two ways:
//
//   - verified: this process read it whole and it matched (the verified
//     table, --verified-cids);
//   - signed: the narinfo's IPFSSig verifies under a trusted key
//     (--trusted-public-keys) for its StorePath, NarHash, NarSize and
//     IPFSHash: the publisher, which hashed the very bytes it added to
//     IPFS, vouches for it.
//
// Everything else is read into the spool and checked before a byte is
// sent. Both are read ahead from their narinfo (package spool). A signed CID
// found holding other bytes (a publisher bug, or damaged blocks) is
// refuted: it is read and checked first from then on, unless such a read
// proves it after all.

// Trust labels, for the "NAR served" log line.
const (
	trustVerified = "verified"
	trustSigned   = "signed"
)

// maxRefuted bounds the CIDs remembered as signed but wrong.
const maxRefuted = 10000

// cidSigned reports whether ni's IPFSSig verifies under a trusted key. Why
// not is logged once per narinfo fetched from upstream: at debug level for
// a narinfo with no IPFSSig (a mirror's, or an older publisher's), as a
// warning otherwise.
func (s *Server) cidSigned(log *zap.Logger, ni *narinfo.NarInfo) bool {
	if len(s.opts.TrustedKeys) == 0 || ni.IPFSHash == "" || ni.Compression != "none" {
		return false
	}
	err := ni.VerifyCID(s.opts.TrustedKeys)
	switch {
	case err == nil:
		return true
	case errors.Is(err, narinfo.ErrNoIPFSSig):
		log.Debug("narinfo has no IPFSSig; its CID is read and checked before it is sent")
	default:
		log.Warn("narinfo's IPFSSig is not trusted; its CID is read and checked before it is sent", zap.Error(err))
	}
	return false
}

// trust says whether c may stream as ref's NAR, and why (a trust* label).
func (s *Server) trust(c cid.Cid, ref *narRef) (string, bool) {
	k := verifiedKey(c, ref)
	if _, ok := s.verified.Get(k, time.Time{}); ok {
		return trustVerified, true
	}
	if ref.signed {
		if _, bad := s.refuted.Get(k, time.Time{}); !bad {
			return trustSigned, true
		}
	}
	return "", false
}

// distrust forgets c as ref's NAR: its bytes turned out to be others.
func (s *Server) distrust(c cid.Cid, ref *narRef) {
	k := verifiedKey(c, ref)
	s.verified.Remove(k)
	s.refuted.Put(k, struct{}{}, time.Time{})
}

// proved records that c was read whole and matched ref.
func (s *Server) proved(c cid.Cid, ref *narRef) {
	k := verifiedKey(c, ref)
	s.verified.Put(k, struct{}{}, time.Time{})
	s.refuted.Remove(k)
}

// verifiedKey names a CID already proved to hold a NAR: the CID with the
// NarHash and NarSize it matched.
func verifiedKey(c cid.Cid, ref *narRef) string {
	return fmt.Sprintf("%s %x %d", c.KeyString(), ref.narHash, ref.narSize)
}
