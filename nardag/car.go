package nardag

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

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

// BlockPinner is an Importer that can also store one block and pin it
// recursively without reading the DAG below it (kubo's `block put --pin`,
// boxo's PinWithMode: ipfs.Kubo.PinBlock), and drop that pin. Import uses
// it, when imp has it, to pin a DAG's root without the walk that `dag
// import --pin-roots` does (boxo's Pin with recurse: merkledag.FetchGraph
// reads every block of the DAG back from the blockstore after the
// import): 0.37-0.39 CPU-seconds and about 0.5 s of wall clock per GiB,
// at the end of the import when nothing else runs beside it
// (docs/BENCHMARKS.md, issue 25).
type BlockPinner interface {
	PinBlock(ctx context.Context, c cid.Cid, data []byte) error
	Unpin(ctx context.Context, c cid.Cid) error
}

// rootPinWait bounds how long Import waits for the root's pin without a
// walk before falling back to the import's own pin (with the walk). It
// takes milliseconds, unless kubo's garbage collector waits for the
// import's GC lock: kubo's lock (a sync.RWMutex) then holds the pin back
// until the GC has run, and the GC waits for the import, which waits for
// the pin.
const rootPinWait = 5 * time.Second

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
// whose header names the root, written once build has returned it. kubo
// holds its GC lock from the import's start to its end (with pin), so the
// DAG is never exposed to a garbage collection before it is pinned.
//
// If imp is a BlockPinner and the root is a DAG-PB node, the root is
// pinned without kubo's walk of the DAG: while the import is still open,
// before the second CAR goes, the root's block is put and pinned
// recursively in a request of its own (PinBlock), and the second CAR names
// PlaceholderRoot again. The GC cannot run between the import's first
// stored block and its last (kubo's GC lock, taken before the import
// reads a byte), and the pin comes before the import's end, so once the
// import succeeds the pinned DAG is whole. If the import fails after the
// pin, the pin is dropped: a DAG pinned with blocks missing would fail
// kubo's next GC. If the pin does not come within rootPinWait (a GC is
// waiting for the lock), or fails, the second CAR names the root and kubo
// pins it with its walk, as without a BlockPinner.
func Import(ctx context.Context, imp Importer, build func(put Sink) (cid.Cid, error), pin bool) (cid.Cid, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The CAR is written while kubo reads the blocks before it.
	pipe := NewPipe(carChunks, carChunkSize)
	bp, _ := imp.(BlockPinner)
	var (
		wg       sync.WaitGroup
		root     cid.Cid
		rootData []byte // the root's block, if DAG-PB and bp != nil
		buildErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		root, rootData, buildErr = writeCAR(pipe, build, pin && bp != nil)
		pipe.CloseWrite(buildErr)
	}()
	// The second CAR is read only after the first ended, when the
	// goroutine has set root. The root's pin is made under mu, which
	// Import takes once the import has returned, so the pin is either
	// made and known, or never made.
	var (
		mu            sync.Mutex
		importDone    bool
		pinnedByBlock bool
	)
	tail := &lazyReader{open: func() io.Reader {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if rootData == nil || buildErr != nil || importDone {
			return carHeader(root)
		}
		pctx, pcancel := context.WithTimeout(ctx, rootPinWait)
		defer pcancel()
		if err := bp.PinBlock(pctx, root, rootData); err != nil {
			return carHeader(root) // kubo's pin, with its walk
		}
		pinnedByBlock = true
		return carHeader(PlaceholderRoot)
	}}
	pinned, err := imp.DagImport(ctx, []io.Reader{pipe, tail}, pin)
	mu.Lock()
	importDone = true
	mu.Unlock()
	// Unblock the builder if the importer stopped reading, then wait.
	pipe.CloseRead(err)
	wg.Wait()
	if pinnedByBlock && (err != nil || buildErr != nil) {
		// The import failed after the root was pinned: drop the pin
		// (on a context of its own, ctx may be why it failed). If kubo
		// is gone the pin stays until the path's retry imports the
		// blocks again.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		bp.Unpin(uctx, root)
		ucancel()
	}
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
	if pin && !pinnedByBlock {
		// The daemon took every block but did not pin the root: it is
		// shutting down ("pinner closed"), out of space, or cut the
		// answer short. As for any failure kubo reports, a retry may find
		// it healed (kuboerr.Kind's default).
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
// PlaceholderRoot, and returns build's root, and with keepRoot the root's
// block if it is a DAG-PB node (a DAG of more than one block: its root is
// small and the last block put).
func writeCAR(w io.Writer, build func(put Sink) (cid.Cid, error), keepRoot bool) (cid.Cid, []byte, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := io.Copy(bw, carHeader(PlaceholderRoot)); err != nil {
		return cid.Undef, nil, err
	}
	var (
		lenBuf   [binary.MaxVarintLen64]byte
		last     cid.Cid
		lastData []byte
	)
	root, err := build(func(c cid.Cid, data []byte) error {
		if keepRoot && c.Type() == cid.DagProtobuf {
			// Interior nodes are a few KiB, about one per 174 leaves.
			last, lastData = c, append(lastData[:0], data...)
		}
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
		return cid.Undef, nil, err
	}
	if !last.Defined() || !last.Equals(root) {
		lastData = nil
	}
	return root, lastData, bw.Flush()
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
