package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
)

// bitswapStats is what `ipfs stats bitswap` says, the fields used here.
type bitswapStats struct {
	BlocksReceived   uint64
	DataReceived     uint64
	BlocksSent       uint64
	DataSent         uint64
	DupBlksReceived  uint64
	DupDataReceived  uint64
	MessagesReceived uint64
}

func statsOf(s *scope, k *testenv.Kubo) bitswapStats {
	var st bitswapStats
	s.check(json.Unmarshal([]byte(k.IPFS(s, "stats", "bitswap", "--enc=json")), &st), "bitswap stats")
	return st
}

// benchFanout: six clients, then sixteen, each with its own kubo and
// substituter, peered with B and with each other, fetch the same closure at
// once. What B sends is the figure, counted by an iptables owner match on
// the user B's kubo runs as (every protocol) and by bitswap's statistics:
// plain HTTP sends the closure once per client.
func benchFanout(b *Bench, s *scope, sec *Section) {
	sec.Title = "11. Fan-out: six and sixteen clients fetch one closure at once"
	if !b.hasCommand("substituter") {
		sec.NotRun = "`nix-ipfs substituter` is not in this tree yet"
		return
	}
	ctx := b.ctx
	const clients, many = 6, 16
	top, closure := b.closureSized(s, "fanout-closure", b.sz.fanParts, b.sz.fanPartBytes)
	total := b.narSize(s, closure)

	progress("fanout: publishing the closure and pinning it on B")
	a, kb, cids := b.mirrorOnB(s, []string{top}, closure)
	// B as a mirror is deployed (the mirror role's bitswap settings), and
	// run as its own user so that iptables counts all it sends.
	mirrorRole(s, kb)
	acct := newUIDCounter(s, accountUID)
	if acct != nil {
		runAs(s, kb, accountUID)
	} else {
		kb.Stop(s)
		kb.Start(s)
	}
	var dagBytes uint64
	for _, p := range closure {
		var st struct{ TotalSize uint64 }
		if json.Unmarshal([]byte(kb.IPFS(s, "dag", "stat", "--progress=false", "--enc=json", cids[p])), &st) == nil {
			dagBytes += st.TotalSize
		}
	}

	bin := filepath.Join(b.bins, "nix-ipfs")
	plainAddr := freeAddr(s)
	plainProc := testenv.StartProc(s, bin, []string{"serve", "--cache-dir", a.cache, "--listen", plainAddr},
		"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
	waitCacheInfo(ctx, s, "http://"+plainAddr, plainProc)
	// A link without delay or limit, to count what A's HTTP server sends.
	plainLink := newLink(s, plainAddr, 0, 0)

	progress("fanout: starting %d client kubos, peered with each other", many)
	addr := func(k *testenv.Kubo) string {
		id := strings.TrimSpace(k.IPFS(s, "id", "-f", "<id>"))
		for _, a := range strings.Fields(k.IPFS(s, "swarm", "addrs", "listen")) {
			if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
				return a + "/p2p/" + id
			}
		}
		s.Fatalf("kubo has no loopback TCP address")
		return ""
	}
	var ks []*testenv.Kubo
	for i := 0; i < many; i++ {
		ks = append(ks, testenv.StartKubo(s, testenv.KuboConfig("Routing.Type", `"none"`)))
	}
	bAddr := addr(kb)
	bID := strings.TrimSpace(kb.IPFS(s, "id", "-f", "<id>"))
	// B reaches the clients as it does in the field: A's cache lists it
	// (the publisher writes the list from B's announcements), and each
	// substituter peers its kubo with it, or not (package fleet).
	s.check(mirrorlist.WriteFile(a.cache, &mirrorlist.List{Type: mirrorlist.Type, Mirrors: []mirrorlist.Mirror{{
		Name: "b", PeerID: bID, Addrs: []string{strings.TrimSuffix(bAddr, "/p2p/"+bID)}, Announced: true, LastPinned: time.Now(),
	}}}), "mirror list")
	addrs := make([]string, len(ks))
	for i, k := range ks {
		addrs[i] = addr(k)
	}
	// mesh connects the first n clients with each other, as mDNS connects
	// the hosts of one LAN (kept and redialled), or takes them apart.
	mesh := func(n int, on bool) {
		for i, k := range ks[:n] {
			for j := i + 1; j < n; j++ {
				if on {
					k.IPFS(s, "swarm", "peering", "add", addrs[j])
					k.IPFS(s, "swarm", "connect", addrs[j])
					continue
				}
				id := addrs[j][strings.LastIndex(addrs[j], "/p2p/")+len("/p2p/"):]
				s.check(k.Client.PeeringRemove(ctx, id), "peering rm")
				s.check(k.Client.Disconnect(ctx, id), "disconnect")
			}
		}
	}

	copyAll := func(urls []string) time.Duration {
		var wg sync.WaitGroup
		errs := make([]error, len(urls))
		start := time.Now()
		for i, url := range urls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dest := filepath.Join(destDir(s), "store")
				// Each client its own narinfo cache database: six Nix
				// processes sharing one collide on its inserts.
				cmd := b.nix.Command("nix", "copy", "--from", url, "--to", dest,
					"--option", "trusted-public-keys", b.nix.PublicKey, "--option", "require-sigs", "true",
					"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0", top)
				cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+filepath.Join(filepath.Dir(dest), "cache"))
				if out, err := cmd.CombinedOutput(); err != nil {
					errs[i] = fmt.Errorf("%v\n%s", err, out)
				}
				if errs[i] == nil {
					if ents, _ := os.ReadDir(filepath.Join(dest, "nix", "store")); len(ents) < len(closure) {
						errs[i] = fmt.Errorf("%d of %d paths in the new store", len(ents), len(closure))
					}
				}
				removeAll(filepath.Dir(dest))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			s.check(err, "nix copy")
		}
		return time.Since(start)
	}

	type variant struct {
		key, name string
		n         int // clients
		args      []string
		lan       int // clients on the LAN, the n fetching among them (0: n)
	}
	variants := []variant{
		{"plain", "plain HTTP: six `nix copy` from `nix-ipfs serve` on A", clients, nil, 0},
		{"sub", "substituters (defaults: one client keeps B, the others take from it; each NAR's blocks fetched in a random order, as one list, 16 NARs read ahead)", clients, nil, 0},
		{"sub-allb", "substituters with `--mirror-seeders 0` (every client keeps B: the defaults before the fleet)", clients, []string{"--mirror-seeders", "0"}, 0},
		{"sub-idle", "substituters (defaults), ten more clients on the LAN, idle", clients, nil, many},
		{"sub-inorder", "substituters with `--block-fetch-parallel 0 --prefetch 4` (the substituter's defaults before issue 22)", clients, []string{"--block-fetch-parallel", "0", "--prefetch", "4"}, 0},
		{"plain-16", "plain HTTP: sixteen `nix copy` from `nix-ipfs serve` on A", many, nil, 0},
		{"sub-16", "sixteen substituters (defaults)", many, nil, 0},
		{"sub-16-allb", "sixteen substituters with `--mirror-seeders 0`", many, []string{"--mirror-seeders", "0"}, 0},
		{"sub-16-inorder", "sixteen substituters with `--block-fetch-parallel 0 --prefetch 4` (before issue 22)", many, []string{"--block-fetch-parallel", "0", "--prefetch", "4"}, 0},
	}
	variants = slices.DeleteFunc(variants, func(v variant) bool { return !keepSide(v.key) })
	type result struct {
		sentRatio float64 // by iptables when it counts, else bitswap
		bitswap   float64 // bitswap DataSent ÷ closure
		took      time.Duration
		dups      uint64    // duplicate blocks received by the clients
		recv      uint64    // blocks received by the clients
		fromPeers uint64    // bytes the clients received beyond what B sent
		upstream  int64     // NAR bytes the substituters sent from upstream
		kuboRSS   int64     // the largest client kubo's peak RSS
		subRSS    int64     // the largest substituter's peak RSS
		cpu       []float64 // CPU-s: client kubos, B, substituters, nix copy
		withB     int       // clients connected to B when the copies began
	}
	res := map[string][]result{}
	for r := 0; r < b.rounds; r++ {
		for _, v := range rotate(variants, r) {
			progress("fanout: round %d/%d: %s", r+1, b.rounds, v.key)
			if strings.HasPrefix(v.key, "plain") {
				before := plainLink.down.bytes()
				var urls []string
				for range v.n {
					urls = append(urls, "http://"+plainLink.Addr())
				}
				took := copyAll(urls)
				sent := plainLink.down.bytes() - before
				res[v.key] = append(res[v.key], result{sentRatio: float64(sent) / float64(total), took: took})
				continue
			}
			var urls []string
			var procs []*testenv.Proc
			var beforeC []bitswapStats
			// Every client kubo is emptied, the ones this variant leaves
			// idle too: they stay in the mesh, and one still holding an
			// earlier variant's blocks would serve them in B's place.
			for _, k := range ks {
				k.IPFS(s, "repo", "gc")
			}
			lan := max(v.lan, v.n)
			mesh(lan, true)
			for _, k := range ks[:v.n] {
				if pid := kuboPID(k.Repo); pid > 0 {
					resetPeakRSS(pid)
				}
				listen := freeAddr(s)
				args := append([]string{"substituter", "--listen", listen, "--upstream", "http://" + plainAddr, "--kubo-api", k.API}, v.args...)
				// Bitswap sometimes leaves one NAR's read without a byte
				// (see docs/BENCHMARKS.md); it then comes from upstream
				// after this long, counted in the table.
				args = append(args, "--ipfs-timeout", "15s")
				// IPFS_PATH: the substituter reads its kubo's block
				// store, as it does beside its kubo on a client host.
				p := testenv.StartProc(s, bin, args, "NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=info", "IPFS_PATH="+k.Repo)
				waitCacheInfo(ctx, s, "http://"+listen, p)
				urls = append(urls, "http://"+listen)
				procs = append(procs, p)
				beforeC = append(beforeC, statsOf(s, k))
			}
			// Every substituter has decided whether to keep B (its first
			// peering round, before it listens); a client that let go of B
			// must not be connected to it now.
			bPeers := kb.IPFS(s, "swarm", "peers")
			connected := 0
			for _, k := range ks[:v.n] {
				if strings.Contains(bPeers, strings.TrimSpace(k.IPFS(s, "id", "-f", "<id>"))) {
					connected++
				}
			}
			before := statsOf(s, kb)
			var acctBefore int64
			if acct != nil {
				acctBefore = acct.bytes(s)
			}
			var kpids, spids []int
			for _, k := range ks {
				kpids = append(kpids, kuboPID(k.Repo))
			}
			for _, p := range procs {
				spids = append(spids, p.Cmd.Process.Pid)
			}
			clk := startCPU(kpids, []int{kuboPID(kb.Repo)}, spids)
			took := copyAll(urls)
			cpu := clk.since()
			after := statsOf(s, kb)
			out := result{bitswap: float64(after.DataSent-before.DataSent) / float64(total), took: took, withB: connected, cpu: cpu}
			out.sentRatio = out.bitswap
			if acct != nil {
				out.sentRatio = float64(acct.bytes(s)-acctBefore) / float64(total)
			}
			var recvData uint64
			for i, k := range ks[:v.n] {
				if pid := kuboPID(k.Repo); pid > 0 {
					if rss, err := procStatus(pid, "VmHWM"); err == nil {
						out.kuboRSS = max(out.kuboRSS, rss)
					}
				}
				st := statsOf(s, k)
				out.dups += st.DupBlksReceived - beforeC[i].DupBlksReceived
				out.recv += st.BlocksReceived - beforeC[i].BlocksReceived
				recvData += st.DataReceived - beforeC[i].DataReceived
			}
			if sent := after.DataSent - before.DataSent; recvData > sent {
				out.fromPeers = recvData - sent
			}
			for _, p := range procs {
				if rss, err := procStatus(p.Cmd.Process.Pid, "VmHWM"); err == nil {
					out.subRSS = max(out.subRSS, rss)
				}
				for _, l := range narLines(p.Log) {
					if l.Source != SourceIPFS {
						out.upstream += l.Bytes
					}
				}
				p.Signal(syscall.SIGTERM)
				p.Wait(10 * time.Second)
			}
			// The next variant's substituters decide afresh: no client
			// stays connected to B from this one.
			for _, k := range ks {
				s.check(k.Client.PeeringRemove(ctx, bID), "peering rm B")
				s.check(k.Client.Disconnect(ctx, bID), "disconnect B")
			}
			mesh(lan, false)
			res[v.key] = append(res[v.key], out)
		}
	}

	for _, v := range variants {
		var ratios []float64
		for _, x := range res[v.key] {
			ratios = append(ratios, x.sentRatio)
		}
		row := Row{What: fmt.Sprintf("Fan-out, %d clients at once: what B sends ÷ closure size, %s", v.n, v.name),
			Ratio: nan, RatioText: fmt.Sprintf("%.2fx", median(ratios))}
		switch v.key {
		case "sub":
			row.Aim, row.Verdict = "<= 1.5x", verdict(median(ratios) <= 1.5)
		case "sub-16":
			row.Aim, row.Verdict = "<= 2x", verdict(median(ratios) <= 2)
		}
		sec.add(row)
	}
	for _, pair := range [][2]string{{"sub", "sub-inorder"}, {"sub-16", "sub-16-inorder"}} {
		var a, b []time.Duration
		for _, x := range res[pair[0]] {
			a = append(a, x.took)
		}
		for _, x := range res[pair[1]] {
			b = append(b, x.took)
		}
		if len(a) > 0 && len(b) > 0 {
			r := float64(medianDur(a)) / float64(medianDur(b))
			sec.add(Row{What: fmt.Sprintf("Fan-out, %s: time until every client is done ÷ the substituter's defaults before issue 22", pair[0]),
				Ratio: nan, RatioText: fmt.Sprintf("%.2fx", r), Aim: "<= 1.25x", Verdict: verdict(r <= 1.25)})
		}
	}
	counted := "bitswap's DataSent on B (iptables was not usable here)"
	if acct != nil {
		counted = fmt.Sprintf("every byte B's kubo sent, any protocol, counted by an iptables owner match on the user it runs as (uid %d, its own HOME); bitswap's DataSent beside it", accountUID)
	}
	sec.detailf("B's kubo has the mirror role's bitswap settings (internal/kubod, deploy/kubo/mirror.sh). B's share is %s. Memory: the largest peak RSS (VmHWM, reset before each round) of one client's kubo and of one substituter. CPU: the CPU time (user and system) during the copies of all sixteen client kubos (idle ones too), of B's kubo, of the variant's substituters, and of the `nix copy` processes; with 2 cores, a round of T seconds has 2T to give.\n\n", counted)
	sec.detailf("Six (then sixteen) client hosts, each with its own kubo (`Routing.Type none`) peered (`swarm peering add` and `swarm connect`) with every other client of the variant's LAN, as mDNS connects a LAN (in the variant with idle clients, all sixteen are on the LAN and six fetch), and its own `nix-ipfs substituter --kubo-api <its kubo> --upstream <A>`, which peers its kubo with B through A's mirror list, or lets go of B when a client before it keeps it (package fleet, `--mirror-seeders`), run stock Nix `nix copy` of the same closure (%d paths, %s of NAR, %s of DAG on B) at the same moment. B holds the closure pinned; A's kubo is stopped. "+
		"Plain HTTP's is the bytes A's `nix-ipfs serve` sent (counted by a pass-through proxy). Each client's kubo is garbage-collected and its substituter (`--ipfs-timeout 15s`) restarted before every round. Variants rotate, %d rounds.\n\n",
		len(closure), fmtBytes(total), fmtBytes(int64(dagBytes)), b.rounds)
	sec.detailf("| Variant | B sent ÷ closure per round | (bitswap) | wall clock per round | clients connected to B at the start | blocks the clients received (duplicates) | bytes clients had from each other | NAR bytes from upstream | client kubo peak RSS | substituter peak RSS | CPU-s: client kubos / B / substituters / Nix |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range variants {
		var rs, bs, ts, wb, bl, fp, up, kr, sr, cs []string
		for _, x := range res[v.key] {
			rs = append(rs, fmt.Sprintf("%.2fx", x.sentRatio))
			bs = append(bs, fmt.Sprintf("%.2fx", x.bitswap))
			kr = append(kr, fmtBytes(x.kuboRSS))
			sr = append(sr, fmtBytes(x.subRSS))
			ts = append(ts, fmtDur(x.took))
			wb = append(wb, fmt.Sprint(x.withB))
			bl = append(bl, fmt.Sprintf("%d (%d)", x.recv, x.dups))
			fp = append(fp, fmtBytes(int64(x.fromPeers)))
			up = append(up, fmtBytes(x.upstream))
			cs = append(cs, fmtCPU(x.cpu, 1))
		}
		if strings.HasPrefix(v.key, "plain") {
			rs = []string{"-"}
			wb, bl, fp, up, kr, sr, cs = rs, rs, rs, rs, rs, rs, rs
			for _, x := range res[v.key] {
				rs = append(rs, fmt.Sprintf("%.2fx", x.sentRatio))
			}
			rs, bs = rs[1:], []string{"-"}
		}
		sec.detailf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v.name, strings.Join(rs, ", "), strings.Join(bs, ", "), strings.Join(ts, ", "), strings.Join(wb, ", "), strings.Join(bl, ", "), strings.Join(fp, ", "), strings.Join(up, ", "), strings.Join(kr, ", "), strings.Join(sr, ", "), strings.Join(cs, ", "))
	}
}
