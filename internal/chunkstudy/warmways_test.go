package chunkstudy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/ipfs/warm"
	"github.com/nix-ipfs/nix-ipfs/nardag"
	"github.com/nix-ipfs/nix-ipfs/unixfs"
)

// TestStudyWarmWays: how a client kubo is best made to fetch a closure's
// blocks in a random order: block/stat per leaf (one bitswap session
// each: "stat"), the substituter's warm.Daemon (one `refs -r` of a local
// node listing the leaves in that order, one session a list: "list"), the
// same without the Warmer's bound on blocks outstanding ("refs"), or no
// warm at all (cat only: "none"). Each way reads generation 1 of the
// upgrade workload, 16 NARs at once as Nix substitutes, into a fresh
// client kubo connected to the publishing one.
//
// NIX_IPFS_STUDY_WAYS picks ways (default "stat list none"),
// NIX_IPFS_STUDY_ROUNDS the rounds (3), and NIX_IPFS_STUDY_PROFILE=PREFIX
// writes a 2 s CPU profile of the client kubo in each, to PREFIX-....pprof.
//
//	NIX_IPFS_STUDY_MB=200 go test ./internal/chunkstudy -run TestStudyWarmWays -v
func TestStudyWarmWays(t *testing.T) {
	gens := studyGenerations(t)
	chunkers := []string{"buzhash", "nix-refs-4096-253952"}
	ways := []string{"stat", "list", "none"}
	if s := os.Getenv("NIX_IPFS_STUDY_WAYS"); s != "" {
		ways = strings.Fields(s)
	}
	rounds, _ := strconv.Atoi(os.Getenv("NIX_IPFS_STUDY_ROUNDS"))
	if rounds <= 0 {
		rounds = 3
	}
	ctx := context.Background()
	a := testenv.StartKubo(t)
	defer a.Stop(t)
	roots := map[string][]cid.Cid{}
	var total int64
	for _, ch := range chunkers {
		for _, p := range gens[0] {
			data, err := p.nar()
			if err != nil {
				t.Fatal(err)
			}
			if ch == chunkers[0] {
				total += int64(len(data))
			}
			root, err := nardag.Import(ctx, a.Client, func(put nardag.Sink) (cid.Cid, error) {
				return nardag.Build(ctx, bytes.NewReader(data), ch, p.hashes(), put)
			}, true)
			if err != nil {
				t.Fatal(err)
			}
			roots[ch] = append(roots[ch], root)
		}
	}
	type res struct{ wall, cpuA, cpuC []float64 }
	results := map[string]*res{}
	for r := 0; r < rounds; r++ {
		for _, ch := range chunkers {
			for _, way := range ways {
				c, rd := testenv.StartClientOf(t, a)
				// Past the daemon's own start-up work.
				time.Sleep(3 * time.Second)
				a0, c0 := cpuOf(t, a.PID()), cpuOf(t, c.PID())
				start := time.Now()
				var pw sync.WaitGroup
				if prof := os.Getenv("NIX_IPFS_STUDY_PROFILE"); prof != "" {
					pw.Add(1)
					go func() {
						defer pw.Done()
						resp, err := http.Get(c.API + "/debug/pprof/profile?seconds=2")
						if err != nil {
							t.Log(err)
							return
						}
						defer resp.Body.Close()
						f, _ := os.Create(fmt.Sprintf("%s-%s-%s-%d.pprof", prof, ch, way, r))
						io.Copy(f, resp.Body)
						f.Close()
					}()
				}
				fetchAll(t, c, rd, roots[ch], way)
				pw.Wait()
				wall := time.Since(start).Seconds()
				a1, c1 := cpuOf(t, a.PID()), cpuOf(t, c.PID())
				c.Stop(t)
				k := ch + " " + way
				if results[k] == nil {
					results[k] = &res{}
				}
				results[k].wall = append(results[k].wall, float64(total)/1e6/wall)
				results[k].cpuA = append(results[k].cpuA, a1-a0)
				results[k].cpuC = append(results[k].cpuC, c1-c0)
				t.Logf("round %d %s: %.0f MB/s, A %.2f CPU-s, C %.2f CPU-s", r, k, float64(total)/1e6/wall, a1-a0, c1-c0)
			}
		}
	}
	var b strings.Builder
	for _, ch := range chunkers {
		for _, way := range ways {
			k := ch + " " + way
			fmt.Fprintf(&b, "| %s | %s | %v | %v | %v |\n", ch, way, fmtF(results[k].wall), fmtF(results[k].cpuA), fmtF(results[k].cpuC))
		}
	}
	t.Logf("%.1f MB\n| chunker | way | MB/s | A CPU-s | C CPU-s |\n%s", float64(total)/1e6, b.String())
}

// fetchOnly hides a Kubo's other methods: the Warmer asks a block at a
// time.
type fetchOnly struct{ k *ipfs.Kubo }

func (f fetchOnly) Fetch(ctx context.Context, c cid.Cid) error { return f.k.Fetch(ctx, c) }

func fmtF(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(s, " ")
}

func cpuOf(t *testing.T, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

// fetchAll reads every root, 16 at once as Nix substitutes, warming each
// the given way first.
func fetchAll(t *testing.T, c *testenv.Kubo, rd *ipfs.Reader, roots []cid.Cid, way string) {
	ctx := context.Background()
	w := &unixfs.Warmer{Parallel: 128}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, root := range roots {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			switch way {
			case "stat":
				fs, _ := rd.BlockStore()
				if _, err := w.Warm(ctx, c.Client, fetchOnly{c.Client}, fs, root, nil); err != nil {
					t.Error(err)
				}
			case "list":
				st, err := warm.New(rd).Warm(ctx, w, root, nil)
				if err != nil {
					t.Error(err)
				}
				if st.Retries > 0 {
					t.Logf("%s: %d blocks, %d fetched, %d retries", root, st.Blocks, st.Fetched, st.Retries)
				}
			case "refs":
				if err := warmRefs(ctx, c, root); err != nil {
					t.Error(err)
				}
			}
			rc, err := rd.Cat(ctx, root)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, rc)
			rc.Close()
		}()
	}
	wg.Wait()
}

// warmRefs fetches root's inner nodes level by level, then lists its
// leaves, shuffled, in a local dag-pb node and has kubo `refs -r` it.
func warmRefs(ctx context.Context, c *testenv.Kubo, root cid.Cid) error {
	level := []cid.Cid{root}
	var leaves []cid.Cid
	for len(level) > 0 {
		var next []cid.Cid
		for _, n := range level {
			if n.Type() == cid.Raw {
				leaves = append(leaves, n)
				continue
			}
			data, err := c.Client.Block(ctx, n)
			if err != nil {
				return err
			}
			pn, err := merkledag.DecodeProtobuf(data)
			if err != nil {
				return err
			}
			for _, l := range pn.Links() {
				next = append(next, l.Cid)
			}
		}
		level = next
	}
	rand.Shuffle(len(leaves), func(i, j int) { leaves[i], leaves[j] = leaves[j], leaves[i] })
	nd := merkledag.NodeWithData(nil)
	nd.SetCidBuilder(nardag.Prefix)
	for i, l := range leaves {
		nd.AddRawLink(strconv.Itoa(i), &ipld.Link{Cid: l})
	}
	blk, err := nd.EncodeProtobuf(false)
	if err != nil {
		return err
	}
	syn := nd.Cid()
	if err := post(ctx, c.API+"/api/v0/block/put?cid-codec=dag-pb&pin=false", blk); err != nil {
		return err
	}
	resp, err := http.Post(c.API+"/api/v0/refs?recursive=true&arg="+syn.String(), "", nil)
	if err != nil {
		return err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || bytes.Contains(out, []byte(`"Err":"`)) && !bytes.Contains(out, []byte(`"Err":""`)) {
		return fmt.Errorf("refs: %s %.300s", resp.Status, out)
	}
	http.Post(c.API+"/api/v0/block/rm?arg="+syn.String(), "", nil)
	return nil
}

func post(ctx context.Context, url string, data []byte) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("data", "block")
	fw.Write(data)
	mw.Close()
	resp, err := http.Post(url, mw.FormDataContentType(), &body)
	if err != nil {
		return err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s %s", url, resp.Status, out)
	}
	return nil
}
