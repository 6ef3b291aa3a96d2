package unixfs_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/unixfs"
	"github.com/nix-ipfs/nix-ipfs/unixfs/unixfstest"
)

// carSections splits a CARv1 into its header and block sections, each with
// its length prefix.
func carSections(t testing.TB, b []byte) (hdr []byte, secs [][]byte) {
	read := func() []byte {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			t.Fatalf("bad CAR in test")
		}
		s := b[:k+int(n)]
		b = b[k+int(n):]
		return s
	}
	hdr = read()
	for len(b) > 0 {
		secs = append(secs, read())
	}
	return hdr, secs
}

func joinCAR(hdr []byte, secs ...[]byte) []byte {
	out := bytes.Clone(hdr)
	for _, s := range secs {
		out = append(out, s...)
	}
	return out
}

// TestGatewayCAR: every DAG shape comes back byte for byte from one CAR
// request per file, and no block is asked for alone.
func TestGatewayCAR(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	fg.CAR = func(b []byte) []byte { return b }
	g, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := unixfstest.Payload("gateway-car", 300000)
	for _, tc := range []struct {
		name             string
		chunk            int64
		links            int
		raw, v1, trickle bool
		data             []byte
	}{
		{"v1 raw leaves balanced deep", 1024, 4, true, true, false, data},
		{"v1 raw leaves default shape", 262144, 174, true, true, false, data},
		{"v0 dag-pb leaves", 1024, 4, false, false, false, data},
		{"v1 trickle", 1024, 4, true, true, true, data},
		{"repeated chunks", 1024, 4, true, true, false, bytes.Repeat([]byte("same chunk of 32 bytes, again.\n"), 4096)},
		{"single raw block", 262144, 174, true, true, false, data[:1000]},
		{"empty", 1024, 4, true, true, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fg.Add(t, tc.data, tc.chunk, tc.links, tc.raw, tc.v1, tc.trickle)
			fg.Mu.Lock()
			raws, reqs := fg.Raws, fg.Requests
			fg.Mu.Unlock()
			got, err := catAll(t, g, root)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Fatalf("got %d bytes, want %d", len(got), len(tc.data))
			}
			fg.Mu.Lock()
			defer fg.Mu.Unlock()
			if fg.Raws != raws || fg.Requests != reqs+1 {
				t.Errorf("%d raw block requests and %d requests in all, want 0 and 1", fg.Raws-raws, fg.Requests-reqs)
			}
		})
	}
	if n := g.CARFallbacks(); n != 0 {
		t.Errorf("%d CARs abandoned", n)
	}
	fg.Mu.Lock()
	defer fg.Mu.Unlock()
	for a := range fg.Accepts {
		if a != unixfs.CARAccept+" format=car" {
			t.Errorf("gateway asked with Accept/format %q", a)
		}
	}
}

// TestGatewayCARHostile: whatever is wrong with the CAR, the walk goes on
// block by block from where it went wrong and the file comes out whole and
// right; an extra block after the last is ignored (every byte was checked).
func TestGatewayCARHostile(t *testing.T) {
	fg := unixfstest.NewFakeGateway(t)
	g, err := unixfs.NewGateway(fg.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := unixfstest.Payload("hostile-car", 200000)
	root := fg.Add(t, data, 4096, 8, true, true, false)
	other := fg.Add(t, unixfstest.Payload("other", 5000), 4096, 8, true, true, false)
	on, _ := fg.DAG.Get(context.Background(), other)
	otherSec := unixfstest.CARSection(other, on.RawData())

	for _, tc := range []struct {
		name     string
		car      func(hdr []byte, secs [][]byte) []byte // nil: no CAR support
		fallback bool
	}{
		{"no CAR support", nil, true},
		{"empty body", func(hdr []byte, secs [][]byte) []byte { return nil }, true},
		{"garbage", func(hdr []byte, secs [][]byte) []byte { return unixfstest.Payload("garbage", 5000) }, true},
		{"header only", func(hdr []byte, secs [][]byte) []byte { return hdr }, true},
		{"wrong root", func(hdr []byte, secs [][]byte) []byte { return joinCAR(unixfstest.CARHeader(other), secs...) }, true},
		{"truncated mid-block", func(hdr []byte, secs [][]byte) []byte {
			b := joinCAR(hdr, secs...)
			return b[:len(b)/2]
		}, true},
		{"last block missing", func(hdr []byte, secs [][]byte) []byte { return joinCAR(hdr, secs[:len(secs)-1]...) }, true},
		{"block with wrong bytes", func(hdr []byte, secs [][]byte) []byte {
			s := bytes.Clone(secs[5])
			s[len(s)-1] ^= 1
			secs[5] = s
			return joinCAR(hdr, secs...)
		}, true},
		{"another valid block in its place", func(hdr []byte, secs [][]byte) []byte {
			secs[5] = otherSec
			return joinCAR(hdr, secs...)
		}, true},
		{"extra block in the middle", func(hdr []byte, secs [][]byte) []byte {
			return joinCAR(hdr, append(append(append([][]byte{}, secs[:5]...), otherSec), secs[5:]...)...)
		}, true},
		{"blocks swapped", func(hdr []byte, secs [][]byte) []byte {
			secs[5], secs[6] = secs[6], secs[5]
			return joinCAR(hdr, secs...)
		}, true},
		{"section larger than a block", func(hdr []byte, secs [][]byte) []byte {
			huge := binary.AppendUvarint(nil, unixfs.MaxBlockSize+4096)
			return joinCAR(hdr, append(secs[:3:3], append(huge, unixfstest.Payload("huge", 10000)...))...)
		}, true},
		{"extra block at the end", func(hdr []byte, secs [][]byte) []byte { return joinCAR(hdr, append(secs, otherSec)...) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fg.Mu.Lock()
			if tc.car == nil {
				fg.CAR = nil
			} else {
				fg.CAR = func(good []byte) []byte {
					hdr, secs := carSections(t, good)
					return tc.car(hdr, secs)
				}
			}
			fg.Mu.Unlock()
			before := g.CARFallbacks()
			got, err := catAll(t, g, root)
			if err != nil {
				t.Fatalf("Cat: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want %d", len(got), len(data))
			}
			if fell := g.CARFallbacks() > before; fell != tc.fallback {
				t.Errorf("went block by block: %v, want %v", fell, tc.fallback)
			}
		})
	}
}

// FuzzGatewayCAR: whatever bytes a gateway sends as the CAR, Cat returns
// exactly the file (the raw blocks it falls back to are honest here), and
// never panics or hangs.
func FuzzGatewayCAR(f *testing.F) {
	fg := &unixfstest.FakeGateway{DAG: mdtest.Mock(), Corrupt: map[cid.Cid]bool{}, Accepts: map[string]int{}}
	// Small, so that the fuzzer's inputs stay small: 6 leaves under 2
	// levels of inner nodes.
	data := unixfstest.Payload("fuzz-car", 3000)
	root := fg.Add(f, data, 512, 3, true, true, false)
	good, err := unixfstest.CAROf(context.Background(), fg.DAG, root, nil)
	if err != nil {
		f.Fatal(err)
	}
	hdr, secs := carSections(f, good)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(hdr)
	f.Add(joinCAR(hdr, secs[1:]...))
	f.Add(joinCAR(unixfstest.CARHeader(rawCID([]byte("x"))), secs...))
	f.Add([]byte{})
	id, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.IDENTITY, MhLength: -1}.Sum([]byte("id"))
	f.Add(joinCAR(hdr, append([][]byte{unixfstest.CARSection(id, []byte("id"))}, secs...)...))

	var body []byte
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		if r.URL.Query().Get("format") == "car" {
			rec.Write(body)
		} else {
			fg.Serve(rec, r)
		}
		return rec.Result(), nil
	})}
	g, err := unixfs.NewGateway("http://gateway.invalid", client)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, car []byte) {
		body = car
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rc, err := g.Cat(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if ctx.Err() != nil {
			t.Fatalf("Cat hung on %x", car)
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Cat: %d bytes, %v", len(got), err)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
