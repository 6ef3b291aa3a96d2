package cidparams

import (
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

func TestValidate(t *testing.T) {
	ok := []Params{
		Default(),
		{CIDVersion: 1, Chunker: "buzhash", RawLeaves: true, HashFunction: "sha2-256"},
		{CIDVersion: 1, Chunker: "buzhash", RawLeaves: true, HashFunction: "sha2-256", Nocopy: true},
		{CIDVersion: 0, Chunker: "size-262144", HashFunction: "sha2-256"},
		{CIDVersion: 1, Chunker: "nix-refs-4096-524288", RawLeaves: true, HashFunction: "sha2-256"},
	}
	for _, p := range ok {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	bad := map[string]struct {
		p    Params
		kind errs.Kind
	}{
		"cid version":       {Params{CIDVersion: 2, Chunker: "buzhash", HashFunction: "sha2-256"}, errs.Invalid},
		"empty chunker":     {Params{CIDVersion: 1, HashFunction: "sha2-256"}, errs.Invalid},
		"unknown chunker":   {Params{CIDVersion: 1, Chunker: "fancy", HashFunction: "sha2-256"}, errs.Invalid},
		"unknown hash":      {Params{CIDVersion: 1, Chunker: "buzhash", HashFunction: "md17"}, errs.Invalid},
		"v0 not sha2":       {Params{CIDVersion: 0, Chunker: "buzhash", HashFunction: "blake3"}, errs.Invalid},
		"nocopy wrapped":    {Params{CIDVersion: 1, Chunker: "buzhash", HashFunction: "sha2-256", Nocopy: true}, errs.Invalid},
		"refs with nocopy":  {Params{CIDVersion: 1, Chunker: "nix-refs-4096-524288", RawLeaves: true, HashFunction: "sha2-256", Nocopy: true}, errs.Config},
		"refs with blake3":  {Params{CIDVersion: 1, Chunker: "nix-refs-4096-524288", RawLeaves: true, HashFunction: "blake3"}, errs.Invalid},
		"refs other widths": {Params{CIDVersion: 1, Chunker: "nix-refs-4096-524288", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 1024}, errs.Invalid},
	}
	for name, c := range bad {
		if err := c.p.Validate(); !errs.Is(err, c.kind) {
			t.Errorf("%s: Validate = %v, want kind %s", name, err, c.kind)
		}
	}
	if Default().MaxLinks() != DefaultMaxFileLinks || (Params{MaxFileLinks: 7}).MaxLinks() != 7 {
		t.Error("MaxLinks")
	}
}
