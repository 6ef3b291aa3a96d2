// Command demo shows nix-ipfs end to end on one machine with real parts,
// and exits 0 only if every step held. It is `make demo`.
//
//	A: real nix-builds through the real post-build-hook into `nix-ipfs up`
//	   (embedded NATS, publisher, a mirror onto B), with kubo A
//	B: a second kubo, pinning every NAR as it is published
//	A's IPFS copy cleaned (nix-ipfs gc --min-mirrors 1), kubo A stopped,
//	   A's NAR files moved away
//	C: stock Nix, a fresh store, fetching the closure through
//	   `nix-ipfs substituter` over IPFS from B
//
// By default it uses the host's Nix. With -nix-root DIR it uses the Nix of
// the chroot at DIR instead (the Nix 2.26 root scripts/install-deps.sh makes
// in ~/.cache/nix-ipfs/nix-trixie): every Nix command, and `nix-ipfs up`,
// whose publisher reads that Nix's database and store, run inside it (a
// private mount namespace per command, internal/chroot), with the working
// and binary directories at the same paths inside; kubo and the
// substituter stay on the host, reached over loopback.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/chroot"
	"github.com/nix-ipfs/nix-ipfs/internal/kubod"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

var (
	binDir  = flag.String("bin", "bin", "directory holding nix-ipfs and nix-ipfs-hook")
	workDir = flag.String("dir", "", "working directory (default: a new temp dir, removed afterwards)")
	keep    = flag.Bool("keep", false, "keep the working directory")
	timeout = flag.Duration("timeout", 5*time.Minute, "give up after this long")
	nixRoot = flag.String("nix-root", "", "use the Nix of the chroot at this directory (as root), not the host's; `nix-ipfs up` runs there too")
)

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	d := &demo{}
	err := d.run(ctx)
	d.cleanup()
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		for _, p := range d.procs {
			fmt.Fprintf(os.Stderr, "\n--- %s (last lines of %s)\n%s\n", p.name, p.log, tail(p.log, 25))
		}
		os.Exit(1)
	}
	fmt.Println("\nDEMO PASSED: every step held.")
}

type proc struct {
	name, log string
	cmd       *exec.Cmd
}

type demo struct {
	dir     string
	procs   []*proc
	daemons []*kubod.Daemon
	bin     string
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
func info(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func (d *demo) cleanup() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		if p.cmd.Process != nil {
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	for _, p := range d.procs {
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for _, k := range d.daemons {
		k.Stop(10 * time.Second)
	}
	if d.dir != "" && *workDir == "" && !*keep {
		os.RemoveAll(d.dir)
	}
}

// nix returns a command that runs name beside the demo's Nix: directly, or
// inside the chroot given by -nix-root.
func (d *demo) nix(ctx context.Context, name string, args ...string) *exec.Cmd {
	if *nixRoot == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return chroot.CommandContext(ctx, *nixRoot, chroot.Binds(os.TempDir(), d.dir, d.bin), name, args...)
}

// start runs `nix-ipfs args...` in the background; beside reports whether
// it must run beside Nix (it reads the store), inside -nix-root if given.
func (d *demo) start(name string, beside bool, env []string, args ...string) *proc {
	p := &proc{name: name, log: filepath.Join(d.dir, name+".log")}
	f, _ := os.Create(p.log)
	p.cmd = exec.Command(filepath.Join(d.bin, "nix-ipfs"), args...)
	if beside && *nixRoot != "" {
		p.cmd = chroot.Command(*nixRoot, chroot.Binds(os.TempDir(), d.dir, d.bin), filepath.Join(d.bin, "nix-ipfs"), args...)
	}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	d.procs = append(d.procs, p)
	if err := p.cmd.Start(); err != nil {
		fmt.Fprintf(f, "start: %v\n", err)
	}
	return p
}

func (d *demo) kubo(ctx context.Context, name string) (*kubod.Daemon, error) {
	logf, err := os.Create(filepath.Join(d.dir, "kubo-"+name+".log"))
	if err != nil {
		return nil, err
	}
	// A's kubo is the origin, as up's own would be (its filestore on, for
	// --ipfs-nocopy; up adds by copy by default).
	k, err := kubod.Start(ctx, "", filepath.Join(d.dir, "kubo-"+name), kubod.Options{Profile: "test", Log: logf, Filestore: name == "A"})
	if err != nil {
		return nil, fmt.Errorf("kubo %s: %w", name, err)
	}
	d.daemons = append(d.daemons, k)
	info("kubo %s: API %s", name, k.API)
	return k, nil
}

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.bin, err = filepath.Abs(*binDir); err != nil {
		return err
	}
	progs := []string{"nix-build", "nix-store", "nix", "ipfs"}
	if *nixRoot != "" {
		if *nixRoot, err = filepath.Abs(*nixRoot); err != nil {
			return err
		}
		if err := chroot.Check(*nixRoot, "nix-build"); err != nil {
			return fmt.Errorf("-nix-root: %w", err)
		}
		progs = []string{"ipfs"}
	}
	for _, prog := range progs {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("%s not found: run scripts/install-deps.sh (make demo does)", prog)
		}
	}
	if d.dir = *workDir; d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "nix-ipfs-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return err
	}
	fmt.Printf("nix-ipfs demo in %s\n", d.dir)

	step("A signing key for the cache (nix-store --generate-binary-cache-key)")
	sk, pk := filepath.Join(d.dir, "signing-key"), filepath.Join(d.dir, "signing-key.pub")
	if out, err := d.nix(ctx, "nix-store", "--version").Output(); err == nil {
		info("Nix: %s", strings.TrimSpace(string(out)))
	}
	if out, err := d.nix(ctx, "nix-store", "--generate-binary-cache-key", "demo-cache-1", sk, pk).CombinedOutput(); err != nil {
		return fmt.Errorf("generate key: %v %s", err, out)
	}
	os.Chmod(sk, 0o600)
	pubKey, _ := os.ReadFile(pk)

	step("Three kubo nodes on loopback: A (builder), B (mirror), C (client)")
	kA, err := d.kubo(ctx, "A")
	if err != nil {
		return err
	}
	kB, err := d.kubo(ctx, "B")
	if err != nil {
		return err
	}
	kC, err := d.kubo(ctx, "C")
	if err != nil {
		return err
	}

	addrs := freeAddrs(3)
	natsAddr, httpAddr, subAddr := addrs[0], addrs[1], addrs[2]
	step("Host A: nix-ipfs up (embedded NATS, publisher, mirror onto B, cache over HTTP)")
	info("nix-ipfs up --data-dir %s/up --secret-key-file %s --kubo-api %s --mirror-kubo-api %s --mirror-name B --nats-listen %s --listen %s",
		d.dir, sk, kA.API, kB.API, natsAddr, httpAddr)
	up := d.start("up", true, []string{"NIX_IPFS_LOG_FORMAT=console"}, "up",
		"--data-dir", filepath.Join(d.dir, "up"), "--secret-key-file", sk,
		"--kubo-api", kA.API, "--mirror-kubo-api", kB.API, "--mirror-name", "B",
		"--nats-listen", natsAddr, "--listen", httpAddr)
	cacheURL := "http://" + httpAddr
	if err := waitFor(ctx, 60*time.Second, "nix-ipfs up to serve "+cacheURL, func() bool {
		return httpOK(cacheURL + "/nix-cache-info")
	}); err != nil {
		return err
	}
	_ = up

	step("Real nix-builds through the real post-build-hook")
	hookConf := filepath.Join(d.dir, "hook.conf")
	os.WriteFile(hookConf, []byte(fmt.Sprintf("nats-url = nats://%s\nspool-dir = %s/spool\n", natsAddr, d.dir)), 0o644)
	info("nix.conf: post-build-hook = %s/nix-ipfs-hook   (settings in %s)", d.bin, hookConf)
	expr := filepath.Join(d.dir, "closure.nix")
	os.WriteFile(expr, []byte(closureExpr(nonce())), 0o644)
	build := d.nix(ctx, "nix-build", expr, "--no-out-link",
		"--option", "substituters", "", "--option", "post-build-hook", filepath.Join(d.bin, "nix-ipfs-hook"))
	build.Env = append(os.Environ(), "NIX_IPFS_CONFIG="+hookConf)
	var bout, berr bytes.Buffer
	build.Stdout, build.Stderr = &bout, &berr
	if err := build.Run(); err != nil {
		return fmt.Errorf("nix-build: %v\n%s", err, berr.String())
	}
	top := strings.TrimSpace(bout.String())
	out, err := d.nix(ctx, "nix-store", "--query", "--requisites", top).Output()
	if err != nil {
		return err
	}
	closure := strings.Fields(string(out))
	info("built %s: a closure of %d paths", top, len(closure))

	step("Publisher on A: every path in the signed cache, its NAR in IPFS")
	nis := map[string]*narinfo.NarInfo{}
	if err := waitFor(ctx, 2*time.Minute, "the closure to be published", func() bool {
		for _, p := range closure {
			if nis[p] != nil {
				continue
			}
			b, ok := httpGet(cacheURL + "/" + storepath.HashPart(p) + ".narinfo")
			if !ok {
				return false
			}
			ni, err := narinfo.ParseBytes(b)
			if err != nil || ni.IPFSHash == "" {
				return false
			}
			nis[p] = ni
		}
		return true
	}); err != nil {
		return err
	}
	for _, p := range closure {
		info("%s  IPFSHash %s", filepath.Base(p), nis[p].IPFSHash)
	}

	step("Mirror B: every CID pinned on B as it was published")
	pinned := map[string]bool{}
	if err := waitFor(ctx, 2*time.Minute, "every CID pinned on B", func() bool {
		for _, p := range closure {
			c, _ := cid.Decode(nis[p].IPFSHash)
			if ok, _ := kB.Client.IsPinned(ctx, c); ok {
				pinned[p] = true
			}
		}
		return len(pinned) == len(closure)
	}); err != nil {
		return err
	}
	info("%d of %d pinned on B", len(pinned), len(closure))

	step("Clean A: nix-ipfs gc --min-mirrors 1 (unpin what B confirmed), stop kubo A, move A's NARs away")
	gc := exec.CommandContext(ctx, filepath.Join(d.bin, "nix-ipfs"), "gc", "--min-mirrors", "1",
		"--kubo-api", kA.API, "--nats-url", "nats://"+natsAddr, "--log-format", "console")
	if out, err := gc.CombinedOutput(); err != nil {
		return fmt.Errorf("nix-ipfs gc: %v\n%s", err, out)
	}
	for _, p := range closure {
		c, _ := cid.Decode(nis[p].IPFSHash)
		if ok, _ := kA.Client.IsPinned(ctx, c); ok {
			return fmt.Errorf("%s still pinned on A after gc", p)
		}
	}
	info("A pins none of the closure's CIDs any more")
	kA.Stop(20 * time.Second)
	narDir := cachedir.Cache{Dir: filepath.Join(d.dir, "up", "cache")}.NarDir()
	if err := os.Rename(narDir, narDir+".away"); err != nil {
		return err
	}
	defer os.Rename(narDir+".away", narDir)
	info("kubo A stopped; %s moved away: a NAR can now only come from IPFS", narDir)

	step("Client C: stock Nix, a fresh store, through nix-ipfs substituter over IPFS")
	bNode, err := kB.Client.Self(ctx)
	if err != nil {
		return err
	}
	if err := kC.Client.Connect(ctx, bNode); err != nil {
		return fmt.Errorf("connect C to B: %w", err)
	}
	// The cache's key: the CIDs the publisher signed (IPFSSig) stream on
	// their first fetch.
	sub := d.start("substituter", false, []string{"NIX_IPFS_LOG_FORMAT=json"}, "substituter",
		"--upstream", cacheURL, "--listen", subAddr, "--kubo-api", kC.API,
		"--trusted-public-keys", strings.TrimSpace(string(pubKey)))
	subURL := "http://" + subAddr
	if err := waitFor(ctx, 30*time.Second, "the substituter", func() bool { return httpOK(subURL + "/nix-cache-info") }); err != nil {
		return err
	}
	storeC := filepath.Join(d.dir, "store-c")
	info("nix copy --from %s --to %s --option trusted-public-keys '%s' %s", subURL, storeC, strings.TrimSpace(string(pubKey)), filepath.Base(top))
	cp := d.nix(ctx, "nix", "copy", "--from", subURL, "--to", storeC,
		"--option", "experimental-features", "nix-command", "--option", "substituters", "",
		"--option", "trusted-public-keys", strings.TrimSpace(string(pubKey)), "--option", "require-sigs", "true", top)
	if out, err := cp.CombinedOutput(); err != nil {
		return fmt.Errorf("nix copy from the substituter: %v\n%s", err, out)
	}
	for _, p := range closure {
		want, err := d.nix(ctx, "nix-store", "--dump", p).Output()
		if err != nil {
			return fmt.Errorf("nix-store --dump %s: %w", p, err)
		}
		if out, err := d.nix(ctx, "nix-store", "--store", storeC, "--check-validity", p).CombinedOutput(); err != nil {
			return fmt.Errorf("%s is not valid in store C: %v %s", p, err, out)
		}
		// The chroot's own copy (nix-store --store X --dump P reads the host's P).
		got, err := d.nix(ctx, "nix-store", "--dump", filepath.Join(storeC, p)).Output()
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("%s in store C differs from A (%v)", p, err)
		}
	}
	info("every path valid in store C, byte-identical to A")
	// Where each NAR came from, as the substituter logged it.
	via := servedFrom(sub.log)
	for _, p := range closure {
		if via[p] != "ipfs" {
			return fmt.Errorf("%s: the substituter served its NAR from %q, not IPFS", p, via[p])
		}
	}

	step("Summary")
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE PATH\tNAR SIZE\tCID\tPINNED ON B\tFETCHED VIA")
	for _, p := range closure {
		yes := "no"
		if pinned[p] {
			yes = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", filepath.Base(p), nis[p].NarSize, nis[p].IPFSHash, yes, via[p])
	}
	tw.Flush()
	return nil
}

// servedFrom reads the substituter's JSON log: store path -> NAR source.
func servedFrom(logFile string) map[string]string {
	out := map[string]string{}
	b, _ := os.ReadFile(logFile)
	for _, line := range strings.Split(string(b), "\n") {
		var e struct {
			Msg       string `json:"msg"`
			StorePath string `json:"store_path"`
			Source    string `json:"source"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "NAR served" {
			out[e.StorePath] = e.Source
		}
	}
	return out
}

func closureExpr(n string) string {
	drv := func(name, script, extra string) string {
		return fmt.Sprintf(`derivation { name = "%s-%s"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" ''%s'' ]; %s }`, name, n, script, extra)
	}
	return fmt.Sprintf(`let
  lib = %s;
  docs = %s;
  app = %s;
in %s`,
		drv("libgreet", `mkdir -p $out/lib $out/share; echo 'greet() { echo "hello from nix-ipfs"; }' > $out/lib/greet.sh; head -c 2000000 /dev/urandom > $out/share/blob`, ""),
		drv("greet-docs", `mkdir -p $out/share/doc; echo "Greets people." > $out/share/doc/README`, ""),
		drv("greet", `mkdir -p $out/bin; printf '#!/bin/sh\n. ${lib}/lib/greet.sh\ngreet\n' > $out/bin/greet; chmod +x $out/bin/greet`, "inherit lib;"),
		drv("greet-bundle", `mkdir -p $out; ln -s ${app}/bin $out/bin; ln -s ${docs}/share $out/share`, "inherit app docs;"))
}

func nonce() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeAddrs returns n distinct free loopback addresses. The listeners
// stay open until all are picked: a port closed at once can be handed out
// again by the next pick (a demo run once got NATS's port for the
// substituter and waited for it in vain).
func freeAddrs(n int) []string {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out
}

func httpGet(url string) ([]byte, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return b, resp.StatusCode == 200
}

func httpOK(url string) bool { _, ok := httpGet(url); return ok }

func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
