package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
	"github.com/nix-ipfs/nix-ipfs/publisher"
)

// TestTwoPublishersShareTheWork: two publisher binaries on the same durable
// consumer and cache share the built events, and no path is published by
// both (the JetStream KV lease and the cache's announced record).
func TestTwoPublishersShareTheWork(t *testing.T) {
	a := newHostA(t)
	nonce := testenv.Nonce()
	// A shared dependency in every build: both publishers want it at once.
	shared := testenv.Drv("shared-"+nonce, "echo shared > $out", "")
	var outs []string
	const builds = 12
	expr := "let shared = " + shared + "; in ["
	for i := 0; i < builds; i++ {
		expr += fmt.Sprintf(" (%s)", testenv.Drv(fmt.Sprintf("user-%d-%s", i, nonce), "echo ${shared} > $out", "inherit shared;"))
	}
	a.nix.Hook = "" // the events are published below, in one burst
	outs = a.nix.Build(t, expr+" ]")

	// Both publishers up and waiting for work, one event at a time each;
	// then a burst of built events that the server deals out to both.
	a.startPublisher(t, "--events=1")
	second := testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), []string{"publisher", "--events=1"}, a.publisherEnv()...)
	_, js := a.nats.Connect(t)
	ctx := context.Background()
	testenv.Eventually(t, time.Minute, "both publishers waiting for events", func() bool {
		c, err := js.Consumer(ctx, events.DefaultStream, "publisher")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting >= 2
	})
	for _, o := range outs {
		ev := &events.Built{Host: "test", StoreDir: "/nix/store", OutPaths: []string{o}}
		events.Seal(ev)
		if _, err := events.Publish(ctx, js, events.SubjectBuilt, ev); err != nil {
			t.Fatal(err)
		}
	}
	var closure []string
	seen := map[string]bool{}
	for _, o := range outs {
		for _, p := range closureOf(t, a.nix, o) {
			if !seen[p] {
				seen[p] = true
				closure = append(closure, p)
			}
		}
	}
	a.waitPublished(t, closure, 2*time.Minute)

	published := map[string]int{}
	worked := 0
	for _, log := range []string{a.pub.Log, second.Log} {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), "publishing closure") {
			worked++
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "\tpublished\t") {
				for _, p := range closure {
					if strings.Contains(line, p+"\"") {
						published[p]++
					}
				}
			}
		}
	}
	if worked != 2 {
		t.Errorf("only %d of 2 publishers handled events", worked)
	}
	for _, p := range closure {
		if published[p] != 1 {
			t.Errorf("%s published %d times across the two publishers, want once", p, published[p])
		}
	}
	if n := len(streamEvents(t, js, events.SubjectPublished)); n != len(closure) {
		t.Errorf("%d published events for %d paths", n, len(closure))
	}
}

// TestPublisherNocopy: with --ipfs-nocopy against a kubo with the filestore
// enabled, the cache's NAR is the only copy on A: kubo lists it in its
// filestore, and the CID is the same as a copying add's.
func TestPublisherNocopy(t *testing.T) {
	a := newHostA(t, testenv.KuboFilestore())
	a.cache = filepath.Join(a.kubo.FilestoreRoot(), "cache")
	a.startPublisher(t, "--ipfs-nocopy")
	top := a.nix.Build(t, testenv.Drv("nocopy-"+testenv.Nonce(), "head -c 3000000 /dev/urandom > $out", ""))[0]
	ni := a.waitPublished(t, []string{top}, time.Minute)[top]
	listed := a.kubo.IPFS(t, "filestore", "ls")
	if !strings.Contains(listed, filepath.Base(ni.URL)) {
		t.Errorf("filestore does not reference %s:\n%s", ni.URL, listed)
	}
	copied := strings.TrimSpace(a.kubo.IPFS(t, "add", "-Q", "--only-hash", "--cid-version=1", "--raw-leaves", "--chunker="+publisher.NocopyChunker, filepath.Join(a.cache, ni.URL)))
	if copied != ni.IPFSHash {
		t.Errorf("nocopy CID %s differs from a copying add's %s", ni.IPFSHash, copied)
	}
	// The 3 MB NAR went to kubo while it was written (several chunks); a
	// NAR of one chunk is added from its file once in place. Both read
	// back from the files kubo references.
	small := a.nix.Build(t, testenv.Drv("nocopy-small-"+testenv.Nonce(), "echo small > $out", ""))[0]
	sni := a.waitPublished(t, []string{small}, time.Minute)[small]
	for _, n := range []*narinfo.NarInfo{ni, sni} {
		want, err := os.ReadFile(filepath.Join(a.cache, n.URL))
		if err != nil {
			t.Fatal(err)
		}
		if got := a.kubo.IPFS(t, "cat", n.IPFSHash); got != string(want) {
			t.Errorf("ipfs cat %s (%s): %d bytes, the NAR file has %d", n.IPFSHash, n.StorePath, len(got), len(want))
		}
	}
	if v := a.kubo.IPFS(t, "filestore", "verify"); strings.Contains(v, "no-file") || strings.Contains(v, "changed") || strings.Contains(v, "error") {
		t.Errorf("ipfs filestore verify:\n%s", v)
	}
}
