// Package storepath validates Nix store paths that arrive from outside (an
// environment variable, an event, a URL) before anything touches the disk.
//
// A valid store path is <storeDir>/<hash>-<name>: hash is 32 characters of
// Nix's base-32 alphabet, name is 1 to 211 characters of [A-Za-z0-9+-._?=]
// and is not "." or "..". This is the rule Nix itself applies
// (libstore/path.cc), so a path that passes can never contain a slash or
// leave the store directory.
package storepath

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// DefaultStoreDir is Nix's default store directory.
const DefaultStoreDir = "/nix/store"

const (
	// HashLen is the length of the hash part of a store path's basename.
	HashLen = 32
	// MaxNameLen is the longest name Nix accepts.
	MaxNameLen = 211
)

// nix32 is Nix's base-32 alphabet: no e, o, u, t.
const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"

// ValidateStoreDir checks that dir is an absolute, clean directory path.
func ValidateStoreDir(dir string) error {
	if dir == "" || !strings.HasPrefix(dir, "/") || path.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("store directory %q: must be an absolute, clean path other than /", dir)
	}
	return nil
}

// Validate checks that p is a store path directly under storeDir.
func Validate(storeDir, p string) error {
	if err := ValidateStoreDir(storeDir); err != nil {
		return err
	}
	dir, base := path.Split(p)
	if dir != storeDir+"/" {
		return fmt.Errorf("store path %q: not directly under store directory %s", p, storeDir)
	}
	if err := ValidateBase(base); err != nil {
		return fmt.Errorf("store path %q: %w", p, err)
	}
	return nil
}

// ValidateBase checks a store path's basename, "<hash>-<name>".
func ValidateBase(base string) error {
	if len(base) < HashLen+2 || base[HashLen] != '-' {
		return errors.New("basename must be <32-character hash>-<name>")
	}
	if err := ValidateHashPart(base[:HashLen]); err != nil {
		return err
	}
	return ValidateName(base[HashLen+1:])
}

// ValidateHashPart checks the 32-character hash part of a basename.
func ValidateHashPart(h string) error {
	if len(h) != HashLen {
		return fmt.Errorf("hash part %q: must be %d characters", h, HashLen)
	}
	for i := 0; i < len(h); i++ {
		if strings.IndexByte(nix32, h[i]) < 0 {
			return fmt.Errorf("hash part %q: invalid character %q", h, h[i])
		}
	}
	return nil
}

// ValidateName checks the name part of a basename.
func ValidateName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name longer than %d characters", MaxNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("name %q: not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return fmt.Errorf("name %q: invalid character %q", name, c)
		}
	}
	return nil
}

// HashPart returns the hash part of a validated store path or basename.
func HashPart(p string) string {
	base := path.Base(p)
	if len(base) < HashLen {
		return base
	}
	return base[:HashLen]
}
