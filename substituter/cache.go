package substituter

import (
	"container/list"
	"sync"
	"time"
)

// bounded is a map of at most max entries, each with an optional expiry,
// that forgets its least recently used entry to make room. It is what keeps
// the narinfo and NAR tables from growing with every path ever asked for.
type bounded[K comparable, V any] struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *boundedEntry, most recently used at the front
	items map[K]*list.Element
}

type boundedEntry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time // zero: never
}

func newBounded[K comparable, V any](max int) *bounded[K, V] {
	return &bounded[K, V]{max: max, order: list.New(), items: map[K]*list.Element{}}
}

// get returns the entry for k unless it is missing or expired at now.
func (b *bounded[K, V]) get(k K, now time.Time) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var zero V
	el, ok := b.items[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*boundedEntry[K, V])
	if !e.expires.IsZero() && !now.Before(e.expires) {
		b.order.Remove(el)
		delete(b.items, k)
		return zero, false
	}
	b.order.MoveToFront(el)
	return e.val, true
}

// put stores v under k until expires (zero: until evicted).
func (b *bounded[K, V]) put(k K, v V, expires time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.items[k]; ok {
		e := el.Value.(*boundedEntry[K, V])
		e.val, e.expires = v, expires
		b.order.MoveToFront(el)
		return
	}
	b.items[k] = b.order.PushFront(&boundedEntry[K, V]{key: k, val: v, expires: expires})
	for b.order.Len() > b.max {
		last := b.order.Back()
		b.order.Remove(last)
		delete(b.items, last.Value.(*boundedEntry[K, V]).key)
	}
}

// remove forgets k.
func (b *bounded[K, V]) remove(k K) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.items[k]; ok {
		b.order.Remove(el)
		delete(b.items, k)
	}
}

func (b *bounded[K, V]) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.order.Len()
}
