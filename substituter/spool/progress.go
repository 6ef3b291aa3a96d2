package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Progress is how far a spool file has been written, for the requests
// that follow it as it fills (a trusted CID's).
type Progress struct {
	mu   sync.Mutex
	f    *os.File // the spool file; nil before it exists and after a failed read
	n    int64
	grew chan struct{} // closed, and replaced, at every write
}

// NewProgress returns the Progress of a read that has not begun.
func NewProgress() *Progress {
	return &Progress{grew: make(chan struct{})}
}

// Started records the file the read writes.
func (p *Progress) Started(f *os.File) {
	p.mu.Lock()
	p.f = f
	p.mu.Unlock()
}

// Wrote records n more bytes in the file.
func (p *Progress) Wrote(n int) {
	p.mu.Lock()
	p.n += int64(n)
	close(p.grew)
	p.grew = make(chan struct{})
	p.mu.Unlock()
}

// Failed closes the file of a read that failed. Under the lock, so that
// no follower reopens its descriptor number after it is closed.
func (p *Progress) Failed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// State is how many bytes are in the file, and a channel closed when there
// are more.
func (p *Progress) State() (int64, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.grew
}

var errNoSpoolFile = errors.New("the spool file is gone")

// Open returns a reader of the spool file, of size bytes once whole, of
// its own (see reopen).
func (p *Progress) Open(size int64) (io.ReadSeekCloser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return nil, errNoSpoolFile
	}
	return reopen(p.f, size)
}

// reopen returns a reader of the spool file f of its own: a new open file
// description through /proc (so that sendfile works), or a section reader
// where /proc is not there.
func reopen(f *os.File, size int64) (io.ReadSeekCloser, error) {
	g, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err == nil {
		return g, nil
	}
	return struct {
		*io.SectionReader
		io.Closer
	}{io.NewSectionReader(f, 0, size), io.NopCloser(nil)}, nil
}
