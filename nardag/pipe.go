package nardag

import (
	"io"
	"sync"
)

// Pipe is io.Pipe with a buffer of n chunks of size bytes: the writer
// goes on while the reader is busy (hashing a leaf, or kubo reading the
// last block), so the two sides of one pass run on two cores instead of
// taking turns. Writes are copied into the buffer, so the writer may
// reuse its slice at once, as with io.Pipe. One goroutine writes and one
// reads.
type Pipe struct {
	full chan []byte // written chunks, in order; closed by CloseWrite
	free chan []byte // empty chunks
	made int         // chunks allocated, up to cap(free): by the writer only
	size int

	cur, buf []byte // the chunk being read: what is left of it, all of it

	werr error // set before full is closed

	rdone chan struct{} // closed when the reader gives up
	once  sync.Once
	rerr  error // set before rdone is closed
}

// NewPipe returns a Pipe holding up to n chunks of size bytes.
func NewPipe(n, size int) *Pipe {
	// Chunks are made as the writer needs them: most NARs are small.
	return &Pipe{full: make(chan []byte, n), free: make(chan []byte, n), size: size, rdone: make(chan struct{})}
}

// Write copies b into the pipe, blocking while it is full. Once the reader
// has given up it returns the reader's error.
func (p *Pipe) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		var c []byte
		select {
		case c = <-p.free:
		default:
			if p.made < cap(p.free) {
				p.made++
				c = make([]byte, p.size)
				break
			}
			select {
			case c = <-p.free:
			case <-p.rdone:
				return n, p.rerr
			}
		}
		m := copy(c[:cap(c)], b[n:])
		select {
		case p.full <- c[:m]:
		case <-p.rdone:
			return n, p.rerr
		}
		n += m
	}
	return n, nil
}

// CloseWrite ends the stream: the reader gets err after the bytes
// written, or io.EOF if err is nil. The writer calls it once, after its
// last Write.
func (p *Pipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.full)
}

// Read reads what was written, then the writer's CloseWrite error.
func (p *Pipe) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for len(p.cur) == 0 {
		if p.buf != nil {
			p.free <- p.buf[:cap(p.buf)]
			p.buf = nil
		}
		c, ok := <-p.full
		if !ok {
			return 0, p.werr
		}
		p.cur, p.buf = c, c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// CloseRead gives up reading: writes fail with err (io.ErrClosedPipe if
// nil) from now on. It may be called more than once; the first err holds.
func (p *Pipe) CloseRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.once.Do(func() {
		p.rerr = err
		close(p.rdone)
	})
}
