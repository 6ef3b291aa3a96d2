package ipfs

import (
	"strings"

	"github.com/ipfs/kubo/client/rpc"

	"github.com/nix-ipfs/nix-ipfs/cidparams"
)

// Params are the import parameters that, with the bytes, decide a CID
// (package cidparams).
type Params = cidparams.Params

// DefaultParams is cidparams.Default: what `ipfs add --cid-version=1`
// produces on a daemon with the default Import configuration.
func DefaultParams() Params { return cidparams.Default() }

// applyParams sets every option that changes the CID, including the ones
// equal to kubo's defaults, so that the daemon's Import.* configuration
// cannot.
func applyParams(p Params, req rpc.RequestBuilder) rpc.RequestBuilder {
	return req.
		Option("cid-version", p.CIDVersion).
		Option("chunker", p.Chunker).
		Option("raw-leaves", p.RawLeaves).
		Option("hash", strings.ToLower(p.HashFunction)).
		Option("max-file-links", p.MaxLinks()).
		Option("trickle", false).
		Option("inline", false).
		Option("nocopy", p.Nocopy)
}
