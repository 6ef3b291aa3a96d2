// Package arena holds many small immutable strings back to back in one
// growing byte slice: no string header or allocation per string, nothing
// for the garbage collector to follow (retention's index holds a million
// paths this way).
package arena

import "unsafe"

// Arena holds the strings. The zero value is empty and ready.
type Arena struct{ b []byte }

// Str is a string in an Arena.
type Str struct{ off, len uint32 }

// Grow makes room for n more bytes.
func (a *Arena) Grow(n int) { a.b = append(make([]byte, 0, len(a.b)+n), a.b...) }

// Add copies s in.
func (a *Arena) Add(s string) Str {
	r := Str{uint32(len(a.b)), uint32(len(s))}
	a.b = append(a.b, s...)
	return r
}

// Get returns s. It aliases the arena (unsafe.String): its bytes are never
// written twice, and a grown arena leaves the old one to those still
// reading it.
func (a *Arena) Get(s Str) string {
	if s.len == 0 {
		return ""
	}
	return unsafe.String(&a.b[s.off], int(s.len))
}
