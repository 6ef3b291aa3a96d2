// Command bench measures nix-ipfs against the workflow it replaces, on real
// parts: an embedded NATS JetStream server, real kubo daemons, real Nix, and
// the real nix-ipfs binaries built from this tree. It prints a table and
// writes the figures into a Markdown file (docs/BENCHMARKS.md via `make
// bench`), between markers, keeping the hand-written analysis around them.
//
// Every comparison runs both sides in the same run, alternating, for
// several rounds, and reports medians and their ratio. Nothing here asserts
// on time: the figures are for people to read.
//
//	go run ./bench -quick -out /tmp/b.md          # a smoke run, a minute or two
//	go run ./bench -out docs/BENCHMARKS.md        # the full run, minutes
//	go run ./bench -only hook,dedup -rounds 5
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
)

// sections in the order they run and appear.
var sectionOrder = []string{"hook", "publish", "mirror", "fetch", "dedup", "storm", "small", "provide", "slowlink", "mfs", "fanout", "prune", "upgrade", "scale", "avail"}

var (
	outFile    = flag.String("out", "", "write the figures into this Markdown file (between bench markers; other text is kept)")
	quick      = flag.Bool("quick", false, "small sizes and few runs: a smoke run in a minute or two, figures not meaningful")
	rounds     = flag.Int("rounds", 3, "rounds of every comparison; sides alternate within each round")
	only       = flag.String("only", "", "comma-separated sections to run: "+strings.Join(sectionOrder, ","))
	keepPaths  = flag.Bool("keep-paths", false, "keep the store paths built for the run (by default they are deleted at the end)")
	profileDir = flag.String("profile", "", "also profile the publisher (in-process, runtime/pprof) and kubo (perf, if installed) on the publish workload; write profiles here")
	abBins     = flag.String("ab", "", "also run the publisher sides with the nix-ipfs binary in this directory (a build of a change), alternating with this tree's, for an A/B comparison")
	sidesF     = flag.String("sides", "", "publish section: run only the sides whose key is listed (pub, pub-nocopy, workflow, bare, bare-nocopy, pub-c1, pub-c2, pub-c8, pub-size-262144, pub-buzhash, pub-rabin (the chunkers other than the default), ab, ab-nocopy, and the experiments run only when named: pub-refs-1m, pub-nocopy-buzhash); small section: pub, pub-tuned, pub-one, pub-one-tuned, floor, workflow, mirror, batch; fanout section: plain, sub, sub-allb, sub-idle, sub-inorder, plain-16, sub-16, sub-16-allb, sub-16-inorder; for experiments")
	verboseF   = flag.Bool("v", false, "log every step")
)

// sizes are the workload's dimensions; the full ones are the minimums the
// benchmark's issue names, so that a full run stays well under 30 minutes.
type sizes struct {
	parts       int   // paths of many small files in the publish closure
	partBytes   int64 // bytes of files in each
	bigBytes    int64 // the one big path
	mirrorPaths int   // small paths published at once for the mirror
	dedupBytes  int64 // the package for the dedup measurement
	hookRuns    int   // hook runs per variant (NATS up, down, /bin/true)
	hookHung    int   // runs against a NATS that accepts and never answers
	hookNix     int   // runs of the Nix manual's nix copy recipe
	stormEvents int   // hook runs in the hook storm, 50 at a time
	smallPaths  int   // few-KB paths for the small-path rate
	// The slow-link closure and the link's rate (bytes/s per direction).
	slowParts     int
	slowPartBytes int64
	slowRate      float64
	// The fan-out closure.
	fanParts     int
	fanPartBytes int64
}

var (
	fullSizes = sizes{
		parts: 10, partBytes: 32 << 20, bigBytes: 1 << 30, mirrorPaths: 500, dedupBytes: 100 << 20,
		hookRuns: 200, hookHung: 20, hookNix: 20, stormEvents: 5000, smallPaths: 2000,
		slowParts: 10, slowPartBytes: 8 << 20, slowRate: 12.5e6,
		fanParts: 10, fanPartBytes: 10 << 20,
	}
	quickSizes = sizes{
		parts: 10, partBytes: 2 << 20, bigBytes: 64 << 20, mirrorPaths: 40, dedupBytes: 8 << 20,
		hookRuns: 40, hookHung: 3, hookNix: 4, stormEvents: 500, smallPaths: 200,
		slowParts: 4, slowPartBytes: 1 << 20, slowRate: 12.5e6,
		fanParts: 4, fanPartBytes: 2 << 20,
	}
)

// Bench holds what the sections share.
type Bench struct {
	ctx    context.Context
	quick  bool
	rounds int
	sz     sizes
	root   *scope
	bins   string       // directory of the nix-ipfs binaries built from this tree
	nix    *testenv.Nix // Nix with a throwaway signing key
	db     *nixstore.DB // the local Nix database, for NAR sizes
	nonce  string
	// paths built for this run, deleted at the end unless -keep-paths.
	built []string
	data  map[string][]string // memoized workloads, by name
	cmds  map[string]bool     // nix-ipfs subcommands the binary has
}

func main() {
	flag.Parse()
	verbose = *verboseF
	sel := map[string]bool{}
	if *only != "" {
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(sectionOrder, s) {
				fmt.Fprintf(os.Stderr, "bench: unknown section %q (have %s)\n", s, strings.Join(sectionOrder, ","))
				os.Exit(2)
			}
			sel[s] = true
		}
	}
	r := *rounds
	roundsSet := false
	flag.Visit(func(f *flag.Flag) { roundsSet = roundsSet || f.Name == "rounds" })
	if *quick && !roundsSet {
		r = 2
	}
	if r < 1 {
		fmt.Fprintln(os.Stderr, "bench: -rounds must be at least 1")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		// Give the running section a moment to notice, then clean up hard:
		// daemons must not outlive the benchmark.
		time.Sleep(3 * time.Second)
		progress("interrupted: stopping daemons and removing temp dirs")
		closeAll()
		os.Exit(130)
	}()

	b := &Bench{ctx: ctx, quick: *quick, rounds: r, sz: fullSizes, data: map[string][]string{}, nonce: testenv.Nonce()}
	if b.quick {
		b.sz = quickSizes
	}
	rep := &Report{Started: time.Now(), Quick: b.quick, Rounds: r, Sizes: b.sz}
	flag.Visit(func(f *flag.Flag) {
		if f.Name != "out" && f.Name != "v" {
			rep.Flags = append(rep.Flags, "-"+f.Name+"="+f.Value.String())
		}
	})
	rep.Machine = machineInfo()

	err := runScope("setup", func(s *scope) {
		b.root = newScope("bench")
		b.setup(b.root)
	})
	if err != nil {
		b.root.close()
		fmt.Fprintf(os.Stderr, "bench: setup: %v\n", err)
		os.Exit(1)
	}
	rep.Machine.Versions = versions(b)

	for _, name := range sectionOrder {
		if len(sel) > 0 && !sel[name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		progress("== %s", name)
		start := time.Now()
		sec := &Section{Key: name}
		err := runScope(name, func(s *scope) { sections[name](b, s, sec) })
		if err != nil {
			sec.Err = err
			progress("%s failed: %v", name, err)
		}
		sec.Took = time.Since(start)
		rep.Sections = append(rep.Sections, sec)
	}
	b.teardown()
	rep.Took = time.Since(rep.Started)

	fmt.Print(rep.Table())
	if *outFile != "" {
		if err := rep.WriteMarkdown(*outFile); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		progress("wrote %s", *outFile)
	}
	for _, s := range rep.Sections {
		if s.Err != nil {
			os.Exit(1)
		}
	}
}

var sections = map[string]func(b *Bench, s *scope, sec *Section){
	"hook":     benchHook,
	"publish":  benchPublish,
	"mirror":   benchMirror,
	"fetch":    benchFetch,
	"dedup":    benchDedup,
	"slowlink": benchSlowLink,
	"fanout":   benchFanout,
	"storm":    benchStorm,
	"small":    benchSmall,
	"avail":    benchAvail,
	"provide":  benchProvide,
	"mfs":      benchMFS,
	"prune":    benchPrune,
	"upgrade":  benchUpgrade,
	"scale":    benchScale,
}

func (b *Bench) setup(s *scope) {
	progress("building the nix-ipfs binaries from this tree")
	b.bins = testenv.Binaries(s)
	s.Cleanup(func() { removeAll(b.bins) })
	b.nix = testenv.NewNix(s)
	db, err := nixstore.OpenDB(nixstore.DefaultDBPath, "/nix/store")
	s.check(err, "open the Nix database")
	b.db = db
	s.Cleanup(func() { db.Close() })
	out, _ := runCmd(b.ctx, nil, b.bins+"/nix-ipfs", "help")
	b.cmds = map[string]bool{}
	inCommands := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Commands:") {
			inCommands = true
			continue
		}
		if f := strings.Fields(line); inCommands && len(f) > 0 && strings.HasPrefix(line, "  ") {
			b.cmds[f[0]] = true
		}
	}
}

func (b *Bench) teardown() {
	if len(b.built) > 0 && !*keepPaths {
		// Their derivations too: each run has a fresh nonce, so they would
		// only pile up.
		del := append([]string(nil), b.built...)
		for _, p := range b.built {
			if info, err := b.db.QueryPathInfo(context.Background(), p); err == nil && info.Deriver != "" {
				if _, err := os.Stat(info.Deriver); err == nil {
					del = append(del, info.Deriver)
				}
			}
		}
		progress("deleting the %d store paths built for this run, and their derivations", len(b.built))
		// One call: --delete deletes a set whose members refer to each
		// other, as long as nothing outside it does.
		if _, err := runCmd(context.Background(), nil, "nix-store", append([]string{"--delete"}, del...)...); err != nil {
			logf("deleting store paths: %v", err)
		}
	}
	b.root.close()
}

// hasCommand reports whether the nix-ipfs binary has a subcommand.
func (b *Bench) hasCommand(name string) bool { return b.cmds[name] }
