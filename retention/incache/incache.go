// Package incache checks that a binary cache (a directory, or a URL) holds
// a store path: what a pin of that path needs before it can keep anything.
package incache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// Check checks that the binary cache (a directory, or a URL: http(s) or
// file) has a narinfo for the store path sp: a pin of a path the cache
// lacks would keep nothing, so it is refused.
func Check(ctx context.Context, dir, cacheURL, sp string) error {
	if !path.IsAbs(sp) {
		return errs.Errorf(errs.Invalid, "%q: not an absolute store path (e.g. /nix/store/<hash>-<name>)", sp)
	}
	if err := storepath.Validate(path.Dir(sp), sp); err != nil {
		return errs.E(errs.Invalid, err)
	}
	name := cachedir.NarInfoName(storepath.HashPart(sp))
	var body []byte
	where := ""
	switch {
	case dir != "":
		where = dir
		b, err := os.ReadFile(cachedir.Cache{Dir: dir}.NarInfoPath(storepath.HashPart(sp)))
		if errors.Is(err, fs.ErrNotExist) {
			return errs.Errorf(errs.Invalid, "%s is not in the cache %s (no %s): publish it first, a pin keeps only what the cache holds", sp, dir, name)
		}
		if err != nil {
			return fmt.Errorf("cache %s: %w", dir, err)
		}
		body = b
	default:
		where = cacheURL
		u, err := url.Parse(cacheURL)
		if err != nil {
			return errs.Errorf(errs.Invalid, "--cache-url %q: %v", cacheURL, err)
		}
		switch u.Scheme {
		case "file":
			return Check(ctx, u.Path, "", sp)
		case "http", "https":
		default:
			return errs.Errorf(errs.Invalid, "--cache-url %q: want http, https or file", cacheURL)
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimRight(cacheURL, "/")+"/"+name, nil)
		if err != nil {
			return errs.E(errs.Invalid, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return errs.E(errs.Transient, fmt.Errorf("ask the cache %s for %s: %w", cacheURL, sp, err))
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return errs.Errorf(errs.Invalid, "%s is not in the cache %s (404 for %s): publish it first, a pin keeps only what the cache holds", sp, cacheURL, name)
		}
		if resp.StatusCode != http.StatusOK {
			return errs.Errorf(errs.Transient, "ask the cache %s for %s: %s", cacheURL, name, resp.Status)
		}
		body, err = io.ReadAll(io.LimitReader(resp.Body, narinfo.MaxSize+1))
		if err != nil {
			return errs.E(errs.Transient, fmt.Errorf("ask the cache %s for %s: %w", cacheURL, name, err))
		}
	}
	ni, err := narinfo.ParseBytes(bytes.TrimSpace(body))
	if err != nil {
		return errs.Errorf(errs.Invalid, "%s in %s does not parse: %v", name, where, err)
	}
	if ni.StorePath != sp {
		return errs.Errorf(errs.Invalid, "%s is not in the cache %s: its %s is for %s", sp, where, name, ni.StorePath)
	}
	return nil
}
