package retention

import (
	"bytes"
	"encoding/json"
	"fmt"
	"iter"
)

// LiveRoots are the roots a plan keeps, in the order found live: a root
// of the set as its id and two bits of why (8 bytes, where a LiveRoot
// with its reasons is about 200: every root is live when --keep-for
// covers every build), pins and latest builds whole. Each is made whole
// when read.
type LiveRoots struct {
	rs    *Roots
	pol   *Policy
	order []liveRef
	// more are reasons pins and latest builds add to a root of the set.
	more  map[RootID][]string
	whole []LiveRoot
	// made is a list read back from JSON, instead of the rest.
	made []LiveRoot
	// placeholder stands for the list in a plan's JSON (writePlanJSON).
	placeholder string
}

// liveRef is a root of the set (root >= 0) or whole[-root-1].
type liveRef struct {
	root RootID
	why  uint8
}

const (
	liveByKeepFor = 1 << iota
	liveByLastN
)

// Len is how many roots are live.
func (l LiveRoots) Len() int {
	if l.made != nil {
		return len(l.made)
	}
	return len(l.order)
}

// At is the i-th live root.
func (l LiveRoots) At(i int) LiveRoot {
	if l.made != nil {
		return l.made[i]
	}
	ref := l.order[i]
	if ref.root < 0 {
		return l.whole[-ref.root-1]
	}
	lr := LiveRoot{Root: l.rs.Root(ref.root)}
	if ref.why&liveByKeepFor != 0 {
		lr.Why = append(lr.Why, "built within --keep-for "+l.pol.KeepFor.String())
	}
	if ref.why&liveByLastN != 0 {
		lr.Why = append(lr.Why, fmt.Sprintf("among the last %d of job %s", l.pol.KeepLastPerJob, lr.Job))
	}
	lr.Why = append(lr.Why, l.more[ref.root]...)
	return lr
}

// All yields the live roots in order.
func (l LiveRoots) All() iter.Seq2[int, LiveRoot] { return all(l.Len(), l.At) }

// all yields at(0..n-1): a list made whole one item at a time.
func all[T any](n int, at func(int) T) iter.Seq2[int, T] {
	return func(yield func(int, T) bool) {
		for i := 0; i < n; i++ {
			if !yield(i, at(i)) {
				return
			}
		}
	}
}

// MarshalJSON writes the list as a JSON array.
func (l LiveRoots) MarshalJSON() ([]byte, error) {
	if l.placeholder != "" {
		return []byte("[" + l.placeholder + "]"), nil
	}
	if l.made == nil && l.order == nil {
		return []byte("null"), nil
	}
	return marshalList(l.Len(), func(i int) any { return l.At(i) })
}

// UnmarshalJSON reads a list MarshalJSON wrote.
func (l *LiveRoots) UnmarshalJSON(b []byte) error {
	var made []LiveRoot
	if err := json.Unmarshal(b, &made); err != nil {
		return err
	}
	*l = LiveRoots{made: made}
	return nil
}

// marshalList writes n values as a JSON array.
func marshalList(n int, at func(int) any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		j, err := json.Marshal(at(i))
		if err != nil {
			return nil, err
		}
		b.Write(j)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// liveSet collects the live roots as decide finds them.
type liveSet struct {
	LiveRoots
	byKey  map[string]int // whole, by their key
	isLive []bool         // by root id, made when pins or latest builds need it
}

// markSet makes root id of the set live for the why bits.
func (s *liveSet) markSet(id RootID, why uint8) {
	s.order = append(s.order, liveRef{root: id, why: why})
}

// mark makes r live for why: a pin's revision or a job's latest build.
// Its reason goes to the live root of the same outputs if there is one.
func (s *liveSet) mark(r Root, why string) {
	k := r.Key()
	if i, ok := s.byKey[k]; ok {
		s.whole[i].Why = append(s.whole[i].Why, why)
		return
	}
	if id, ok := s.rs.Find(r.Outputs); ok {
		if s.isLive == nil {
			s.isLive = make([]bool, s.rs.Len())
			for _, ref := range s.order {
				if ref.root >= 0 {
					s.isLive[ref.root] = true
				}
			}
		}
		if s.isLive[id] {
			if s.more == nil {
				s.more = map[RootID][]string{}
			}
			s.more[id] = append(s.more[id], why)
			return
		}
	}
	if s.byKey == nil {
		s.byKey = map[string]int{}
	}
	s.byKey[k] = len(s.whole)
	s.whole = append(s.whole, LiveRoot{Root: r, Why: []string{why}})
	s.order = append(s.order, liveRef{root: RootID(-len(s.whole))})
}
