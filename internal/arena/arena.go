// Package arena holds many small immutable strings back to back in chunks
// of one MiB: no string header or allocation per string, nothing for the
// garbage collector to follow, and no copy as it grows (retention's index
// holds a million paths this way).
package arena

import "unsafe"

const (
	chunkBits = 20
	chunkSize = 1 << chunkBits
)

// Arena holds the strings. The zero value is empty and ready.
type Arena struct {
	// chunks[i] covers offsets i<<chunkBits onwards; a string longer than
	// a chunk has a chunk of its own, followed by nil ones for the
	// offsets it spans.
	chunks [][]byte
	used   int // of the last chunk
}

// Str is a string in an Arena.
type Str struct{ off, len uint32 }

// Add copies s in. An arena holds at most 4 GiB.
func (a *Arena) Add(s string) Str {
	if len(s) == 0 {
		return Str{}
	}
	if len(s) > chunkSize {
		off := len(a.chunks) << chunkBits
		a.chunks = append(a.chunks, []byte(s))
		for n := chunkSize; n < len(s); n += chunkSize {
			a.chunks = append(a.chunks, nil)
		}
		a.used = chunkSize // the next string starts a new chunk
		return Str{uint32(off), uint32(len(s))}
	}
	if len(a.chunks) == 0 || a.used+len(s) > chunkSize {
		a.chunks = append(a.chunks, make([]byte, chunkSize))
		a.used = 0
	}
	last := len(a.chunks) - 1
	copy(a.chunks[last][a.used:], s)
	r := Str{uint32(last<<chunkBits + a.used), uint32(len(s))}
	a.used += len(s)
	return r
}

// Get returns s. It aliases the arena (unsafe.String): its bytes are never
// written twice.
func (a *Arena) Get(s Str) string {
	if s.len == 0 {
		return ""
	}
	c := a.chunks[s.off>>chunkBits]
	return unsafe.String(&c[s.off&(chunkSize-1)], int(s.len))
}

// Size is the bytes the arena holds, free space included.
func (a *Arena) Size() int {
	n := 0
	for _, c := range a.chunks {
		n += len(c)
	}
	return n
}
