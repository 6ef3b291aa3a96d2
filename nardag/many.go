package nardag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/go-cid"
)

// ImportMany is Import for many DAGs in one `dag import`: build hands the
// blocks of every DAG to put, and returns the roots, which the import
// pins (with pin) at its end. One import for many small NARs instead of
// one each spares kubo an HTTP request, a GC lock and a flush of its
// pin set per NAR: for thousands of paths of a few KB those were most of
// kubo's work (docs/BENCHMARKS.md, issue 25).
//
// It returns, for each root kubo reported, "" if pinned or why not. A
// root missing from the map was not pinned either: the caller checks each
// of its roots.
func ImportMany(ctx context.Context, imp Importer, build func(put Sink) ([]cid.Cid, error), pin bool) (map[cid.Cid]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pipe := NewPipe(carChunks, carChunkSize)
	var (
		wg       sync.WaitGroup
		roots    []cid.Cid
		buildErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The blocks' CAR names PlaceholderRoot, as Import's.
		_, _, buildErr = writeCAR(pipe, func(put Sink) (cid.Cid, error) {
			var err error
			roots, err = build(put)
			return PlaceholderRoot, err
		}, false)
		pipe.CloseWrite(buildErr)
	}()
	// The roots' CAR is read only once the blocks' CAR has ended.
	tail := &lazyReader{open: func() io.Reader {
		wg.Wait()
		return &sliceReader{b: carHeaderRoots(roots)}
	}}
	pinned, err := imp.DagImport(ctx, []io.Reader{pipe, tail}, pin)
	pipe.CloseRead(err)
	wg.Wait()
	if buildErr != nil && !errors.Is(buildErr, io.ErrClosedPipe) && ctx.Err() == nil {
		return nil, fmt.Errorf("dag import: building the DAGs: %w", buildErr)
	}
	if err != nil {
		return nil, err
	}
	if buildErr != nil {
		return nil, fmt.Errorf("dag import: building the DAGs: %w", buildErr)
	}
	return pinned, nil
}

// CARHeader is a CARv1 header naming roots, to be followed by the
// blocks (CARBlock): for tools that write a CAR of many DAGs to a file.
func CARHeader(roots []cid.Cid) []byte { return carHeaderRoots(roots) }

// CARBlock is one block's section of a CARv1: the varint length, the CID,
// the data.
func CARBlock(c cid.Cid, data []byte) []byte {
	cb := c.Bytes()
	out := binary.AppendUvarint(nil, uint64(len(cb)+len(data)))
	return append(append(out, cb...), data...)
}

// carHeaderRoots is a CARv1 header naming roots (at least one: a CAR
// header with none is invalid, so none becomes PlaceholderRoot): the
// varint length, then the DAG-CBOR map {"roots": [...], "version": 1}.
func carHeaderRoots(roots []cid.Cid) []byte {
	if len(roots) == 0 {
		roots = []cid.Cid{PlaceholderRoot}
	}
	var h []byte
	h = append(h, 0xa2)               // map of 2
	h = append(h, 0x65)               // text of 5
	h = append(h, "roots"...)         //
	h = cborHead(h, 0x80, len(roots)) // array
	for _, r := range roots {
		link := append([]byte{0}, r.Bytes()...) // CBOR tag 42 holds 0x00 + CID
		h = append(h, 0xd8, 0x2a)               // tag 42
		h = cborHead(h, 0x40, len(link))        // byte string
		h = append(h, link...)
	}
	h = append(h, 0x67)         // text of 7
	h = append(h, "version"...) //
	h = append(h, 0x01)         // 1
	return append(binary.AppendUvarint(nil, uint64(len(h))), h...)
}

// cborHead appends the head of a CBOR item of major type major (shifted:
// 0x40 byte string, 0x80 array) and length n.
func cborHead(b []byte, major byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n < 1<<8:
		return append(b, major|24, byte(n))
	case n < 1<<16:
		return append(b, major|25, byte(n>>8), byte(n))
	default:
		return append(b, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
