package bounded

import (
	"testing"
	"time"
)

// TestMap: the least recently used entry makes room, an expired one is
// gone, and a Map of zero entries holds nothing.
func TestMap(t *testing.T) {
	now := time.Now()
	m := New[string, int](2)
	m.Put("a", 1, time.Time{})
	m.Put("b", 2, now.Add(time.Minute))
	m.Get("a", now) // a is now the most recently used
	m.Put("c", 3, time.Time{})
	if _, ok := m.Get("b", now); ok {
		t.Error("b, least recently used, kept")
	}
	if v, ok := m.Get("a", now); !ok || v != 1 {
		t.Errorf("a: %v %v", v, ok)
	}
	m.Put("d", 4, now.Add(time.Second)) // c goes: a was used since
	if _, ok := m.Get("c", now); ok {
		t.Error("c, least recently used, kept")
	}
	if _, ok := m.Get("d", now.Add(time.Second)); ok {
		t.Error("d served at its expiry")
	}
	m.Remove("a")
	if n := m.Len(); n != 0 {
		t.Errorf("Len %d, want 0", n)
	}
	z := New[string, int](0)
	z.Put("x", 1, time.Time{})
	if _, ok := z.Get("x", now); ok || z.Len() != 0 {
		t.Error("a Map of zero entries kept one")
	}
}
