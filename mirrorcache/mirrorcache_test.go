package mirrorcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"go.uber.org/zap/zaptest"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

func rawCID(b []byte) cid.Cid {
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(b)
	if err != nil {
		panic(err)
	}
	return c
}

// eventOf is the "published" event the publisher sends for a narinfo it
// wrote (publisher.eventFor), sealed and through the wire format.
func eventOf(t *testing.T, ni *narinfo.NarInfo, c cid.Cid) *events.Published {
	t.Helper()
	ev := &events.Published{
		Host: "a", StoreDir: "/nix/store", StorePath: ni.StorePath, NarHash: ni.NarHash, NarSize: int64(ni.NarSize),
		References: append([]string{}, ni.References...), CacheURL: "http://a/cache", NarURL: ni.URL, CID: c.String(),
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWfake", Addrs: []string{}},
		Deriver:   ni.Deriver, Sigs: ni.Sigs, CA: ni.CA,
	}
	events.Seal(ev)
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return got.(*events.Published)
}

// TestNarInfoMatchesNixCopy: for every uncompressed narinfo that Nix 2.8's
// `nix copy` wrote (narinfo/testdata), the narinfo rebuilt from the event
// is that file byte for byte, with the IPFSHash line the publisher adds.
func TestNarInfoMatchesNixCopy(t *testing.T) {
	files, _ := filepath.Glob("../narinfo/testdata/*.narinfo")
	n := 0
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.ParseBytes(want)
		if err != nil {
			t.Fatal(err)
		}
		if ni.Compression != "none" {
			continue
		}
		n++
		c := rawCID(want)
		got, err := NarInfo(eventOf(t, ni, c))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if s := got.String(); s != string(want)+"IPFSHash: "+c.String()+"\n" {
			t.Errorf("%s: rebuilt narinfo differs:\n%s\n--- nix copy wrote ---\n%s", f, s, want)
		}
	}
	if n < 3 {
		t.Fatalf("only %d uncompressed fixtures", n)
	}
}

// TestNarInfoRefusesUnsigned: a v1 event has no Sigs; no narinfo.
func TestNarInfoRefusesUnsigned(t *testing.T) {
	b, _ := os.ReadFile("../narinfo/testdata/dep.narinfo")
	ni, _ := narinfo.ParseBytes(b)
	ni.Sigs = nil
	ev := eventOf(t, ni, rawCID(b))
	if _, err := NarInfo(ev); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned event: err = %v, want ErrUnsigned", err)
	}
}

type fakeIPFS map[string][]byte

func (f fakeIPFS) Cat(_ context.Context, c cid.Cid) (io.ReadCloser, error) {
	b, ok := f[c.String()]
	if !ok {
		return nil, fmt.Errorf("%s not found", c)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestCacheServes: Put, then the server answers the narinfo byte for byte
// and the NAR from IPFS, checked, also when the NAR is asked for first;
// Remove takes both away; bytes that do not match are never sent.
func TestCacheServes(t *testing.T) {
	c, err := Open(t.TempDir(), "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	nar := bytes.Repeat([]byte("nar bytes "), 100)
	b, _ := os.ReadFile("../narinfo/testdata/dep.narinfo")
	ni, _ := narinfo.ParseBytes(b)
	// A NAR of our own: the fixture's hash is replaced by this one's.
	sum := sha256Nix32(nar)
	ni.NarHash, ni.FileHash, ni.URL = "sha256:"+sum, "sha256:"+sum, "nar/"+sum+".nar"
	ni.NarSize, ni.FileSize = uint64(len(nar)), uint64(len(nar))
	cc := rawCID(nar)
	ni.IPFSHash = cc.String()
	if err := c.Put(ni); err != nil {
		t.Fatal(err)
	}
	node := fakeIPFS{cc.String(): nar}
	get := func(p string) (int, []byte) {
		srv, err := NewServer(c, node, zaptest.NewLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		hs := httptest.NewServer(srv)
		defer hs.Close()
		resp, err := http.Get(hs.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	hp := storepath.HashPart(ni.StorePath)
	if code, body := get("/" + hp + ".narinfo"); code != 200 || string(body) != ni.String() {
		t.Errorf("narinfo: %d %q", code, body)
	}
	if code, body := get("/nix-cache-info"); code != 200 || string(body) != "StoreDir: /nix/store\n" {
		t.Errorf("nix-cache-info: %d %q", code, body)
	}
	// A fresh server each time: the NAR is asked for before any narinfo.
	if code, body := get("/" + ni.URL); code != 200 || !bytes.Equal(body, nar) {
		t.Errorf("cold NAR: %d, %d bytes", code, len(body))
	}
	node[cc.String()] = append([]byte("X"), nar[1:]...)
	if code, body := get("/" + ni.URL); code == 200 || bytes.Contains(body, nar[1:50]) {
		t.Errorf("NAR with a wrong byte: %d, %d bytes", code, len(body))
	}
	if err := c.Remove(ni.StorePath); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/" + hp + ".narinfo"); code != 404 {
		t.Errorf("removed narinfo: %d", code)
	}
	if _, ok := c.NarIndex("/" + ni.URL); ok {
		t.Errorf("index entry of a removed narinfo remains")
	}
	if err := c.Remove(ni.StorePath); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestPutRefuses(t *testing.T) {
	c, err := Open(t.TempDir(), "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("../narinfo/testdata/dep-xz.narinfo")
	xz, _ := narinfo.ParseBytes(b)
	xz.IPFSHash = rawCID(b).String()
	b, _ = os.ReadFile("../narinfo/testdata/dep.narinfo")
	for name, mod := range map[string]func(*narinfo.NarInfo){
		"compressed":  func(n *narinfo.NarInfo) { *n = *xz },
		"no ipfshash": func(n *narinfo.NarInfo) { n.IPFSHash = "" },
		"unsigned":    func(n *narinfo.NarInfo) { n.Sigs = nil },
		"other store": func(n *narinfo.NarInfo) { n.StorePath = strings.Replace(n.StorePath, "/nix/store", "/other/store", 1) },
		"odd url":     func(n *narinfo.NarInfo) { n.URL = "../../etc/passwd" },
	} {
		ni, _ := narinfo.ParseBytes(b)
		ni.IPFSHash = rawCID(b).String()
		mod(ni)
		if err := c.Put(ni); err == nil {
			t.Errorf("%s: Put accepted", name)
		}
	}
	if _, err := Open(c.Dir(), "/other/store"); err == nil {
		t.Errorf("Open accepted a cache of another store")
	}
}
