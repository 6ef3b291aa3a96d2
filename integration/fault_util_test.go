package integration

// Helpers shared by the fault, hostile-input and security tests: batches of
// derivations, a checker that watches the cache for anything a reader must
// never see, the stream's counts, and the RELIABILITY lines that
// docs/RELIABILITY.md is kept from.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// reliability logs one machine-readable line for docs/RELIABILITY.md:
//
//	RELIABILITY test=TestFaultX fault=nats-down runs=100 in=100 out=100 lost=0 dup=0 dead=0
//
// `go test -v -run 'Fault|Hostile|Security' ./integration/ | grep RELIABILITY`
// prints every row; with NIX_IPFS_RELIABILITY_LOG set, the lines are also
// appended to that file.
func reliability(t *testing.T, fault string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "RELIABILITY test=%s fault=%s", strings.SplitN(t.Name(), "/", 2)[0], fault)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
	if f := os.Getenv("NIX_IPFS_RELIABILITY_LOG"); f != "" {
		if fh, err := os.OpenFile(f, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintln(fh, b.String())
			fh.Close()
		}
	}
}

// batchExpr is a Nix list of n distinct derivations, so that one nix-build
// builds them all and runs the post-build hook n times. script runs in each
// with $i set to its index.
func batchExpr(prefix string, n int, script, extra string) string {
	var b strings.Builder
	b.WriteString("[\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "(%s)\n", testenv.Drv(fmt.Sprintf("%s-%d", prefix, i), "i="+fmt.Sprint(i)+"\n"+script, extra))
	}
	b.WriteString("]\n")
	return b.String()
}

// multiOutputs returns the extra attribute for a derivation with k outputs
// (out, o1, ..., o<k-1>) and a script that fills each of them with a file
// of a pseudo-random size up to maxKiB KiB, so that a batch of few builds
// gives many store paths of mixed sizes.
func multiOutputs(k, maxKiB int) (extra, script string) {
	outs := []string{`"out"`}
	for i := 1; i < k; i++ {
		outs = append(outs, fmt.Sprintf(`"o%d"`, i))
	}
	extra = "outputs = [ " + strings.Join(outs, " ") + " ];"
	script = fmt.Sprintf(`for o in $outputs; do
  eval p=\$$o
  mkdir -p $p
  echo "$o $i" > $p/name
  r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  head -c $(( (r %% %d + 1) * 1024 )) /dev/urandom > $p/data
done`, maxKiB)
	return extra, script
}

// pathsOf returns the sorted, distinct store paths in outs.
func pathsOf(outs []string) []string {
	m := map[string]bool{}
	for _, p := range outs {
		m[p] = true
	}
	var s []string
	for p := range m {
		s = append(s, p)
	}
	sort.Strings(s)
	return s
}

// allOutputs returns every output path of the derivations behind outs (nix-build
// prints only the first output of each derivation of a list).
func allOutputs(t *testing.T, n *testenv.Nix, outs []string) []string {
	t.Helper()
	var all []string
	for _, p := range outs {
		drv := strings.TrimSpace(n.Run(t, "nix-store", "--query", "--deriver", p))
		all = append(all, strings.Fields(n.Run(t, "nix-store", "--query", "--outputs", drv))...)
	}
	return pathsOf(all)
}

// flushSpool runs `nix-ipfs-hook flush` so that an event a slow hook run
// spooled on a loaded machine still reaches the stream.
func flushSpool(t *testing.T, b *builder) {
	t.Helper()
	if out, err := cmd2(b, "flush"); err != nil {
		t.Fatalf("flush: %v\n%s", err, out)
	}
}

// durableInfo returns a durable consumer's state, nil before it exists.
func durableInfo(t *testing.T, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := testenv.DurableInfo(ctx, js, events.DefaultStream, durable)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitDrained waits until the durable consumer has nothing pending or
// unacknowledged: every event it was given was acked or terminated.
func waitDrained(t *testing.T, js jetstream.JetStream, durable string, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, "consumer "+durable+" drained", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Errors are retried: a NATS cluster may be electing a leader.
		info, err := testenv.DurableInfo(ctx, js, events.DefaultStream, durable)
		return err == nil && info != nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// deadLetters returns every dead letter on the stream.
func deadLetters(t *testing.T, js jetstream.JetStream) []*events.DeadLetter {
	t.Helper()
	var out []*events.DeadLetter
	for _, e := range streamEvents(t, js, events.SubjectDeadPrefix+">") {
		out = append(out, e.(*events.DeadLetter))
	}
	return out
}

// publishedCounts returns how many "published" events each store path has.
func publishedCounts(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, e := range streamEvents(t, js, events.SubjectPublished) {
		m[e.(*events.Published).StorePath]++
	}
	return m
}

// checkPublishedOnce reports, as test errors, every path with no published
// event or more than one, and returns how many were lost and duplicated.
func checkPublishedOnce(t *testing.T, js jetstream.JetStream, paths []string) (lost, dup int) {
	t.Helper()
	return checkOnce(t, publishedCounts(t, js), paths, "published")
}

// checkBuiltOnce is checkPublishedOnce for built events: each path must be
// an output of exactly one of evs.
func checkBuiltOnce(t *testing.T, evs []*events.Built, paths []string) (lost, dup int) {
	t.Helper()
	counts := map[string]int{}
	for _, ev := range evs {
		for _, p := range ev.OutPaths {
			counts[p]++
		}
	}
	return checkOnce(t, counts, paths, "built")
}

// checkOnce reports, as test errors, every path whose count of kind events
// is not 1, and returns how many were lost and duplicated.
func checkOnce(t *testing.T, counts map[string]int, paths []string, kind string) (lost, dup int) {
	t.Helper()
	for _, p := range paths {
		switch c := counts[p]; {
		case c == 0:
			lost++
			t.Errorf("%s: no %s event", p, kind)
		case c > 1:
			dup++
			t.Errorf("%s: %d %s events, want 1", p, c, kind)
		}
	}
	return lost, dup
}

// pinnedOn returns the recursive pins of a kubo node, by the ipfs CLI.
func pinnedOn(t *testing.T, k *testenv.Kubo) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, line := range strings.Split(k.IPFS(t, "pin", "ls", "--type=recursive", "--quiet"), "\n") {
		if f := strings.TrimSpace(line); f != "" {
			m[f] = true
		}
	}
	return m
}

// checkCache verifies a cache at rest: every path has a narinfo that parses,
// whose NAR is present with FileSize bytes hashing to FileHash, and whose
// IPFSHash is set. It returns the narinfos by store path and a description
// of each problem.
func checkCache(cacheDir string, paths []string) (map[string]*narinfo.NarInfo, []string) {
	var bad []string
	got := map[string]*narinfo.NarInfo{}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(cacheDir, storepath.HashPart(p)+".narinfo"))
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: no narinfo: %v", p, err))
			continue
		}
		ni, err := narinfo.ParseBytes(b)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: narinfo does not parse: %v", p, err))
			continue
		}
		got[p] = ni
		if ni.IPFSHash == "" {
			bad = append(bad, p+": no IPFSHash")
		}
		nar, err := os.ReadFile(filepath.Join(cacheDir, ni.URL))
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: NAR %s: %v", p, ni.URL, err))
			continue
		}
		sum := sha256.Sum256(nar)
		if uint64(len(nar)) != ni.FileSize || "sha256:"+nixbase32.EncodeToString(sum[:]) != ni.FileHash {
			bad = append(bad, fmt.Sprintf("%s: NAR %s has %d bytes hashing elsewhere; narinfo says %d, %s", p, ni.URL, len(nar), ni.FileSize, ni.FileHash))
		}
	}
	return got, bad
}

// cacheChecker scans a cache directory over and over while it is being
// written and records anything a reader must never see: a narinfo that does
// not parse (half-written), one whose NAR is missing or of another size, or
// a NAR whose bytes do not hash to its name. Temp files (".tmp-") are exempt:
// readers never open them.
type cacheChecker struct {
	dir   string
	scans atomic.Int64
	seen  atomic.Int64 // narinfos examined, over all scans

	mu       sync.Mutex
	problems []string
	hashed   map[string]bool // NARs whose content was checked once

	stop chan struct{}
	done chan struct{}
}

func startCacheChecker(t *testing.T, dir string, every time.Duration) *cacheChecker {
	c := &cacheChecker{dir: dir, hashed: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			c.scan()
			time.Sleep(every)
		}
	}()
	t.Cleanup(c.Stop)
	return c
}

func (c *cacheChecker) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *cacheChecker) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

func (c *cacheChecker) report(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.problems) < 50 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

func (c *cacheChecker) scan() {
	c.scans.Add(1)
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".narinfo") || strings.HasPrefix(name, atomicfile.TempPrefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			if !os.IsNotExist(err) {
				c.report("%s: %v", name, err)
			}
			continue
		}
		c.seen.Add(1)
		ni, err := narinfo.ParseBytes(b)
		if err != nil {
			c.report("%s: half-written or broken narinfo (%d bytes): %v", name, len(b), err)
			continue
		}
		fi, err := os.Stat(filepath.Join(c.dir, ni.URL))
		if err != nil {
			c.report("%s: its NAR %s is missing: %v", name, ni.URL, err)
			continue
		}
		if uint64(fi.Size()) != ni.FileSize {
			c.report("%s: its NAR %s has %d bytes, FileSize says %d", name, ni.URL, fi.Size(), ni.FileSize)
		}
	}
	// Every NAR in place has exactly the bytes its name says, checked once
	// per NAR: a NAR is renamed into place whole or not at all.
	nars, _ := os.ReadDir(filepath.Join(c.dir, "nar"))
	for _, e := range nars {
		name := e.Name()
		if strings.HasPrefix(name, atomicfile.TempPrefix) || !strings.HasSuffix(name, ".nar") {
			continue
		}
		c.mu.Lock()
		done := c.hashed[name]
		c.hashed[name] = true
		c.mu.Unlock()
		if done {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.dir, "nar", name))
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		if want := nixbase32.EncodeToString(sum[:]) + ".nar"; want != name {
			c.report("nar/%s: %d bytes hashing to %s: truncated or foreign", name, len(b), want)
		}
	}
}

// leftovers returns files in the cache that are neither narinfos, NARs,
// nix-cache-info, nor the publisher's state: what a failed write left.
func leftovers(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), atomicfile.TempPrefix) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// hasCommand reports whether the nix-ipfs binary has a subcommand: the
// mirror and substituter are written by others and may not have landed.
func hasCommand(t *testing.T, bin, name string) bool {
	t.Helper()
	out, _ := exec.Command(filepath.Join(bin, "nix-ipfs"), name, "--help").CombinedOutput()
	return !strings.Contains(string(out), "unknown command")
}

// fastRecovery are publisher settings that make it recover quickly in a
// test: a killed publisher's events come back after ack-wait, and its path
// leases expire after lock-ttl.
var fastRecovery = []string{"--ack-wait", "5s", "--lock-ttl", "3s"}
