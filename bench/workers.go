package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// hostA is a publishing host for one round: a fresh NATS, a fresh kubo
// repository and an empty cache directory, and the real publisher binary.
type hostA struct {
	bins  string // where the nix-ipfs binary comes from
	nats  *testenv.NATS
	js    jetstream.JetStream
	kubo  *testenv.Kubo
	cache string
	pub   *testenv.Proc
}

func (b *Bench) newHostA(s *scope, kuboOpts ...testenv.KuboOption) *hostA {
	a := &hostA{bins: b.bins, nats: testenv.StartNATS(s)}
	_, a.js = a.nats.Connect(s)
	_, err := events.EnsureStream(b.ctx, a.js, events.StreamOptions{})
	s.check(err, "create the stream")
	a.kubo = testenv.StartKubo(s, kuboOpts...)
	// Under the kubo repository's parent: the filestore (--ipfs-nocopy)
	// only takes files there.
	a.cache = filepath.Join(a.kubo.FilestoreRoot(), "cache")
	return a
}

// startPublisher runs `nix-ipfs publisher` and returns once its durable
// consumer exists, so that timing starts with a publisher ready to work.
func (b *Bench) startPublisher(s *scope, a *hostA, args ...string) {
	env := []string{
		"NIX_IPFS_NATS_URL=" + a.nats.URL,
		"NIX_IPFS_KUBO_API=" + a.kubo.API,
		"NIX_IPFS_CACHE_DIR=" + a.cache,
		"NIX_IPFS_SECRET_KEY_FILE=" + b.nix.SecretKey,
		"NIX_IPFS_LOG_FORMAT=json",
		"NIX_IPFS_LOG_LEVEL=warn",
	}
	a.pub = testenv.StartProc(s, filepath.Join(a.bins, "nix-ipfs"), append([]string{"publisher"}, args...), env...)
	b.waitConsumer(s, a.js, func(c *jetstream.ConsumerInfo) bool { return c.Name == "publisher" }, "the publisher's consumer", a.pub)
}

// waitConsumer waits until the stream has a consumer that match accepts.
func (b *Bench) waitConsumer(s *scope, js jetstream.JetStream, match func(*jetstream.ConsumerInfo) bool, what string, p *testenv.Proc) {
	st, err := js.Stream(b.ctx, events.DefaultStream)
	s.check(err, "stream")
	deadline := time.Now().Add(60 * time.Second)
	for {
		lister := st.ListConsumers(b.ctx)
		for c := range lister.Info() {
			if match(c) {
				return
			}
		}
		if p != nil && p.Wait(0) {
			s.Fatalf("%s exited before it was ready:\n%s", filepath.Base(p.Cmd.Path), p.Tail(30))
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			tailLog := ""
			if p != nil {
				tailLog = p.Tail(30)
			}
			s.Fatalf("no %s after 60 s\n%s", what, tailLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishBuilt publishes a built event for outs, as the hook would.
func (b *Bench) publishBuilt(s *scope, js jetstream.JetStream, outs []string) {
	ev := &events.Built{Host: "bench", StoreDir: "/nix/store", OutPaths: append([]string(nil), outs...)}
	events.Seal(ev)
	_, err := events.Publish(b.ctx, js, events.SubjectBuilt, ev)
	s.check(err, "publish built event")
}

// waitNarinfos waits until every path has a narinfo with an IPFSHash in
// cache, polling every interval, and returns the IPFSHash of each.
func (b *Bench) waitNarinfos(s *scope, cache string, paths []string, timeout, interval time.Duration, p *testenv.Proc) map[string]string {
	got := map[string]string{}
	deadline := time.Now().Add(timeout)
	for {
		// One listing a round, and only the narinfos in it read: polling
		// thousands of missing files every few milliseconds took the CPU
		// the publisher under test needs (a third of a profiled run).
		names := map[string]bool{}
		if ents, err := os.ReadDir(cache); err == nil {
			for _, e := range ents {
				names[e.Name()] = true
			}
		}
		for _, sp := range paths {
			name := storepath.HashPart(sp) + ".narinfo"
			if got[sp] != "" || !names[name] {
				continue
			}
			if c := ipfsHashOf(filepath.Join(cache, name)); c != "" {
				got[sp] = c
			}
		}
		if len(got) == len(paths) {
			return got
		}
		if p != nil && p.Wait(0) {
			s.Fatalf("%s exited:\n%s", filepath.Base(p.Cmd.Path), p.Tail(30))
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			msg := fmt.Sprintf("%d of %d paths published after %v", len(got), len(paths), timeout)
			if p != nil {
				msg += "\n" + p.Tail(30)
			}
			s.Fatalf("%s", msg)
		}
		time.Sleep(interval)
	}
}

// ipfsHashOf returns the IPFSHash of the narinfo file, "" if it is missing
// or has none yet.
func ipfsHashOf(file string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	ni, err := narinfo.ParseBytes(data)
	if err != nil {
		return ""
	}
	return ni.IPFSHash
}

// ipfsEnv is the environment for the ipfs CLI against kubo k.
func ipfsEnv(k *testenv.Kubo) []string {
	return []string{"IPFS_PATH=" + k.Repo, "IPFS_TELEMETRY=off"}
}

// nixCopyTo copies paths (and their closures) into a file:// cache the way
// the original workflow does: uncompressed, signed with the bench's key.
func (b *Bench) nixCopyTo(cache string, paths ...string) error {
	_, err := b.nix.Try("nix", append([]string{"copy", "--to", "file://" + cache + "?compression=none&secret-key=" + b.nix.SecretKey}, paths...)...)
	return err
}

// narFile returns the NAR file of path in a file:// cache.
func narFile(cache, path string) (string, error) {
	data, err := os.ReadFile(filepath.Join(cache, storepath.HashPart(path)+".narinfo"))
	if err != nil {
		return "", err
	}
	ni, err := narinfo.ParseBytes(data)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(ni.URL, "nar/") {
		return "", errors.New("narinfo of " + path + ": unexpected URL " + ni.URL)
	}
	return filepath.Join(cache, ni.URL), nil
}

// mirrorOnB publishes tops through a publisher on a new host A, pins every
// path of paths (their closure) on a new kubo B connected to A, as a mirror
// would, then stops A's kubo, so NARs can only come from B. A's cache
// directory stays for plain HTTP. It returns A, B and each path's CID.
func (b *Bench) mirrorOnB(s *scope, tops, paths []string) (*hostA, *testenv.Kubo, map[string]string) {
	ctx := b.ctx
	a := b.newHostA(s)
	b.startPublisher(s, a)
	b.publishBuilt(s, a.js, tops)
	cids := b.waitNarinfos(s, a.cache, paths, pubTimeout, 20*time.Millisecond, a.pub)
	kb := testenv.StartKubo(s)
	self, err := a.kubo.Client.Self(ctx)
	s.check(err, "kubo A identity")
	s.check(kb.Client.Connect(ctx, self), "connect B to A")
	for _, p := range paths {
		c, err := cid.Decode(cids[p])
		s.check(err, "CID")
		s.check(kb.Client.Pin(ctx, c, filepath.Base(p)), "pin on B")
	}
	a.kubo.Stop(s)
	return a, kb, cids
}
