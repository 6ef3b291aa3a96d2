// Package bounded is a map of at most a fixed number of entries, each
// with an optional expiry, that forgets its least recently used entry to
// make room: what keeps a server's tables from growing with every key ever
// asked for.
package bounded

import (
	"container/list"
	"sync"
	"time"
)

// Map is a map of at most max entries, each with an optional expiry,
// that forgets its least recently used entry to make room. It is safe for
// concurrent use.
type Map[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *entry, most recently used at the front
	items map[K]*list.Element
}

type entry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time // zero: never
}

// New returns an empty Map of at most max entries (none if max <= 0).
func New[K comparable, V any](max int) *Map[K, V] {
	return &Map[K, V]{max: max, order: list.New(), items: map[K]*list.Element{}}
}

// Get returns the entry for k unless it is missing or expired at now.
func (b *Map[K, V]) Get(k K, now time.Time) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var zero V
	el, ok := b.items[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*entry[K, V])
	if !e.expires.IsZero() && !now.Before(e.expires) {
		b.order.Remove(el)
		delete(b.items, k)
		return zero, false
	}
	b.order.MoveToFront(el)
	return e.val, true
}

// Put stores v under k until expires (zero: until evicted).
func (b *Map[K, V]) Put(k K, v V, expires time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.items[k]; ok {
		e := el.Value.(*entry[K, V])
		e.val, e.expires = v, expires
		b.order.MoveToFront(el)
		return
	}
	b.items[k] = b.order.PushFront(&entry[K, V]{key: k, val: v, expires: expires})
	for b.order.Len() > b.max {
		last := b.order.Back()
		b.order.Remove(last)
		delete(b.items, last.Value.(*entry[K, V]).key)
	}
}

// Remove forgets k.
func (b *Map[K, V]) Remove(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.items[k]; ok {
		b.order.Remove(el)
		delete(b.items, k)
	}
}

// Len is the number of entries, expired ones included.
func (b *Map[K, V]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.order.Len()
}
