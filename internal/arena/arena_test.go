package arena

import (
	"strings"
	"testing"
)

// TestAddGet: strings of every size, across chunk boundaries and longer
// than a chunk, come back as they went in.
func TestAddGet(t *testing.T) {
	var a Arena
	var want []string
	var got []Str
	for i := 0; i < 40000; i++ {
		s := strings.Repeat(string(rune('a'+i%26)), i%97)
		if i%10000 == 5 {
			s = strings.Repeat("x", chunkSize*2+i)
		}
		want = append(want, s)
		got = append(got, a.Add(s))
	}
	for i, s := range got {
		if a.Get(s) != want[i] {
			t.Fatalf("string %d: got %d bytes, want %d", i, len(a.Get(s)), len(want[i]))
		}
	}
	if a.Size() < chunkSize*8 {
		t.Errorf("size %d", a.Size())
	}
}
