// Package cachehttp serves a file:// binary cache directory over HTTP, the
// way Nix's http:// binary cache store reads it, and nothing else: only
// /nix-cache-info, /<hashpart>.narinfo, /nar/<filehash>.nar[.ext] and the
// mirror list (/nix-ipfs-mirrors.json, package mirrorlist) are answered,
// each name checked against Nix's alphabet (package cachedir's name rules)
// before it touches the disk, so no request can reach a file outside what
// a cache holds (the publisher's .nix-ipfs/ state, temp files, symlinks
// out of the directory).
package cachehttp

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
)

// Kind is what a request path names.
type Kind int

const (
	Invalid Kind = iota
	CacheInfo
	NarInfo
	Nar
	MirrorList
	Latest
)

// Classify says what a request's (decoded) URL path names.
func Classify(p string) Kind {
	switch {
	case cachedir.IsCacheInfoPath(p):
		return CacheInfo
	case cachedir.IsNarInfoPath(p):
		return NarInfo
	case cachedir.IsNarPath(p):
		return Nar
	case cachedir.IsMirrorListPath(p):
		return MirrorList
	case cachedir.IsLatestPath(p):
		return Latest
	}
	return Invalid
}

// Handler serves the cache in dir.
func Handler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// RawPath is set when the path had escapes; a valid name needs none.
		if r.URL.RawPath != "" && r.URL.RawPath != r.URL.Path {
			http.Error(w, "not a binary cache path", http.StatusBadRequest)
			return
		}
		kind := Classify(r.URL.Path)
		if kind == Invalid {
			http.Error(w, "not a binary cache path", http.StatusNotFound)
			return
		}
		name := filepath.Join(dir, filepath.FromSlash(r.URL.Path[1:]))
		// O_NOFOLLOW: a symlink planted in the cache must not lead out of it.
		f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		switch kind {
		case CacheInfo:
			w.Header().Set("Content-Type", "text/x-nix-cache-info")
		case NarInfo:
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
		case Nar:
			w.Header().Set("Content-Type", "application/x-nix-nar")
			// A NAR's name is its hash: it never changes.
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		case MirrorList:
			w.Header().Set("Content-Type", "application/json")
			// Rewritten when mirrors come and go.
			w.Header().Set("Cache-Control", "public, max-age=60")
		case Latest:
			w.Header().Set("Content-Type", "application/json")
			// Replaced at each build of the job; a fleet polls it.
			w.Header().Set("Cache-Control", "public, max-age=10")
		}
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		http.ServeContent(w, r, "", time.Time{}, f)
	})
}
