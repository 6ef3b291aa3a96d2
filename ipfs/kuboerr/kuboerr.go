// Package kuboerr classifies what kubo's RPC API answers when a request
// fails: which answers no retry can fix (Invalid), which are the
// deployment's to fix (Config), which a retry may find healed (Transient),
// and which mean the daemon could not be reached at all. Package ipfs,
// nix-ipfs's door to kubo, gives every failure its kind through it.
package kuboerr

import (
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	cmds "github.com/ipfs/go-ipfs-cmds"
	"github.com/ipfs/kubo/client/rpc"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// invalidMarkers are messages kubo sends, with HTTP 500 like any other
// failure, for requests that no retry can fix.
var invalidMarkers = []string{
	"invalid path",
	"invalid cid",
	"unknown cid version",
	"unrecognized chunker",
	"unrecognized hash",
	"is a directory",
	"not a file",
	"pin name",
}

// Kind is the kind of a failure kubo's RPC API answered with, and a hint
// for the person reading it ("" or starting with a space): what a worker
// does next depends on it (internal/errs).
func Kind(ce *rpc.Error) (kind errs.Kind, hint string) {
	switch ce.Code {
	case cmds.ErrClient:
		return errs.Invalid, ""
	case cmds.ErrRateLimited, cmds.ErrImplementation:
		return errs.Transient, ""
	case cmds.ErrForbidden:
		// The API's authorization (API.Authorizations) refuses us: an
		// operator's fix, not the event's fault.
		return errs.Config, " (check the API credentials)"
	}
	msg := strings.ToLower(ce.Message)
	if msg == "command not found" {
		// An HTTP 404 from something that is not kubo's RPC API,
		// typically its gateway port.
		return errs.Config, " (is this kubo's RPC API address, usually port 5001, and not its gateway?)"
	}
	// Both nocopy refusals are the deployment's to fix, not the event's.
	if strings.Contains(msg, "must be enabled to use nocopy") {
		return errs.Config, " (set Experimental.FilestoreEnabled=true on the daemon, or stop using nocopy)"
	}
	if strings.Contains(msg, "outside ipfs root") {
		return errs.Config, " (kubo's filestore references only files under the parent directory of the daemon's IPFS_PATH)"
	}
	for _, m := range invalidMarkers {
		if strings.Contains(msg, m) {
			return errs.Invalid, ""
		}
	}
	// Everything else kubo answers with a 500: a daemon in trouble
	// (datastore, resources, shutting down), which a retry may find healed.
	return errs.Transient, ""
}

// Unreachable reports failures to talk to the daemon at all: refused,
// reset, timed out, or cut off mid-answer.
func Unreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}
