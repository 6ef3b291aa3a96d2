package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/kubod"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// accountUID is the user B's kubo runs as in the fan-out section, so that
// iptables counts every byte it sends, whatever the protocol. Numeric, no
// passwd entry needed; chosen to be nobody else's.
const accountUID = 64123

// uidCounter counts the bytes the processes of one user send, with an
// iptables owner match (docs/BENCHMARKS.md: bitswap's own statistics see
// only bitswap).
type uidCounter struct {
	chain string
	uid   int
}

// newUIDCounter adds the chain and the OUTPUT rule, removed at cleanup;
// nil if iptables is not usable here (the section then says so).
func newUIDCounter(s *scope, uid int) *uidCounter {
	c := &uidCounter{chain: fmt.Sprintf("NIXIPFS_ACCT_%d", os.Getpid()), uid: uid}
	run := func(args ...string) error {
		out, err := exec.Command("iptables", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("-N", c.chain); err != nil {
		progress("fanout: not counting by uid: %v", err)
		return nil
	}
	rule := []string{"OUTPUT", "-m", "owner", "--uid-owner", strconv.Itoa(uid), "-j", c.chain}
	if err := run(append([]string{"-I"}, rule...)...); err != nil {
		run("-X", c.chain)
		progress("fanout: not counting by uid: %v", err)
		return nil
	}
	run("-A", c.chain, "-j", "RETURN")
	s.Cleanup(func() {
		run(append([]string{"-D"}, rule...)...)
		run("-F", c.chain)
		run("-X", c.chain)
	})
	return c
}

// bytes is what the user's processes sent so far (IP packets, headers
// included).
func (c *uidCounter) bytes(s *scope) int64 {
	out, err := exec.Command("iptables", "-L", c.chain, "-v", "-x", "-n").Output()
	s.check(err, "iptables -L")
	var n int64
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "RETURN" {
			n, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return n
}

// mirrorRole applies the mirror role's bitswap settings (internal/kubod:
// what `up`, compose and deploy/kubo/mirror.sh give B) to k. Only those:
// the others are about the DHT and connection limits, which the bench's
// loopback hosts without routing do not use.
func mirrorRole(s *scope, k *testenv.Kubo) {
	for _, st := range kubod.Settings(kubod.Mirror) {
		if strings.HasPrefix(st.Key, "Internal.") {
			k.IPFS(s, "config", "--json", st.Key, st.JSON)
		}
	}
}

// clientRole is the client role's settings (internal/kubod: what
// deploy/kubo/client.sh gives the kubo beside a substituter), as options
// of a test kubo: no providing of every block fetched, the DHT as a
// client only (which, on loopback with no bootstrap peers, finds nothing).
func clientRole() []testenv.KuboOption {
	var opts []testenv.KuboOption
	for _, st := range kubod.Settings(kubod.Client) {
		opts = append(opts, testenv.KuboConfig(st.Key, st.JSON))
	}
	return opts
}

// runAs restarts k's daemon as uid, with its own HOME (kubo reads
// ~/.config/ipfs), so that a uidCounter sees what it sends. The address
// and identity stay; k's API keeps working for the CLI.
func runAs(s *scope, k *testenv.Kubo, uid int) *testenv.Proc {
	k.Stop(s)
	home := filepath.Join(filepath.Dir(k.Repo), "home")
	s.check(os.MkdirAll(home, 0o755), "home")
	for _, d := range []string{k.Repo, home} {
		s.check(filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, uid)
		}), "chown")
	}
	// The user must reach the repository through the test's directories.
	for d := filepath.Dir(k.Repo); d != "/" && d != "."; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil {
			os.Chmod(d, st.Mode().Perm()|0o011)
		}
	}
	os.Remove(filepath.Join(k.Repo, "api"))
	src, err := exec.LookPath("ipfs")
	s.check(err, "ipfs")
	// A copy the user can run: kubo usually lives under a home directory
	// only its owner may enter.
	data, err := os.ReadFile(src)
	s.check(err, "ipfs binary")
	bin := filepath.Join(filepath.Dir(k.Repo), "ipfs")
	s.check(os.WriteFile(bin, data, 0o755), "ipfs binary copy")
	p := testenv.StartProcAs(s, &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}, bin, []string{"daemon"},
		"IPFS_PATH="+k.Repo, "HOME="+home)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(k.Repo, "api")); err == nil {
			if out, err := exec.Command(bin, "--api", apiMultiaddr(k.API), "id", "-f", "<id>").CombinedOutput(); err == nil && len(out) > 0 {
				return p
			}
		}
		if time.Now().After(deadline) {
			s.Fatalf("kubo as uid %d did not start: %s", uid, tail(readFile(p.Log), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apiMultiaddr turns http://127.0.0.1:PORT into /ip4/127.0.0.1/tcp/PORT.
func apiMultiaddr(u string) string {
	hp := strings.TrimPrefix(u, "http://")
	h, p, _ := strings.Cut(hp, ":")
	return "/ip4/" + h + "/tcp/" + p
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
