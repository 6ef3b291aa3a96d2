package chunkstudy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	mh "github.com/multiformats/go-multihash"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// TestStudyTransfer measures what TestStudy computes, over a real network
// of two kubo daemons on loopback, per chunker: A publishes both
// generations (kubo's own `add` for kubo's chunkers; for the prototypes,
// the DAG built in process and `dag import`ed, as a publisher would have
// to), client C pins generation 1 (a full fetch), then generation 2 (the
// upgrade), and C's bitswap DataReceived for generation 2 is the bytes
// moved. Times are wall clock on a shared machine: rough.
//
//	NIX_IPFS_STUDY_MB=200 go test ./internal/chunkstudy -run TestStudyTransfer -v
func TestStudyTransfer(t *testing.T) {
	gens := studyGenerations(t)
	chunkers := []string{"buzhash", "size-262144", "size-65536", "rabin-4096-16384-65536", "refs+buzhash", "inline+refs+buzhash", "inline+refs+size-262144"}
	if s := os.Getenv("NIX_IPFS_STUDY_CHUNKERS"); s != "" {
		chunkers = strings.Fields(s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| Chunker | moved ÷ new NAR (network) | publish both gens MB/s | fetch gen 1 MB/s | fetch gen 2 (upgrade) s |\n|---|---|---|---|---|\n")
	for _, ch := range chunkers {
		r := transferOne(t, gens, ch)
		fmt.Fprintf(&b, "| %s | %.1f%% | %.0f | %.0f | %.2f |\n", ch, 100*r.moved, r.publishMBps, r.fetchMBps, r.upgrade.Seconds())
	}
	t.Logf("generation 2's NAR %.1f MB\n%s", float64(narBytes(t, gens[1]))/1e6, b.String())
}

type transfer struct {
	moved                  float64
	publishMBps, fetchMBps float64
	upgrade                time.Duration
}

func transferOne(t *testing.T, gens [2][]Path, ch string) transfer {
	ctx := context.Background()
	a := testenv.StartKubo(t)
	c := testenv.StartKubo(t)
	defer a.Stop(t)
	defer c.Stop(t)
	self, err := a.Client.Self(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Connect(ctx, self); err != nil {
		t.Fatal(err)
	}
	var r transfer
	var roots [2][]cid.Cid
	var total int64
	var took time.Duration
	for g, gen := range gens {
		for _, p := range gen {
			data, err := p.nar()
			if err != nil {
				t.Fatal(err)
			}
			total += int64(len(data))
			start := time.Now()
			root := publish(t, a, data, ch, p.hashes())
			took += time.Since(start)
			roots[g] = append(roots[g], root)
		}
	}
	r.publishMBps = float64(total) / 1e6 / took.Seconds()

	start := time.Now()
	for _, root := range roots[0] {
		if err := c.Client.Pin(ctx, root, ""); err != nil {
			t.Fatal(err)
		}
	}
	r.fetchMBps = float64(narBytes(t, gens[0])) / 1e6 / time.Since(start).Seconds()
	before := received(t, c)
	start = time.Now()
	for _, root := range roots[1] {
		if err := c.Client.Pin(ctx, root, ""); err != nil {
			t.Fatal(err)
		}
	}
	r.upgrade = time.Since(start)
	r.moved = float64(received(t, c)-before) / float64(narBytes(t, newPaths(gens[0], gens[1])))
	return r
}

// publish puts one NAR into k: kubo's add for its own chunkers, else the
// DAG built here and streamed to kubo's dag import as a CAR.
func publish(t *testing.T, k *testenv.Kubo, data []byte, ch string, hashes []string) cid.Cid {
	ctx := context.Background()
	if !strings.HasPrefix(ch, RefsPrefix) && !strings.HasPrefix(ch, InlinePrefix) {
		p := ipfs.DefaultParams()
		p.Chunker = ch
		root, err := k.Client.Add(ctx, bytes.NewReader(data), p, true)
		if err != nil {
			t.Fatal(err)
		}
		return root
	}
	// Streamed: the DAG is built while kubo imports it (a CARv1 is written
	// as blocks come; its header cannot name a root not yet known, so it
	// names a placeholder and the root is pinned after).
	placeholder, _ := cid.V1Builder{Codec: cid.Raw, MhType: mh.IDENTITY}.Sum(nil)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var root cid.Cid
	done := make(chan error, 1)
	go func() {
		err := func() error {
			fw, err := mw.CreateFormFile("path", "nar.car")
			if err != nil {
				return err
			}
			w, err := storage.NewWritable(fw, []cid.Cid{placeholder}, carv2.WriteAsCarV1(true))
			if err != nil {
				return err
			}
			var werr error
			root, err = DAG(ctx, bytes.NewReader(data), ch, hashes, func(c cid.Cid, b []byte) {
				if werr == nil {
					werr = w.Put(ctx, c.KeyString(), b)
				}
			})
			if err != nil {
				return err
			}
			if werr != nil {
				return werr
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
		done <- err
	}()
	resp, err := http.Post(k.API+"/api/v0/dag/import?pin-roots=false", mw.FormDataContentType(), pr)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dag import: %s %s", resp.Status, out)
	}
	if err := k.Client.Pin(ctx, root, ""); err != nil {
		t.Fatal(err)
	}
	return root
}

func received(t *testing.T, k *testenv.Kubo) int64 {
	var st struct{ DataReceived int64 }
	if err := json.Unmarshal([]byte(k.IPFS(t, "stats", "bitswap", "--enc=json")), &st); err != nil {
		t.Fatal(err)
	}
	return st.DataReceived
}

// newPaths is the paths of gen2 not in gen1.
func newPaths(gen1, gen2 []Path) []Path {
	old := map[string]bool{}
	for _, p := range gen1 {
		old[p.StorePath] = true
	}
	var out []Path
	for _, p := range gen2 {
		if !old[p.StorePath] {
			out = append(out, p)
		}
	}
	return out
}

func narBytes(t *testing.T, gen []Path) int64 {
	var n int64
	for _, p := range gen {
		data, err := p.nar()
		if err != nil {
			t.Fatal(err)
		}
		n += int64(len(data))
	}
	return n
}
