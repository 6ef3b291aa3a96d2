package unixfs

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Options tune how Open reads a file.
type Options struct {
	// Prefetch is how many raw leaves are fetched ahead of the reader,
	// concurrently (0: none; for a remote source, where each block is a
	// round trip). Inner nodes are fetched when reached, so that the
	// fetches go to the leaves that carry the bytes and the memory held
	// stays bounded by (Prefetch + MaxDepth) blocks.
	Prefetch int
	// Seq, if set, gives the blocks in walk order (a CAR); the walk takes
	// them from the Source once Seq fails. File.Close closes it.
	Seq Sequence
}

// File is one UnixFS file read from a Source, depth first, as the reader
// reaches its blocks. A block missing half-way is an error at that offset
// (wrapping ErrNotLocal when the source lacks it), after the bytes before
// it.
type File struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // prefetches

	src      Source
	check    Check      // what the source checked itself
	leaves   LeafOpener // nil: leaves are read as blocks
	seq      Sequence
	prefetch int
	ahead    int // leaves fetched ahead, not yet reached

	root  cid.Cid
	size  int64
	off   int64
	stack []*frame
	cur   io.ReadCloser // the raw leaf being read as a stream
	data  []byte        // bytes of the current block not yet returned
	err   error         // sticky
}

var (
	_ io.ReadCloser = (*File)(nil)
	_ Sizer         = (*File)(nil)
)

// frame is the links of one node being read.
type frame struct {
	links   []cid.Cid
	pending []*fetch // fetched ahead, by link index
	i       int      // the next link to read
	next    int      // the next link to fetch ahead
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// Open reads the root of the file c from src and returns a reader of the
// file. ctx bounds the whole read; Close ends it and waits for the
// fetches it started.
func Open(ctx context.Context, src Source, c cid.Cid, opts Options) (*File, error) {
	switch c.Type() {
	case cid.Raw, cid.DagProtobuf:
	default:
		if opts.Seq != nil {
			opts.Seq.Close(false)
		}
		return nil, errs.Errorf(errs.Invalid, "%s: codec %#x is not a UnixFS file", c, c.Type())
	}
	ctx, cancel := context.WithCancel(ctx)
	chk := src.Checks()
	f := &File{ctx: ctx, cancel: cancel, src: src, seq: opts.Seq, prefetch: opts.Prefetch, root: c, check: chk}
	if lo, ok := src.(LeafOpener); ok && chk == CheckNodesOnly {
		f.leaves = lo
	}
	if err := f.open(c); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) open(c cid.Cid) error {
	if c.Type() == cid.Raw {
		if _, ok := identity(c); !ok && f.leaves != nil {
			rc, size, err := f.leaves.OpenLeaf(c)
			if err != nil {
				return err
			}
			f.cur, f.size = rc, size
			return nil
		}
		data, err := f.block(c)
		if err != nil {
			return err
		}
		f.data, f.size = data, int64(len(data))
		return nil
	}
	data, err := f.block(c)
	if err != nil {
		return err
	}
	n, err := f.node(c, data)
	if err != nil {
		return err
	}
	f.size = int64(n.FileSize())
	return nil
}

// Size is the file's size, as its root says.
func (f *File) Size() int64 { return f.size }

// block returns c's bytes, checked as the source calls for: from the
// sequence while there is one, else from the source.
func (f *File) block(c cid.Cid) ([]byte, error) {
	if d, ok := identity(c); ok {
		return d, nil
	}
	if f.seq != nil {
		data, err := f.seq.Next(c)
		if err == nil {
			return data, f.verify(c, data)
		}
		f.seq.Close(false)
		f.seq = nil
	}
	return f.fetch(c)
}

// fetch returns c's bytes from the source, checked. Safe to call from a
// prefetch.
func (f *File) fetch(c cid.Cid) ([]byte, error) {
	if d, ok := identity(c); ok {
		return d, nil
	}
	data, err := f.src.Block(f.ctx, c)
	if err != nil {
		return nil, err
	}
	return data, f.verify(c, data)
}

// verify checks a block against c when the source has not: every block
// from a source that checks nothing (CheckNone); none from one that
// checked them all (CheckedBySource, and its Sequence); from a local store
// (CheckNodesOnly), the nodes with links, once decoded (node).
func (f *File) verify(c cid.Cid, data []byte) error {
	if f.check != CheckNone {
		return nil
	}
	return f.sum(c, data)
}

func (f *File) sum(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return errs.Errorf(errs.Invalid, "block %s: cannot hash with its CID's prefix: %w", c, err)
	}
	if !got.Equals(c) {
		return errs.Errorf(errs.Corrupt, "%s: the %s block does not hash to its CID (%s): %w", c, f.src, got, ErrBlockMismatch)
	}
	return nil
}

// node decodes the dag-pb node c and queues its data and links.
func (f *File) node(c cid.Cid, data []byte) (*ft.FSNode, error) {
	if len(f.stack) >= MaxDepth {
		return nil, errs.Errorf(errs.Corrupt, "block %s: the file's DAG is deeper than %d", c, MaxDepth)
	}
	if c.Type() != cid.DagProtobuf {
		return nil, errs.Errorf(errs.Corrupt, "block %s: codec %#x inside a UnixFS file", c, c.Type())
	}
	pn, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		return nil, errs.Errorf(errs.Corrupt, "block %s: not dag-pb: %w", c, err)
	}
	n, err := ft.FSNodeFromBytes(pn.Data())
	if err != nil {
		return nil, errs.Errorf(errs.Corrupt, "block %s: not UnixFS: %w", c, err)
	}
	if t := n.Type(); t != ft.TFile && t != ft.TRaw {
		return nil, errs.Errorf(errs.Invalid, "block %s: a UnixFS %s, not a file", c, t)
	}
	links := pn.Links()
	if len(links) > 0 && f.check == CheckNodesOnly {
		// The nodes that give the file its shape: a few KiB per 174
		// blocks. (A dag-pb leaf, CIDv0's, carries bytes, as a raw one.)
		if err := f.sum(c, data); err != nil {
			return nil, err
		}
	}
	if len(links) > 0 && len(n.BlockSizes()) != len(links) {
		return nil, errs.Errorf(errs.Corrupt, "block %s: %d links but %d block sizes", c, len(links), len(n.BlockSizes()))
	}
	fr := &frame{links: make([]cid.Cid, len(links))}
	for i, l := range links {
		fr.links[i] = l.Cid
	}
	if len(links) > 0 {
		fr.pending = make([]*fetch, len(links))
	}
	f.data = n.Data()
	f.stack = append(f.stack, fr)
	return n, nil
}

// next moves to the next block with data; io.EOF after the last.
func (f *File) next() error {
	for len(f.stack) > 0 {
		fr := f.stack[len(f.stack)-1]
		if fr.i == len(fr.links) {
			f.stack = f.stack[:len(f.stack)-1]
			continue
		}
		i, c := fr.i, fr.links[fr.i]
		fr.i++
		f.startAhead(fr)
		var data []byte
		var err error
		if p := fr.pending[i]; p != nil {
			select {
			case <-p.done:
			case <-f.ctx.Done():
				return f.ctx.Err()
			}
			fr.pending[i] = nil
			f.ahead--
			data, err = p.data, p.err
		} else if _, id := identity(c); c.Type() == cid.Raw && f.leaves != nil && !id {
			rc, _, err := f.leaves.OpenLeaf(c)
			if err != nil {
				return err
			}
			f.cur = rc
			return nil
		} else {
			data, err = f.block(c)
		}
		if err != nil {
			return err
		}
		if c.Type() == cid.Raw {
			f.data = data
			return nil
		}
		_, err = f.node(c, data)
		return err
	}
	return io.EOF
}

// startAhead fetches the raw leaves after fr's current link while fewer
// than Prefetch are on their way; never while a sequence gives the blocks
// in order.
func (f *File) startAhead(fr *frame) {
	if f.prefetch == 0 || f.seq != nil {
		return
	}
	if fr.next < fr.i {
		fr.next = fr.i
	}
	for fr.next < len(fr.links) && f.ahead < f.prefetch && fr.links[fr.next].Type() == cid.Raw {
		p := &fetch{done: make(chan struct{})}
		fr.pending[fr.next] = p
		f.ahead++
		c := fr.links[fr.next]
		fr.next++
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(p.done)
			p.data, p.err = f.fetch(c)
		}()
	}
}

func (f *File) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if err := f.ctx.Err(); err != nil {
		return 0, err
	}
	for {
		if f.cur != nil {
			n, err := f.cur.Read(p)
			f.off += int64(n)
			if err == io.EOF {
				f.cur.Close()
				f.cur = nil
				err = nil
			}
			if err != nil {
				f.err = errs.Errorf(errs.Transient, "%s: at byte %d: %w", f.root, f.off, err)
				return n, f.err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		if len(f.data) > 0 {
			n := copy(p, f.data)
			f.data = f.data[n:]
			f.off += int64(n)
			return n, nil
		}
		err := f.next()
		if err == io.EOF {
			if f.off != f.size {
				err = errs.Errorf(errs.Corrupt, "%s: the file has %d bytes, its root says %d", f.root, f.off, f.size)
			} else if f.seq != nil {
				f.seq.Close(true)
				f.seq = nil
			}
		}
		if err != nil {
			f.err = err
			return 0, err
		}
	}
}

// Close ends the read and waits for the fetches it started.
func (f *File) Close() error {
	f.cancel()
	f.wg.Wait()
	if f.cur != nil {
		f.cur.Close()
		f.cur = nil
	}
	if f.seq != nil {
		f.seq.Close(false)
		f.seq = nil
	}
	f.stack, f.data = nil, nil
	return nil
}

// String names the file and its source, for logs.
func (f *File) String() string { return fmt.Sprintf("%s from %s", f.root, f.src) }
