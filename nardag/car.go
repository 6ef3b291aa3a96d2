package nardag

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// Importer stores the blocks of a stream of CARs and pins the roots their
// headers name: kubo's `dag import` (ipfs.Kubo.DagImport). It reports,
// for each root it tried to pin, "" or why it could not.
type Importer interface {
	DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error)
}

// The CAR's buffer between the DAG builder and kubo: 4 MiB, a few
// chunks' worth.
const (
	carChunks    = 64
	carChunkSize = 64 << 10
)

// PlaceholderRoot names no block: the CAR that carries a DAG's blocks
// needs a root in its header before the DAG's root is known. kubo pins a
// header's root only if it holds the block (`dag import` reads it from
// its own blockstore, never the network), and this one is the hash of a
// sentence no one stores, so it is reported unpinnable and ignored.
var PlaceholderRoot = func() cid.Cid {
	h, err := mh.Sum([]byte("nix-ipfs: the root follows in the next CAR"), mh.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}()

// Import streams the blocks build makes to imp while they are made, and
// returns the root build returned, pinned recursively if pin. kubo
// checks every block against its CID as it stores it.
//
// imp gets two CARs: the blocks, under PlaceholderRoot, and an empty one
// whose header names the real root, written once build has returned it.
// kubo pins the roots of all the CARs of one import at its end, holding
// its GC lock from start to end, so the DAG is never exposed to a garbage
// collection before it is pinned.
func Import(ctx context.Context, imp Importer, build func(put Sink) (cid.Cid, error), pin bool) (cid.Cid, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The CAR is written while kubo reads the blocks before it.
	pipe := NewPipe(carChunks, carChunkSize)
	var (
		wg       sync.WaitGroup
		root     cid.Cid
		buildErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		root, buildErr = writeCAR(pipe, build)
		pipe.CloseWrite(buildErr)
	}()
	// The second CAR is read only after the first ended, when the
	// goroutine has set root.
	tail := &lazyReader{open: func() io.Reader {
		wg.Wait()
		return carHeader(root)
	}}
	pinned, err := imp.DagImport(ctx, []io.Reader{pipe, tail}, pin)
	// Unblock the builder if the importer stopped reading, then wait.
	pipe.CloseRead(err)
	wg.Wait()
	if buildErr != nil && !errors.Is(buildErr, io.ErrClosedPipe) && ctx.Err() == nil {
		// Our source failed, not the daemon: its error and kind matter.
		return cid.Undef, fmt.Errorf("dag import: building the DAG: %w", buildErr)
	}
	if err != nil {
		return cid.Undef, err
	}
	if buildErr != nil {
		return cid.Undef, fmt.Errorf("dag import: building the DAG: %w", buildErr)
	}
	if pin {
		// The daemon took every block but did not pin the root: it is
		// shutting down ("pinner closed"), out of space, or cut the
		// answer short. As for any failure kubo reports, a retry may find
		// it healed (ipfs.daemonKind's default).
		msg, ok := pinned[root]
		if !ok {
			return cid.Undef, errs.Errorf(errs.Transient, "dag import: root %s not reported pinned", root)
		}
		if msg != "" {
			return cid.Undef, errs.Errorf(errs.Transient, "dag import: pin %s: %s", root, msg)
		}
	}
	return root, nil
}

// writeCAR writes a CARv1 of the blocks build makes to w, under
// PlaceholderRoot, and returns build's root.
func writeCAR(w io.Writer, build func(put Sink) (cid.Cid, error)) (cid.Cid, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := io.Copy(bw, carHeader(PlaceholderRoot)); err != nil {
		return cid.Undef, err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	root, err := build(func(c cid.Cid, data []byte) error {
		cb := c.Bytes()
		n := binary.PutUvarint(lenBuf[:], uint64(len(cb)+len(data)))
		if _, err := bw.Write(lenBuf[:n]); err != nil {
			return err
		}
		if _, err := bw.Write(cb); err != nil {
			return err
		}
		_, err := bw.Write(data)
		return err
	})
	if err != nil {
		return cid.Undef, err
	}
	return root, bw.Flush()
}

// carHeader is a CARv1 header naming root: the varint length, then the
// DAG-CBOR map {"roots": [root], "version": 1} (keys in DAG-CBOR's order:
// shorter first).
func carHeader(root cid.Cid) io.Reader {
	link := append([]byte{0}, root.Bytes()...) // CBOR tag 42 holds 0x00 + CID
	var h []byte
	h = append(h, 0xa2)             // map of 2
	h = append(h, 0x65)             // text of 5
	h = append(h, "roots"...)       //
	h = append(h, 0x81, 0xd8, 0x2a) // array of 1, tag 42
	h = cborBytesHead(h, len(link)) //
	h = append(h, link...)          //
	h = append(h, 0x67)             // text of 7
	h = append(h, "version"...)     //
	h = append(h, 0x01)             // 1
	out := binary.AppendUvarint(nil, uint64(len(h)))
	return &sliceReader{b: append(out, h...)}
}

// cborBytesHead appends the head of a CBOR byte string of n bytes.
func cborBytesHead(b []byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, 0x40|byte(n))
	case n < 256:
		return append(b, 0x58, byte(n))
	default:
		return append(b, 0x59, byte(n>>8), byte(n))
	}
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// lazyReader opens its reader on the first Read.
type lazyReader struct {
	open func() io.Reader
	r    io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		l.r = l.open()
	}
	return l.r.Read(p)
}
