package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/publisher"
)

// provideChoice is one kubo provide setting compared.
type provideChoice struct {
	key, label string
	config     [][2]string // kubo config key, JSON value
	isDefault  string      // which roles' defaults use it (docs/OPERATIONS.md)
}

var provideChoices = []provideChoice{
	{"all", `Provide.Strategy "all" (kubo's default)`, [][2]string{{"Provide.Strategy", `"all"`}}, ""},
	{"pinned", `Provide.Strategy "pinned"`, [][2]string{{"Provide.Strategy", `"pinned"`}}, ""},
	{"entities", `Provide.Strategy "pinned+entities"`, [][2]string{{"Provide.Strategy", `"pinned+entities"`}}, ""},
	{"roots", `Provide.Strategy "roots"`, [][2]string{{"Provide.Strategy", `"roots"`}}, "A and B (up, compose)"},
	{"none", `Provide.Enabled false`, [][2]string{{"Provide.Enabled", `false`}}, "C (clients peer with the mirrors)"},
}

// benchProvide: how many CIDs each provide setting announces to the DHT
// for a cache of 1,000 paths, as kubo's own sweep provider counts them.
func benchProvide(b *Bench, s *scope, sec *Section) {
	sec.Title = "8. Provider records"
	ctx := b.ctx
	paths := 1000
	if b.quick {
		paths = 100
	}
	sizes := provideSizes(paths)
	var total int64
	for _, n := range sizes {
		total += n
	}
	params := ipfs.DefaultParams()
	params.Chunker = publisher.DefaultChunker

	type result struct {
		keys, blocks, pins int
		replication        int
		note               string
	}
	res := map[string]result{}
	for _, ch := range provideChoices {
		progress("provide: %s", ch.key)
		err := runScope("provide/"+ch.key, func(s *scope) {
			var opts []testenv.KuboOption
			for _, kv := range ch.config {
				opts = append(opts, testenv.KuboConfig(kv[0], kv[1]))
			}
			// The sweep provider is kubo 0.42's default; set it anyway, so
			// the figure does not change if the default does.
			opts = append(opts, testenv.KuboConfig("Provide.DHT.SweepEnabled", "true"))
			k := testenv.StartKubo(s, opts...)
			rng := rand.New(rand.NewPCG(42, 1))
			for i, n := range sizes {
				data := make([]byte, n)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				_, err := k.Client.Add(ctx, bytes.NewReader(data), params, true)
				s.check(err, fmt.Sprintf("add NAR %d", i))
			}
			// A restart makes the provider rebuild its schedule from the
			// strategy, as each reprovide cycle does: "pinned" provides
			// nothing when blocks are added, only at the next cycle.
			k.Stop(s)
			k.Start(s)
			var r result
			r.blocks = len(strings.Fields(k.IPFS(s, "refs", "local")))
			r.pins = len(strings.Fields(k.IPFS(s, "pin", "ls", "--type=recursive", "--quiet")))
			// The provider fills its schedule as blocks arrive; wait until
			// the count holds still.
			last, still := -1, 0
			s.waitFor(ctx, 3*time.Minute, 500*time.Millisecond, "the provide schedule to settle", func() bool {
				keys, repl, note := provideStat(b, k)
				r.keys, r.replication, r.note = keys, repl, note
				if keys == last {
					still++
				} else {
					last, still = keys, 0
				}
				return still >= 6
			})
			res[ch.key] = r
		})
		if err != nil {
			s.Fatalf("%s: %v", ch.key, err)
		}
	}
	repl := res["all"].replication
	if repl == 0 {
		repl = 20
	}
	for _, ch := range provideChoices {
		r := res[ch.key]
		sec.add(Row{What: fmt.Sprintf("Provide, %d-path cache, %s: CIDs announced per reprovide cycle", paths, ch.label),
			Ratio: nan, RatioText: fmt.Sprintf("%d", r.keys), Ours: fmt.Sprintf("%d CIDs", r.keys), Base: fmt.Sprintf("%d blocks", r.blocks)})
	}
	sec.detailf("A cache of %d store paths: NARs of pseudo-random bytes (fixed seed), sizes log-uniform from 512 B to 4 MiB, %s in all, "+
		"each added to a fresh kubo as the publisher adds them (%s, pinned). "+
		"The count is kubo's own: `ipfs provide stat` (the sweep provider's schedule, the CIDs it announces to the DHT every reprovide cycle, 22 h by default); "+
		"each CID becomes a provider record on about %d DHT peers (its replication factor). The node has no DHT peers here, so nothing leaves the machine; the schedule is what it would announce.\n\n",
		paths, fmtBytes(total), params, repl)
	sec.detailf("| Setting | CIDs announced | provider records (× %d) | blocks in the repo | recursive pins | used by |\n|---|---|---|---|---|---|\n", repl)
	for _, ch := range provideChoices {
		r := res[ch.key]
		used := ch.isDefault
		if used == "" {
			used = "-"
		}
		keys := fmt.Sprint(r.keys)
		if r.note != "" {
			keys += " (" + r.note + ")"
		}
		sec.detailf("| %s | %s | %d | %d | %d | %s |\n", ch.label, keys, r.keys*repl, r.blocks, r.pins, used)
	}
}

// provideStat returns the sweep provider's scheduled CIDs and replication
// factor; a node that provides nothing reports 0 and why.
func provideStat(b *Bench, k *testenv.Kubo) (keys, replication int, note string) {
	out, err := runCmd(b.ctx, []string{"IPFS_PATH=" + k.Repo, "IPFS_TELEMETRY=off"}, "ipfs", "provide", "stat", "--enc=json")
	if err != nil {
		return 0, 0, "ipfs provide stat: " + lastLine(err.Error())
	}
	var st struct {
		Sweep *struct {
			Schedule struct{ Keys int } `json:"schedule"`
			Network  struct {
				Replication int `json:"replication_factor"`
			} `json:"network"`
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Sweep == nil {
		return 0, 0, "no sweep provider stats"
	}
	return st.Sweep.Schedule.Keys, st.Sweep.Network.Replication, ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// provideSizes returns n NAR sizes, log-uniform between 512 B and 4 MiB,
// the same every run.
func provideSizes(n int) []int64 {
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([]int64, n)
	lo, hi := math.Log(512), math.Log(4<<20)
	for i := range out {
		out[i] = int64(math.Exp(lo + rng.Float64()*(hi-lo)))
	}
	return out
}
