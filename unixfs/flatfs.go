package unixfs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// FlatFS is the block store of a kubo repository on this machine, when that
// store is flatfs (kubo's default: one file per block, named by its
// multihash, written to a temporary name and renamed into place, so a
// reader sees a whole block or none). It only reads.
//
// Why: kubo spends 1.2-1.8 CPU-s serving 1 GiB of local blocks through its
// gateway (allocation and the page faults of fresh buffers, mostly; RPC
// cat twice that), against about 0.2 for reading the same files here, and
// on a small machine a NAR fetch is bound by CPU (docs/BENCHMARKS.md,
// section 4). Its leaves are read straight into the reader's buffer
// (LeafOpener) and not hashed: see CheckNodesOnly.
type FlatFS struct {
	dir   string // the flatfs directory (…/blocks)
	shard flatfs.ShardFunc
}

var (
	_ Source     = (*FlatFS)(nil)
	_ LeafOpener = (*FlatFS)(nil)
)

// OpenFlatFS opens the block store of the kubo repository repo for
// reading. It fails (Config), saying why, when the repository has no
// datastore_spec, its /blocks mount is not flatfs, or the store cannot be
// read by this process.
func OpenFlatFS(repo string) (*FlatFS, error) {
	specFile := filepath.Join(repo, "datastore_spec")
	b, err := os.ReadFile(specFile)
	if err != nil {
		return nil, errs.Errorf(errs.Config, "kubo repository %s: %w", repo, err)
	}
	// The repository's own summary of its configured datastore: kubo
	// writes it at init, and refuses to start when the config disagrees.
	var spec struct {
		Type   string `json:"type"`
		Mounts []struct {
			Mountpoint string `json:"mountpoint"`
			Type       string `json:"type"`
			Path       string `json:"path"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, errs.Errorf(errs.Config, "%s: %w", specFile, err)
	}
	dir := ""
	for _, m := range spec.Mounts {
		if m.Mountpoint != "/blocks" {
			continue
		}
		if m.Type != "flatfs" {
			return nil, errs.Errorf(errs.Config, "%s: the block store is %q, not flatfs", specFile, m.Type)
		}
		dir = m.Path
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(repo, dir)
		}
	}
	if dir == "" {
		return nil, errs.Errorf(errs.Config, "%s: no flatfs /blocks mount", specFile)
	}
	sh, err := flatfs.ReadShardFunc(dir)
	if err != nil {
		return nil, errs.Errorf(errs.Config, "block store %s: %w", dir, err)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return nil, errs.Errorf(errs.Config, "block store %s: %w", dir, err)
	}
	return &FlatFS{dir: dir, shard: sh.Func()}, nil
}

// Dir is the block store's directory.
func (s *FlatFS) Dir() string { return s.dir }

// String names the store, for messages.
func (s *FlatFS) String() string { return "flatfs " + s.dir }

// Checks is CheckNodesOnly: a store on this machine, written by kubo.
func (s *FlatFS) Checks() Check { return CheckNodesOnly }

func (s *FlatFS) path(c cid.Cid) string {
	key := dshelp.MultihashToDsKey(c.Hash()).String()[1:]
	return filepath.Join(s.dir, s.shard(key), key+".data")
}

// Block returns c's block, as stored; NotYet wrapping ErrNotLocal when the
// store lacks it (not pinned here, or collected since).
func (s *FlatFS) Block(_ context.Context, c cid.Cid) ([]byte, error) {
	if d, ok := identity(c); ok {
		return d, nil
	}
	b, err := os.ReadFile(s.path(c))
	if err != nil {
		return nil, s.fail(c, err)
	}
	return b, nil
}

// Has says whether the store holds c (a file under its key).
func (s *FlatFS) Has(c cid.Cid) bool {
	if _, ok := identity(c); ok {
		return true
	}
	_, err := os.Stat(s.path(c))
	return err == nil
}

var _ Haver = (*FlatFS)(nil)

// OpenLeaf opens the raw block c's file.
func (s *FlatFS) OpenLeaf(c cid.Cid) (io.ReadCloser, int64, error) {
	f, err := os.Open(s.path(c))
	if err != nil {
		return nil, 0, s.fail(c, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, s.fail(c, err)
	}
	return f, st.Size(), nil
}

func (s *FlatFS) fail(c cid.Cid, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errs.Errorf(errs.NotYet, "%s: %w", c, ErrNotLocal)
	}
	return errs.Errorf(errs.Transient, "%s: block %s: %w", s, c, err)
}

// Open returns a reader of the UnixFS file c, its blocks read as the
// reader reaches them: a block missing half-way is an error wrapping
// ErrNotLocal at that offset.
func (s *FlatFS) Open(ctx context.Context, c cid.Cid) (*File, error) {
	return Open(ctx, s, c, Options{})
}
