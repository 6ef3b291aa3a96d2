package mirrorcache

import (
	"crypto/sha256"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

func sha256Nix32(b []byte) string {
	s := sha256.Sum256(b)
	return nixbase32.EncodeToString(s[:])
}
