package publisher

import (
	"fmt"
	"os"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/perm"
)

// Cache is the binary cache directory the publisher writes; package
// cachedir owns its layout, write order and the grace handshake.
type Cache = cachedir.Cache

// LoadSecretKey reads a Nix binary cache secret key file ("name:base64",
// as nix-store --generate-binary-cache-key writes it). A key file that
// group or others can read is refused: anyone who reads it can sign paths
// every client of the cache trusts. The key is never logged.
func LoadSecretKey(path string) (signature.SecretKey, error) {
	var zero signature.SecretKey
	fi, err := os.Stat(path)
	if err != nil {
		return zero, fmt.Errorf("secret key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return zero, fmt.Errorf("secret key %s: mode %04o lets group or others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("secret key: %w", perm.Hint(path, "read", err))
	}
	sk, err := signature.LoadSecretKey(strings.TrimSpace(string(data)))
	if err != nil {
		// The error must not quote the file's contents.
		return zero, fmt.Errorf("secret key %s: not a Nix binary cache secret key (name:base64)", path)
	}
	return sk, nil
}
