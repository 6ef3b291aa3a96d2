package kuboerr

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"syscall"
	"testing"

	cmds "github.com/ipfs/go-ipfs-cmds"
	"github.com/ipfs/kubo/client/rpc"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		ce       rpc.Error
		want     errs.Kind
		wantHint bool
	}{
		{rpc.Error{Code: cmds.ErrClient, Message: "anything"}, errs.Invalid, false},
		{rpc.Error{Code: cmds.ErrRateLimited}, errs.Transient, false},
		{rpc.Error{Code: cmds.ErrForbidden}, errs.Config, true},
		{rpc.Error{Code: cmds.ErrNormal, Message: "command not found"}, errs.Config, true},
		{rpc.Error{Code: cmds.ErrNormal, Message: "filestore must be enabled to use nocopy"}, errs.Config, true},
		{rpc.Error{Code: cmds.ErrNormal, Message: "cannot add filestore references outside ipfs root (/x)"}, errs.Config, true},
		{rpc.Error{Code: cmds.ErrNormal, Message: "Invalid CID: bad"}, errs.Invalid, false},
		{rpc.Error{Code: cmds.ErrNormal, Message: "unrecognized chunker option: x"}, errs.Invalid, false},
		{rpc.Error{Code: cmds.ErrNormal, Message: "leveldb: closed"}, errs.Transient, false},
	} {
		kind, hint := Kind(&tc.ce)
		if kind != tc.want || (hint != "") != tc.wantHint {
			t.Errorf("Kind(%d %q) = %v, %q; want %v, hint %v", tc.ce.Code, tc.ce.Message, kind, hint, tc.want, tc.wantHint)
		}
	}
}

func TestUnreachable(t *testing.T) {
	for _, err := range []error{
		&url.Error{Op: "Post", URL: "http://127.0.0.1:5001", Err: syscall.ECONNREFUSED},
		fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
		syscall.ECONNRESET,
	} {
		if !Unreachable(err) {
			t.Errorf("Unreachable(%v) = false", err)
		}
	}
	if Unreachable(errors.New("pin: not pinned")) {
		t.Error("a daemon's refusal reads as unreachable")
	}
}
