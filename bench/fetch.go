package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// benchFetch: stock Nix copying into a fresh store from the substituter
// (NARs from kubo B), against the same cache served by `nix-ipfs serve`,
// for two shapes of closure: many mid-sized paths, and one large path.
func benchFetch(b *Bench, s *scope, sec *Section) {
	sec.Title = "4. Client fetch"
	if !b.hasCommand("substituter") {
		sec.NotRun = "`nix-ipfs substituter` is not in this tree yet"
		return
	}
	ctx := b.ctx
	top, closure := b.closure(s)
	big := b.big(s)
	all := append(append([]string(nil), closure...), big)

	// Host A publishes both; host B pins every CID, as a mirror would;
	// then A's kubo stops, so NARs can only come from B.
	progress("fetch: publishing the closure and the big path, pinning them on B")
	a, kb, _ := b.mirrorOnB(s, []string{top, big}, all)

	bin := filepath.Join(b.bins, "nix-ipfs")
	plainAddr := freeAddr(s)
	plainProc := testenv.StartProc(s, bin, []string{"serve", "--cache-dir", a.cache, "--listen", plainAddr},
		"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=warn")
	plainURL := "http://" + plainAddr
	waitCacheInfo(ctx, s, plainURL, plainProc)
	// The floor: the same directory, every NAR hashed as it is sent, in
	// this process (hashserve.go).
	hashedURL := serveHashing(s, a.cache)

	type shape struct {
		key, name, top string
		paths          []string
	}
	shapes := []shape{
		{"mid", fmt.Sprintf("many mid-sized paths (%d paths, %s of NAR)", len(closure), fmtBytes(b.narSize(s, closure))), top, closure},
		{"big", fmt.Sprintf("one large path (%s of NAR)", fmtBytes(b.narSize(s, []string{big}))), big, []string{big}},
	}
	// CPU time of the processes serving a copy, per GiB of NAR: wall
	// clock on a shared 2-core machine moves with the neighbours' load,
	// CPU time much less.
	type cpuUse struct{ sub, kubo, nix float64 }
	var lastCPU cpuUse
	copyFrom := func(url string, sh shape, subPID int) float64 {
		dest := filepath.Join(destDir(s), "store")
		// Earlier rounds' and sections' writes are flushed first, so that
		// no round pays for another's writeback.
		runCmd(ctx, nil, "sync")
		clk := startCPU([]int{subPID}, []int{kb.PID()})
		start := time.Now()
		_, err := b.nix.Try("nix", "copy", "--from", url, "--to", dest,
			"--option", "trusted-public-keys", b.nix.PublicKey, "--option", "require-sigs", "true",
			"--option", "narinfo-cache-positive-ttl", "0", "--option", "narinfo-cache-negative-ttl", "0", sh.top)
		took := time.Since(start)
		gib := float64(b.narSize(s, sh.paths)) / (1 << 30)
		cpu := clk.since()
		lastCPU = cpuUse{sub: cpu[0] / gib, kubo: cpu[1] / gib, nix: cpu[2] / gib}
		s.check(err, "nix copy from "+url)
		ents, _ := os.ReadDir(filepath.Join(dest, "nix", "store"))
		got := 0
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				got++
			}
		}
		if got < len(sh.paths) {
			s.Fatalf("%s: %d of %d paths in the new store", url, got, len(sh.paths))
		}
		removeAll(filepath.Dir(dest))
		return float64(b.narSize(s, sh.paths)) / MB / took.Seconds()
	}
	// A fresh substituter for every cold copy: nothing read ahead or
	// remembered from an earlier round.
	startSub := func(extra ...string) (string, *testenv.Proc) {
		listen := freeAddr(s)
		// Beside kubo B, as its unit or compose service runs it:
		// IPFS_PATH names B's repository, whose block store it may read.
		p := testenv.StartProc(s, bin, append([]string{"substituter",
			"--upstream", plainURL, "--listen", listen, "--kubo-api", kb.API}, extra...),
			"NIX_IPFS_LOG_FORMAT=json", "NIX_IPFS_LOG_LEVEL=info", "IPFS_PATH="+kb.Repo)
		url := "http://" + listen
		waitCacheInfo(ctx, s, url, p)
		return url, p
	}

	type key struct{ shape, side string }
	rates := map[key][]float64{}
	ttfbs := map[key][]time.Duration{}
	served := map[key]map[string]int64{} // source -> bytes
	cpus := map[key][]cpuUse{}
	for r := 0; r < b.rounds; r++ {
		for _, sh := range shapes {
			for _, side := range rotate([]string{"plain", "hashed", "sub", "gw", "rpc", "nokey"}, r) {
				switch side {
				case "plain":
					progress("fetch: round %d/%d: %s: plain HTTP", r+1, b.rounds, sh.key)
					rates[key{sh.key, side}] = append(rates[key{sh.key, side}], copyFrom(plainURL, sh, plainProc.Cmd.Process.Pid))
					cpus[key{sh.key, side}] = append(cpus[key{sh.key, side}], lastCPU)
					continue
				case "hashed":
					progress("fetch: round %d/%d: %s: plain HTTP, each NAR hashed as it is sent", r+1, b.rounds, sh.key)
					rates[key{sh.key, side}] = append(rates[key{sh.key, side}], copyFrom(hashedURL, sh, os.Getpid()))
					cpus[key{sh.key, side}] = append(cpus[key{sh.key, side}], lastCPU)
					continue
				}
				cold, warm := "cold", "warm"
				// The publisher's key, as `up` and the docs set it up: the
				// CIDs it signed (IPFSSig) stream on their first fetch.
				extra := []string{"--trusted-public-keys", b.nix.PublicKey}
				switch side {
				case "gw":
					// The same, with every byte read through kubo's
					// gateway rather than straight from its block store.
					cold, warm = "gw-cold", "gw-warm"
					extra = append(extra, "--kubo-blocks", "off")
				case "rpc":
					// Through kubo's RPC cat rather than its block store
					// or gateway, and nothing kept in the spool for a next
					// request: how NAR bytes came before issue 18.
					cold, warm = "rpc-cold", "rpc-warm"
					extra = append(extra, "--kubo-blocks", "off", "--kubo-gateway", "off", "--nar-keep-bytes", "0")
				case "nokey":
					// Without the key: every CID read and checked whole
					// before its first byte, until proved.
					cold, warm = "nokey-cold", "nokey-warm"
					extra = nil
				}
				progress("fetch: round %d/%d: %s: substituter %s, cold then warm", r+1, b.rounds, sh.key, strings.Join(extra, " "))
				url, p := startSub(extra...)
				pid := p.Cmd.Process.Pid
				rates[key{sh.key, cold}] = append(rates[key{sh.key, cold}], copyFrom(url, sh, pid))
				cpus[key{sh.key, cold}] = append(cpus[key{sh.key, cold}], lastCPU)
				seen := len(narLines(p.Log))
				rates[key{sh.key, warm}] = append(rates[key{sh.key, warm}], copyFrom(url, sh, pid))
				cpus[key{sh.key, warm}] = append(cpus[key{sh.key, warm}], lastCPU)
				lines := narLines(p.Log)
				for i, l := range lines {
					k := key{sh.key, cold}
					if i >= seen {
						k.side = warm
					}
					if l.Bytes >= 1<<20 {
						ttfbs[k] = append(ttfbs[k], time.Duration(l.TTFB*float64(time.Second)))
					}
					if served[k] == nil {
						served[k] = map[string]int64{}
					}
					served[k][l.Source] += l.Bytes
				}
				p.Signal(syscall.SIGTERM)
				p.Wait(10 * time.Second)
			}
		}
	}
	// Plain HTTP's and the floor's time to first byte, for comparison:
	// each NAR of the shape fetched once more by a Go client, headers
	// timed.
	for _, sh := range shapes {
		for _, sp := range sh.paths {
			if b.narSize(s, []string{sp}) < 1<<20 {
				continue
			}
			ni, err := narinfo.ParseBytes(must(os.ReadFile(filepath.Join(a.cache, storepath.HashPart(sp)+".narinfo"))))
			s.check(err, "narinfo")
			for side, base := range map[string]string{"plain": plainURL, "hashed": hashedURL} {
				start := time.Now()
				resp, err := http.Get(base + "/" + ni.URL)
				s.check(err, "GET NAR")
				ttfbs[key{sh.key, side}] = append(ttfbs[key{sh.key, side}], time.Since(start))
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}

	sides := []struct{ key, name string }{
		{"plain", "plain HTTP (`nix-ipfs serve` of the cache directory)"},
		{"hashed", "the floor: the cache directory over HTTP, each NAR hashed (SHA-256) as it is sent, no IPFS (bench/hashserve.go)"},
		{"cold", "substituter, cold (fresh process, `--trusted-public-keys`: CIDs the publisher signed are read ahead from kubo B and sent as they are read)"},
		{"warm", "substituter, warm (same process again: NARs kept in its spool are sent from there, others stream from kubo B)"},
		{"gw-cold", "substituter with `--kubo-blocks off`, cold (every byte through kubo B's gateway, none read from its block store)"},
		{"gw-warm", "substituter with `--kubo-blocks off`, warm"},
		{"rpc-cold", "substituter with `--kubo-blocks off --kubo-gateway off --nar-keep-bytes 0`, cold (NARs through kubo's RPC cat, nothing kept)"},
		{"rpc-warm", "substituter with `--kubo-blocks off --kubo-gateway off --nar-keep-bytes 0`, warm (CIDs already checked stream from kubo B)"},
		{"nokey-cold", "substituter without `--trusted-public-keys`, cold (NARs read from kubo B and checked whole before sending)"},
		{"nokey-warm", "substituter without `--trusted-public-keys`, warm"},
	}
	for _, sh := range shapes {
		pr := median(rates[key{sh.key, "plain"}])
		hr := median(rates[key{sh.key, "hashed"}])
		sec.add(Row{What: fmt.Sprintf("Client fetch, %s: the floor (plain HTTP hashing every NAR it sends, no IPFS) vs plain HTTP", sh.name), Ratio: hr / pr,
			Ours: fmtMBps(hr), Base: fmtMBps(pr)})
		for _, side := range []string{"cold", "warm", "nokey-cold"} {
			sr := median(rates[key{sh.key, side}])
			sec.add(Row{What: fmt.Sprintf("Client fetch, %s: substituter %s vs plain HTTP", sh.name, side), Ratio: sr / pr,
				Ours: fmtMBps(sr), Base: fmtMBps(pr), Aim: ">= 0.8x", Verdict: verdict(sr/pr >= 0.8)})
		}
	}
	sec.detailf("Stock Nix (`nix copy --from URL --to FRESH_DIR`, `require-sigs = true`, trusting only the publisher's key, narinfo disk cache TTLs 0) copies a closure into a fresh chroot store (on tmpfs, /dev/shm: see below), from `nix-ipfs substituter --upstream <plain HTTP> --kubo-api <B> --trusted-public-keys <the publisher's key>` (defaults: NAR bytes read from kubo B's block store, else through its gateway, 4 read ahead, 1 GiB of NARs served kept in the spool, verified CIDs remembered) or straight from `nix-ipfs serve` on the publisher's cache directory. "+
		"B holds every NAR pinned (as a mirror leaves it), and A's kubo is stopped, so the substituter's NARs come from B. Two shapes: %s; %s. "+
		"Each round runs plain HTTP, the floor (the cache directory over HTTP with every NAR read through user space and hashed as it is sent, and nothing else: what checking a NAR before its last byte costs at least, with no IPFS at all; bench/hashserve.go, in the bench's own process), the substituter (with `IPFS_PATH` naming kubo B's repository, as beside its daemon: NAR bytes read straight from B's block store, the daemon reading what it lacks), the substituter with `--kubo-blocks off` (every byte through kubo B's HTTP gateway), the substituter with `--kubo-blocks off --kubo-gateway off --nar-keep-bytes 0` (NARs through kubo's RPC cat, none kept in the spool for a next request: how NAR bytes came before issue 18), and the substituter without the key (no CID trusted before it is proved) in rotating order; a substituter side starts a fresh process, copies once (cold) and once more (warm). `sync` runs before every copy (not timed). %d rounds. Throughput is NAR bytes over the whole `nix copy`, narinfo fetches and store registration included. CPU-s per GiB: user and system time of the serving process (`nix-ipfs serve`, the floor's, or the substituter) and of kubo B during the copy, from /proc, and of the `nix copy` itself (its rusage), less sensitive than wall clock to the other load on the machine.\n\n",
		shapes[0].name, shapes[1].name, b.rounds)
	sec.detailf("| Shape | Side | median | MB/s per round | time to first byte per NAR (median, max) | NAR bytes by source | CPU-s per GiB: server, kubo B, Nix (medians) |\n|---|---|---|---|---|---|---|\n")
	for _, sh := range shapes {
		for _, sd := range sides {
			k := key{sh.key, sd.key}
			src := "(cache directory)"
			if sd.key != "plain" && sd.key != "hashed" {
				src = fmt.Sprintf("IPFS %s, upstream %s", fmtBytes(served[k][SourceIPFS]), fmtBytes(served[k]["upstream"]))
			}
			var subCPU, kuboCPU, nixCPU []float64
			for _, c := range cpus[k] {
				subCPU, kuboCPU, nixCPU = append(subCPU, c.sub), append(kuboCPU, c.kubo), append(nixCPU, c.nix)
			}
			sec.detailf("| %s | %s | %s | %s | %s, %s | %s | %.2f, %.2f, %.2f |\n", sh.key, sd.name, fmtMBps(median(rates[k])), fmtRates(rates[k]),
				fmtDur(medianDur(ttfbs[k])), fmtDur(maxDur(ttfbs[k])), src, median(subCPU), median(kuboCPU), median(nixCPU))
		}
	}
	sec.detailf("\nWhy the store is on tmpfs: writing the closure's 15,000 files to this machine's shared disk took 2.2-4.0 s even from a `file://` cache (no HTTP), against 0.6-0.85 s on tmpfs, and a plain HTTP copy varied from 200 to 9 MB/s between rounds of one run, with the other writers' load. On disk, every side measured mostly the disk.\n")
	sec.detailf("\nTime to first byte: the substituter's own `ttfb` per NAR of at least 1 MiB (request to response headers, logged with every NAR) during the copies above; for plain HTTP and the floor, each NAR fetched once more by a Go client after the rounds.\n")
}

// procCPU is the CPU time (user and system) process pid has used, in
// seconds; 0 if it cannot be read.
func procCPU(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis: utime and stime are the
	// 14th and 15th fields.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// childrenCPU is the CPU time (user and system) of this process's children
// that have ended and been waited for, in seconds: around a `nix copy`, that
// command's own.
func childrenCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// cpuClock measures, from its start, the CPU time of groups of processes
// (each group's summed) and of this process's children waited for
// meanwhile (the nix copy commands run).
type cpuClock struct {
	groups [][]int
	t0     []float64 // each group's, then the children's
}

func startCPU(groups ...[]int) *cpuClock {
	c := &cpuClock{groups: groups}
	c.t0 = c.read()
	return c
}

func (c *cpuClock) read() []float64 {
	out := make([]float64, 0, len(c.groups)+1)
	for _, g := range c.groups {
		var t float64
		for _, pid := range g {
			t += procCPU(pid)
		}
		out = append(out, t)
	}
	return append(out, childrenCPU())
}

// since is each group's CPU seconds since the start, then the children's.
func (c *cpuClock) since() []float64 {
	t := c.read()
	for i := range t {
		t[i] -= c.t0[i]
	}
	return t
}

// fmtCPU writes CPU seconds as "a / b / c" with digits decimals.
func fmtCPU(v []float64, digits int) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.FormatFloat(x, 'f', digits, 64)
	}
	return strings.Join(out, " / ")
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go runs on.
const clockTicks = 100

// destDir is a fresh directory for a client's Nix store: on tmpfs where
// there is one. Writing 15,000 files to this machine's shared disk took
// 2.2-4.0 s for the closure even from a file:// cache (no HTTP at all),
// against 0.6-0.85 s on tmpfs, and varied tenfold between rounds with the
// other writers' load; on tmpfs the figures are about the fetch.
func destDir(s *scope) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "nix-ipfs-bench-"); err == nil {
			s.Cleanup(func() { removeAll(d) })
			return d
		}
	}
	return s.TempDir()
}

// SourceIPFS is the substituter's source label for NARs from IPFS.
const SourceIPFS = "ipfs"

// narLine is what the bench reads of the substituter's "NAR served" log.
type narLine struct {
	Source string  `json:"source"`
	Bytes  int64   `json:"bytes"`
	TTFB   float64 `json:"ttfb"` // seconds (zap's JSON duration)
}

// narLines reads the "NAR served" lines of a substituter's JSON log.
func narLines(file string) []narLine {
	data, _ := os.ReadFile(file)
	var out []narLine
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `"NAR served"`) {
			continue
		}
		var l narLine
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func waitCacheInfo(ctx context.Context, s *scope, url string, p *testenv.Proc) {
	s.waitFor(ctx, 30*time.Second, 20*time.Millisecond, url, func() bool {
		if p.Wait(0) {
			s.Fatalf("%s exited:\n%s", filepath.Base(p.Cmd.Path), p.Tail(30))
		}
		resp, err := http.Get(url + "/nix-cache-info")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(s *scope) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	s.check(err, "listen")
	defer l.Close()
	return l.Addr().String()
}

// metricValue reads one sample from a Prometheus text endpoint; 0 if absent.
func metricValue(addr, series string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}
