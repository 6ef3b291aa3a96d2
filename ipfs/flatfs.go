package ipfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	flatfs "github.com/ipfs/go-ds-flatfs"
	mh "github.com/multiformats/go-multihash"
)

// FlatFS reads unixfs files straight from the block store of a kubo
// repository on this machine, when that store is flatfs (kubo's default:
// one file per block, written to a temporary name and renamed into place,
// so a reader sees a whole block or none). It only reads, and only files
// whose every block is there; anything else is for the daemon (Reader.Cat
// falls back to it, from the offset reached).
//
// Why: kubo spends 1.2-1.8 CPU-s serving 1 GiB of local blocks through its
// gateway (allocation and the page faults of fresh buffers, mostly; RPC
// cat twice that), against about 0.2 for reading the same files here, and
// on a small machine a NAR fetch is bound by CPU (docs/BENCHMARKS.md,
// section 4). Nothing is trusted for it: the file's bytes are checked
// against the narinfo's NarHash by the substituter, as bytes from the
// daemon are. The nodes that give the file its shape (every block with
// links) are checked against their CIDs here, which costs next to nothing
// (a few KiB per 174 blocks), so a damaged store cannot send a read round
// in circles; the leaves are not, since the NarHash covers them.
type FlatFS struct {
	dir   string // the flatfs directory (…/blocks)
	shard flatfs.ShardFunc
}

// ErrNotLocal is a block the store does not hold.
var ErrNotLocal = errors.New("block not in the local block store")

// maxDepth bounds the DAG a FlatFS file is read through: a balanced unixfs
// file of 174 links per node is 5 levels deep at 1 TiB.
const maxDepth = 32

// OpenFlatFS opens the block store of the kubo repository repo for
// reading. It fails, saying why, when the repository has no
// datastore_spec, its /blocks mount is not flatfs, or the store cannot be
// read by this process.
func OpenFlatFS(repo string) (*FlatFS, error) {
	specFile := filepath.Join(repo, "datastore_spec")
	b, err := os.ReadFile(specFile)
	if err != nil {
		return nil, fmt.Errorf("kubo repository %s: %w", repo, err)
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
		return nil, fmt.Errorf("%s: %w", specFile, err)
	}
	dir := ""
	for _, m := range spec.Mounts {
		if m.Mountpoint != "/blocks" {
			continue
		}
		if m.Type != "flatfs" {
			return nil, fmt.Errorf("%s: the block store is %q, not flatfs", specFile, m.Type)
		}
		dir = m.Path
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(repo, dir)
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("%s: no flatfs /blocks mount", specFile)
	}
	sh, err := flatfs.ReadShardFunc(dir)
	if err != nil {
		return nil, fmt.Errorf("block store %s: %w", dir, err)
	}
	if _, err := os.ReadDir(dir); err != nil {
		return nil, fmt.Errorf("block store %s: %w", dir, err)
	}
	return &FlatFS{dir: dir, shard: sh.Func()}, nil
}

// Dir is the block store's directory.
func (s *FlatFS) Dir() string { return s.dir }

func (s *FlatFS) path(c cid.Cid) string {
	key := dshelp.MultihashToDsKey(c.Hash()).String()[1:]
	return filepath.Join(s.dir, s.shard(key), key+".data")
}

// block returns c's block; ErrNotLocal when the store lacks it.
func (s *FlatFS) block(c cid.Cid) ([]byte, error) {
	if d, ok := identity(c); ok {
		return d, nil
	}
	b, err := os.ReadFile(s.path(c))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", c, ErrNotLocal)
	}
	return b, err
}

// identity returns the data an identity CID holds in itself.
func identity(c cid.Cid) ([]byte, bool) {
	if c.Prefix().MhType != mh.IDENTITY {
		return nil, false
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, false
	}
	return d.Digest, true
}

// Open returns a reader of the unixfs file c. Its blocks are read as the
// reader reaches them: a block missing half-way is an error wrapping
// ErrNotLocal at that offset.
func (s *FlatFS) Open(c cid.Cid) (*FlatFile, error) {
	f := &FlatFile{fs: s}
	if c.Prefix().Codec == cid.Raw {
		if d, ok := identity(c); ok {
			f.data, f.size = d, int64(len(d))
			return f, nil
		}
		file, err := os.Open(s.path(c))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", c, ErrNotLocal)
		}
		if err != nil {
			return nil, err
		}
		st, err := file.Stat()
		if err != nil {
			file.Close()
			return nil, err
		}
		f.cur, f.size = file, st.Size()
		return f, nil
	}
	n, err := f.node(c)
	if err != nil {
		return nil, err
	}
	f.size = int64(n.FileSize())
	return f, nil
}

// FlatFile is one unixfs file read from a FlatFS, depth first.
type FlatFile struct {
	fs    *FlatFS
	size  int64
	stack [][]cid.Cid // the links of each node being read, not yet read
	cur   *os.File    // the raw leaf being read
	data  []byte      // the data of a dag-pb node being read
}

// Size is the file's size, as its root says.
func (f *FlatFile) Size() int64 { return f.size }

// node reads the dag-pb node c, checked against c when it has links, and
// queues its data and links.
func (f *FlatFile) node(c cid.Cid) (*ft.FSNode, error) {
	if len(f.stack) >= maxDepth {
		return nil, fmt.Errorf("%s: the file's DAG is deeper than %d", c, maxDepth)
	}
	if c.Prefix().Codec != cid.DagProtobuf {
		return nil, fmt.Errorf("%s: not a unixfs block (codec %#x)", c, c.Prefix().Codec)
	}
	b, err := f.fs.block(c)
	if err != nil {
		return nil, err
	}
	pn, err := merkledag.DecodeProtobuf(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	links := pn.Links()
	if len(links) > 0 {
		if got, err := c.Prefix().Sum(b); err != nil || !got.Equals(c) {
			return nil, fmt.Errorf("%s: the stored block does not hash to its CID", c)
		}
	}
	n, err := ft.FSNodeFromBytes(pn.Data())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	if t := n.Type(); t != ft.TFile && t != ft.TRaw {
		return nil, fmt.Errorf("%s: a unixfs %s, not a file", c, t)
	}
	cids := make([]cid.Cid, len(links))
	for i, l := range links {
		cids[i] = l.Cid
	}
	f.data = n.Data()
	f.stack = append(f.stack, cids)
	return n, nil
}

// next moves to the next block with data; io.EOF after the last.
func (f *FlatFile) next() error {
	for len(f.stack) > 0 {
		top := f.stack[len(f.stack)-1]
		if len(top) == 0 {
			f.stack = f.stack[:len(f.stack)-1]
			continue
		}
		c := top[0]
		f.stack[len(f.stack)-1] = top[1:]
		if c.Prefix().Codec != cid.Raw {
			if _, err := f.node(c); err != nil {
				return err
			}
			return nil
		}
		if d, ok := identity(c); ok {
			f.data = d
			return nil
		}
		file, err := os.Open(f.fs.path(c))
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", c, ErrNotLocal)
		}
		if err != nil {
			return err
		}
		f.cur = file
		return nil
	}
	return io.EOF
}

func (f *FlatFile) Read(p []byte) (int, error) {
	for {
		if f.cur != nil {
			n, err := f.cur.Read(p)
			if err == io.EOF {
				f.cur.Close()
				f.cur = nil
				err = nil
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		if len(f.data) > 0 {
			n := copy(p, f.data)
			f.data = f.data[n:]
			return n, nil
		}
		if err := f.next(); err != nil {
			return 0, err
		}
	}
}

// Close releases the block being read.
func (f *FlatFile) Close() error {
	if f.cur != nil {
		f.cur.Close()
		f.cur = nil
	}
	f.stack, f.data = nil, nil
	return nil
}
