package nardag

import (
	"io"

	chunker "github.com/ipfs/boxo/chunker"
)

// HashLen is the length of a store path's hash part (nix32 of 160 bits).
const HashLen = 32

// nix32 is Nix's base-32 alphabet (no e, o, u, t).
const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"

var isNix32 [256]bool

func init() {
	for i := 0; i < len(nix32); i++ {
		isNix32[nix32[i]] = true
	}
}

// hashSet is the hash parts a splitter cuts around.
type hashSet map[string]struct{}

func newHashSet(hashes []string) hashSet {
	s := make(hashSet, len(hashes))
	for _, h := range hashes {
		if len(h) == HashLen {
			s[h] = struct{}{}
		}
	}
	return s
}

// scan appends to found the offsets of the hashes in data from offset i,
// the way Nix's reference scanner finds them: a window of HashLen bytes is
// a candidate only if all its bytes are nix32 characters, checked from its
// end, so that one byte outside the alphabet skips the window past it
// (most of a binary is skipped HashLen bytes at a time). Occurrences do
// not overlap. It stops at the first window data does not hold whole and
// returns its offset: scanning resumes there once more data is in, with
// the same result as one scan of all of it.
func (s hashSet) scan(data []byte, i int, found []int) ([]int, int) {
	for i+HashLen <= len(data) {
		j := i + HashLen - 1
		for j >= i && isNix32[data[j]] {
			j--
		}
		if j >= i {
			i = j + 1
			continue
		}
		if _, ok := s[string(data[i:i+HashLen])]; ok {
			found = append(found, i)
			i += HashLen
			continue
		}
		i++
	}
	return found, i
}

// Occurrences returns the offsets of hashes (hash parts) in data, as the
// reference-aware chunker cuts around them.
func Occurrences(data []byte, hashes []string) []int {
	found, _ := newHashSet(hashes).scan(data, 0, nil)
	return found
}

// minBuf and bufSize bound the buffers a RefSplitter reads into. Two of
// bufSize take turns, so 2 MiB keeps a publish at the 4 MiB of one buffer
// of 4 MiB before they took turns: the publisher's peak RSS after the
// closure (four paths at once) was 128-143 MiB with two of 4 MiB, 95 MiB
// with two of 2 MiB (bench A/B, issue 25); each swap copies at most a
// chunk's read-ahead.
const (
	minBuf  = 64 << 10
	bufSize = 2 << 20
)

// RefSplitter is the reference-aware chunker over a stream (see the
// package comment). It holds one chunk and a hash cluster's worth of
// read-ahead, not the whole NAR. The chunks it returns point into its
// buffers, and stay valid until the second NextBytes call after the one
// that returned them: boxo's DAG builder reads one chunk ahead (it asks
// for the second chunk before it stores the first) and hands each leaf
// to the DAGService before it asks for the next, and every Sink here
// copies or hashes the block before it returns. A full buffer is
// replaced by the one it replaced before: allocating a new one every 4
// MiB cost the publisher a clear of every byte and a garbage collection
// every few MiB (docs/BENCHMARKS.md, issue 25).
type RefSplitter struct {
	r     io.Reader
	refs  Refs
	set   hashSet
	ahead int // bytes past the next one that must be scanned to cut it

	buf   []byte // read so far into the current buffer
	off   int    // next byte to return, in buf
	found []int  // hash occurrences at or after off, in buf, ascending
	next  int    // next window to scan, in buf
	eof   bool
	err   error

	calls   int    // NextBytes calls so far
	spare   []byte // the buffer buf replaced, free once spareAt is two calls back
	spareAt int    // the call in which spare was replaced
}

var _ chunker.Splitter = (*RefSplitter)(nil)

// NewRefSplitter splits r with refs around occurrences of hashes (hash
// parts, 32 characters each; others are ignored).
func NewRefSplitter(r io.Reader, refs Refs, hashes []string) *RefSplitter {
	// To cut a chunk, every hash starting in it must be known; to close a
	// cluster, every hash starting within Gap of its largest end.
	ahead := max(refs.Size, maxCluster+refs.Gap) + HashLen
	return &RefSplitter{r: r, refs: refs, set: newHashSet(hashes), ahead: ahead}
}

// Reader returns the reader the splitter reads.
func (s *RefSplitter) Reader() io.Reader { return s.r }

// fill reads until buf holds n bytes past off, or all that is left, and
// scans what it read.
func (s *RefSplitter) fill(n int) error {
	for len(s.buf)-s.off < n && !s.eof {
		if len(s.buf) == cap(s.buf) {
			// A fresh buffer with the unread tail: the chunks returned
			// already keep pointing at the old one.
			// Small at first (most NARs are small), doubling up to
			// bufSize, always with room past the tail.
			tail := len(s.buf) - s.off
			size := max(min(2*cap(s.buf), bufSize), minBuf, 2*tail)
			var nb []byte
			if cap(s.spare) >= size && s.calls-s.spareAt >= 2 {
				// Its last chunk was returned two calls ago or more.
				nb = s.spare[:tail]
			} else {
				nb = make([]byte, tail, size)
			}
			copy(nb, s.buf[s.off:])
			s.spare, s.spareAt = s.buf[:0], s.calls
			for i := range s.found {
				s.found[i] -= s.off
			}
			s.next -= s.off
			s.buf, s.off = nb, 0
		}
		m, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+m]
		if err == io.EOF {
			s.eof = true
		} else if err != nil {
			return err
		}
	}
	s.found, s.next = s.set.scan(s.buf, s.next, s.found)
	return nil
}

// NextBytes returns the next chunk, or io.EOF after the last.
func (s *RefSplitter) NextBytes() ([]byte, error) {
	s.calls++
	if s.err != nil {
		return nil, s.err
	}
	if err := s.fill(s.ahead); err != nil {
		s.err = err
		return nil, err
	}
	pos := s.off
	if pos >= len(s.buf) {
		s.err = io.EOF
		return nil, io.EOF
	}
	var end int
	if len(s.found) > 0 && s.found[0] == pos {
		end = pos + HashLen
		s.found = s.found[1:]
		for len(s.found) > 0 && s.found[0]-end < s.refs.Gap && s.found[0]+HashLen-pos <= maxCluster {
			end = s.found[0] + HashLen
			s.found = s.found[1:]
		}
	} else {
		end = min(pos+s.refs.Size, len(s.buf))
		if len(s.found) > 0 && s.found[0] < end {
			end = s.found[0]
		}
	}
	s.off = end
	return s.buf[pos:end:end], nil
}
