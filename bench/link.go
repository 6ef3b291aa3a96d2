package main

import (
	"net"
	"sync"
	"time"
)

// link emulates a network link on loopback: a TCP proxy to target that
// delays every byte by half the round trip in each direction and limits
// each direction to rate bytes per second, shared by all connections (one
// link, as between two hosts). netem is not available here; this is the
// part of it the benchmarks need.
type link struct {
	ln       net.Listener
	target   string
	oneWay   time.Duration
	up, down *bucket
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool
}

// newLink listens on a free loopback port and forwards to target.
func newLink(s *scope, target string, rtt time.Duration, rate float64) *link {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "link listen")
	l := &link{ln: ln, target: target, oneWay: rtt / 2, up: newBucket(rate), down: newBucket(rate)}
	go l.serve()
	s.Cleanup(l.close)
	return l
}

// Addr is the address to dial instead of the target.
func (l *link) Addr() string { return l.ln.Addr().String() }

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			t.Close()
			return
		}
		l.conns = append(l.conns, c, t)
		l.mu.Unlock()
		go l.pipe(t, c, l.up)
		go l.pipe(c, t, l.down)
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk delivered oneWay after it was read,
// at most at the bucket's rate. The queue holds what is in flight: enough
// for the rate times the delay, so the link can be kept full.
func (l *link) pipe(dst, src net.Conn, rate *bucket) {
	const chunkSize = 16 << 10
	slots := 64
	if n := int(rate.rate*l.oneWay.Seconds())/chunkSize*2 + 1; n > slots {
		slots = n
	}
	q := make(chan chunk, slots)
	go func() {
		defer close(q)
		for {
			b := make([]byte, chunkSize)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now().Add(l.oneWay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		rate.take(len(c.b))
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			dst.Close()
			for range q {
			}
			return
		}
	}
	// Pass the end on: a half-close where the connection has one.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}

func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.ln.Close()
	for _, c := range l.conns {
		c.Close()
	}
}

// bucket is a token bucket of rate bytes per second; take blocks until n
// bytes may pass. A zero rate is unlimited.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
	total  int64 // bytes passed
}

// bytes is how many bytes have passed.
func (b *bucket) bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

func newBucket(rate float64) *bucket { return &bucket{rate: rate, last: time.Now()} }

func (b *bucket) take(n int) {
	b.mu.Lock()
	b.total += int64(n)
	if b.rate <= 0 {
		b.mu.Unlock()
		return
	}
	now := time.Now()
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	// At most 10 ms of burst.
	if burst := b.rate / 100; b.tokens > burst {
		b.tokens = burst
	}
	b.last = now
	b.tokens -= float64(n)
	wait := time.Duration(0)
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}
