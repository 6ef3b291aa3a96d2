package ipfs

import (
	"context"
	"errors"
	"fmt"

	cmds "github.com/ipfs/go-ipfs-cmds"
	"github.com/ipfs/kubo/client/rpc"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs/kuboerr"
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
		if kuboerr.Unreachable(err) {
			return errs.Errorf(errs.Transient, "kubo %s unreachable: %s: %w", k.addr, what, err)
		}
		if !stream {
			return fmt.Errorf("kubo %s: %s: %w", k.addr, what, err)
		}
		ce = &rpc.Error{Message: err.Error(), Code: cmds.ErrNormal}
	}
	kind, hint := kuboerr.Kind(ce)
	return errs.Errorf(kind, "kubo %s: %s: %w%s", k.addr, what, err, hint)
}
