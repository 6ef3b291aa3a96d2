package chunkstudy

import (
	"bytes"
	"io"
	"strconv"
	"strings"

	chunker "github.com/ipfs/boxo/chunker"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

// RefsPrefix marks a reference-aware chunker: "refs+buzhash" is buzhash
// between store path hashes, each hash a block of its own;
// "refs/4096+buzhash" joins hashes less than 4096 bytes apart, and the
// bytes between them, into one block (see RefSplitter.Gap).
const RefsPrefix = "refs"

// maxCluster bounds a block of joined hashes (kubo refuses blocks above
// 1 MiB, and a block this size is a chunk's worth already).
const maxCluster = 256 << 10

// HashLen is the length of a store path's hash part.
const HashLen = nardag.HashLen

// RefSplitter is a prototype chunker for NARs: it cuts just before and
// just after every occurrence of a store path hash part it is given (the
// path's own and its references', the strings Nix's reference scanner
// looks for) and splits the bytes between them with an ordinary chunker,
// started afresh after each hash.
//
// A rebuild with new references changes a NAR mostly in those 32-byte
// strings; with the cuts, each occurrence dirties one 32-byte block instead
// of a whole chunk, and, because the inner chunker restarts at each hash,
// the chunks between hashes are the same bytes in both generations
// whatever the inner chunker is (a fixed-size one included), as long as
// the hashes stand at the same offsets.
type RefSplitter struct {
	// Gap joins a hash to the next one when fewer than Gap bytes lie
	// between them: the hashes and the bytes between become one block.
	// Text that names many store paths (wrappers, docs, manifests) then
	// makes a few blocks instead of two per hash, at the cost of moving
	// the bytes between hashes with them.
	Gap int

	r     io.Reader
	data  []byte
	pos   int
	refs  []int // offsets of hash occurrences, ascending, not overlapping
	inner string
	cur   chunker.Splitter // over the segment before the next hash
}

var _ chunker.Splitter = (*RefSplitter)(nil)

// NewRefSplitter reads all of r (a NAR fits in memory for this study) and
// splits it with inner (a chunker.FromString spec) between occurrences of
// hashes (hash parts, 32 characters each).
func NewRefSplitter(r io.Reader, inner string, hashes []string) (*RefSplitter, error) {
	if _, err := chunker.FromString(bytes.NewReader(nil), inner); err != nil {
		return nil, errs.Errorf(errs.Invalid, "chunkstudy: inner chunker %q: %w", inner, err)
	}
	var data []byte
	var err error
	if l, ok := r.(interface{ Len() int }); ok {
		// One allocation of the right size (a NAR can be large).
		data = make([]byte, l.Len())
		_, err = io.ReadFull(r, data)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return nil, err
	}
	return &RefSplitter{r: r, data: data, inner: inner, refs: nardag.Occurrences(data, hashes)}, nil
}

// Reader returns the reader the splitter was made from.
func (s *RefSplitter) Reader() io.Reader { return s.r }

// NextBytes returns the next chunk, or io.EOF at the end.
func (s *RefSplitter) NextBytes() ([]byte, error) {
	for {
		if s.cur != nil {
			b, err := s.cur.NextBytes()
			if err == io.EOF {
				s.cur = nil
				continue
			}
			return b, err
		}
		if s.pos >= len(s.data) {
			return nil, io.EOF
		}
		if len(s.refs) > 0 && s.refs[0] == s.pos {
			end := s.pos + HashLen
			s.refs = s.refs[1:]
			for len(s.refs) > 0 && s.refs[0]-end < s.Gap && s.refs[0]+HashLen-s.pos <= maxCluster {
				end = s.refs[0] + HashLen
				s.refs = s.refs[1:]
			}
			b := s.data[s.pos:end]
			s.pos = end
			return b, nil
		}
		end := len(s.data)
		if len(s.refs) > 0 {
			end = s.refs[0]
		}
		cur, err := chunker.FromString(bytes.NewReader(s.data[s.pos:end]), s.inner)
		if err != nil {
			return nil, err
		}
		s.cur, s.pos = cur, end
	}
}

// splitter returns the splitter spec names, over r, for a path whose hash
// parts (its own and its references') are hashes.
func splitter(r io.Reader, spec string, hashes []string) (chunker.Splitter, error) {
	if rest, ok := strings.CutPrefix(spec, RefsPrefix); ok {
		head, inner, ok := strings.Cut(rest, "+")
		gap := 0
		if ok && head != "" {
			g, err := strconv.Atoi(strings.TrimPrefix(head, "/"))
			if err != nil || !strings.HasPrefix(head, "/") || g < 0 {
				return nil, errs.Errorf(errs.Invalid, "chunkstudy: chunker %q: want refs+X or refs/GAP+X", spec)
			}
			gap = g
		}
		if !ok {
			return nil, errs.Errorf(errs.Invalid, "chunkstudy: chunker %q: want refs+X or refs/GAP+X", spec)
		}
		s, err := NewRefSplitter(r, inner, hashes)
		if err != nil {
			return nil, err
		}
		s.Gap = gap
		return s, nil
	}
	return nardag.Splitter(r, spec, hashes)
}
