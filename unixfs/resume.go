package unixfs

import (
	"fmt"
	"io"
)

// OpenFunc opens the rest of a file from byte off; cause is why the reader
// before stopped there. It may decline (a cancelled context, nothing that
// could serve the rest) by returning a nil reader and a nil error: the
// cause is then the read's error, as is.
type OpenFunc func(off int64, cause error) (io.ReadCloser, error)

// Resumer reads a file through a sequence of readers: when one fails, or
// ends before the file's size, it opens the rest from the offset reached
// (OpenFunc) and goes on, at most max times. It is the one resume
// mechanism: a kubo gateway's Range request after a stream broke off, the
// daemon after the block store lacked a block, upstream HTTP after IPFS
// failed (the substituter).
type Resumer struct {
	r       io.ReadCloser
	size    int64
	off     int64
	open    OpenFunc
	what    string
	max     int
	resumes int
	resumed int64 // bytes read after the first resume
	err     error // sticky, once a resume failed
}

var (
	_ io.ReadCloser = (*Resumer)(nil)
	_ Sizer         = (*Resumer)(nil)
)

// NewResumer reads first, which starts at byte off of the file, then
// whatever open gives, up to the file's size (-1: unknown, and an early end
// goes unnoticed). what names the readers open gives, in errors ("<cause>;
// <what>: <why the resume failed>").
func NewResumer(first io.ReadCloser, off, size int64, max int, what string, open OpenFunc) *Resumer {
	return &Resumer{r: first, off: off, size: size, max: max, what: what, open: open}
}

func (r *Resumer) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		n, err := r.r.Read(p)
		r.off += int64(n)
		if r.resumes > 0 {
			r.resumed += int64(n)
		}
		if err == io.EOF && r.size >= 0 && r.off < r.size && r.resumes < r.max {
			// Short, and there is a way to the rest. (With none left,
			// the end is the caller's to judge against the size.)
			err = io.ErrUnexpectedEOF
		}
		if err == nil || err == io.EOF || r.resumes >= r.max {
			return n, err
		}
		rest, oerr := r.open(r.off, err)
		if oerr != nil {
			r.err = fmt.Errorf("%w; %s: %w", err, r.what, oerr)
			return n, r.err
		}
		if rest == nil {
			return n, err
		}
		r.r.Close()
		r.r = rest
		r.resumes++
		if n > 0 {
			return n, nil
		}
	}
}

// Size is the file's size given to NewResumer.
func (r *Resumer) Size() int64 { return r.size }

// Offset is the file's offset reached.
func (r *Resumer) Offset() int64 { return r.off }

// Resumes is how many times the read went on from another reader.
func (r *Resumer) Resumes() int { return r.resumes }

// ResumedBytes is how many bytes came after the first resume.
func (r *Resumer) ResumedBytes() int64 { return r.resumed }

// Close closes the reader in use.
func (r *Resumer) Close() error { return r.r.Close() }
