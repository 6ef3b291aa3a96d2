package ipfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	cmds "github.com/ipfs/go-ipfs-cmds"
	"github.com/ipfs/kubo/client/rpc"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// fail gives err, from a call described by format, the kind that tells a
// worker what to do: the caller's own cancellation stays unkinded (and
// errors.Is(err, context.Canceled) holds), a daemon that cannot be reached is
// Transient, and a refusal is classified from kubo's answer.
func (k *Kubo) fail(ctx context.Context, err error, format string, args ...any) error {
	return k.classify(ctx, err, false, format, args...)
}

// failStream is fail for an error while reading a response body. Past the
// headers, kubo can only report a failure as a bare string in an HTTP
// trailer, which the rpc client turns into a plain error: it is the
// daemon's message all the same, and is classified as one.
func (k *Kubo) failStream(ctx context.Context, err error, format string, args ...any) error {
	return k.classify(ctx, err, true, format, args...)
}

func (k *Kubo) classify(ctx context.Context, err error, stream bool, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if cerr := ctx.Err(); cerr != nil {
		// Whatever the transport said, the caller ended the call; it must
		// not be retried or dead-lettered as if kubo had failed.
		return fmt.Errorf("kubo %s: %s: %w (%v)", k.addr, what, cerr, err)
	}
	var ce *rpc.Error
	if !errors.As(err, &ce) {
		if unreachable(err) {
			return errs.Errorf(errs.Transient, "kubo %s unreachable: %s: %w", k.addr, what, err)
		}
		if !stream {
			return fmt.Errorf("kubo %s: %s: %w", k.addr, what, err)
		}
		ce = &rpc.Error{Message: err.Error(), Code: cmds.ErrNormal}
	}
	kind, hint := daemonKind(ce)
	return errs.Errorf(kind, "kubo %s: %s: %w%s", k.addr, what, err, hint)
}

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

func daemonKind(ce *rpc.Error) (kind errs.Kind, hint string) {
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

// unreachable reports failures to talk to the daemon at all: refused,
// reset, timed out, or cut off mid-answer.
func unreachable(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}
