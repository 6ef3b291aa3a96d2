package cachedir

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const grace = time.Hour

// aged publishes a path and makes its files older than grace: what prune
// would retire.
func aged(t *testing.T, c Cache, hashPart string, nar []byte) string {
	t.Helper()
	ni := publish(t, c, hashPart, nar)
	old := time.Now().Add(-2 * grace)
	for _, f := range []string{c.NarInfoPath(hashPart), c.NarPath(ni.URL)} {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.MakeJournal(); err != nil {
		t.Fatal(err)
	}
	return ni.URL
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestGraceHandshake walks every interleaving of the publisher's half
// (writing, Claim) with prune's (Withdraw, WithdrawNAR) that matters:
// whatever the order, a path the publisher wrote or Claimed within grace
// stays whole, or the publisher learns it is gone and publishes it again.
func TestGraceHandshake(t *testing.T) {
	t.Cleanup(func() { testHook = nil })

	t.Run("written within grace", func(t *testing.T) {
		c := open(t)
		publish(t, c, hp, []byte("fresh"))
		if w, err := c.Withdraw(hp, grace); w != Spared || err != nil {
			t.Fatalf("Withdraw = %v, %v; want Spared", w, err)
		}
		if !exists(c.NarInfoPath(hp)) {
			t.Error("a fresh narinfo left the cache")
		}
	})

	t.Run("claimed before prune looks", func(t *testing.T) {
		c := open(t)
		aged(t, c, hp, []byte("reused"))
		if !c.Claim(hp) {
			t.Fatal("Claim of a present narinfo says it is gone")
		}
		if w, err := c.Withdraw(hp, grace); w != Spared || err != nil {
			t.Fatalf("Withdraw = %v, %v; want Spared", w, err)
		}
	})

	t.Run("claimed between prune's check and its move", func(t *testing.T) {
		c := open(t)
		aged(t, c, hp, []byte("reused"))
		claimed := false
		testHook = func(stage string) {
			if stage == "narinfo" {
				claimed = c.Claim(hp)
			}
		}
		defer func() { testHook = nil }()
		w, err := c.Withdraw(hp, grace)
		if !claimed {
			t.Fatal("the publisher's Claim found no narinfo")
		}
		if w != Reclaimed || err != nil {
			t.Fatalf("Withdraw = %v, %v; want Reclaimed", w, err)
		}
		if !exists(c.NarInfoPath(hp)) || exists(c.journalPath(NarInfoName(hp))) {
			t.Error("a claimed narinfo was not put back")
		}
	})

	t.Run("claimed after the move", func(t *testing.T) {
		c := open(t)
		url := aged(t, c, hp, []byte("gone"))
		if w, err := c.Withdraw(hp, grace); w != Withdrawn || err != nil {
			t.Fatalf("Withdraw = %v, %v; want Withdrawn", w, err)
		}
		if c.Claim(hp) {
			t.Fatal("Claim of a withdrawn narinfo says it is present: the publisher would rely on a path prune removes")
		}
		if size, removed, err := c.WithdrawNAR(url, grace); !removed || size != 4 || err != nil {
			t.Fatalf("WithdrawNAR = %d, %v, %v", size, removed, err)
		}
		// The publisher, told the path is gone, publishes it again.
		publish(t, c, hp, []byte("gone"))
		if !exists(c.NarInfoPath(hp)) || !exists(c.NarPath(url)) {
			t.Error("the path published again is not whole")
		}
	})

	t.Run("claim's touch lands after prune moved and checked", func(t *testing.T) {
		// utimensat resolves the name, then sets the times: a rename in
		// between moves the file before its new time lands, and prune's
		// second look may still see it old. Played here by setting the
		// times by hand around a whole Withdraw.
		c := open(t)
		aged(t, c, hp, []byte("raced"))
		var w Withdrawal
		testHook = func(stage string) {
			if stage != "claimed" {
				return
			}
			old := time.Now().Add(-2 * grace)
			os.Chtimes(c.NarInfoPath(hp), old, old) // the touch has not landed yet
			w, _ = c.Withdraw(hp, grace)
			now := time.Now()
			os.Chtimes(c.journalPath(NarInfoName(hp)), now, now) // now it lands, on the moved file
		}
		defer func() { testHook = nil }()
		if c.Claim(hp) {
			t.Fatalf("Claim says present though prune withdrew the narinfo (%v): the publisher would rely on a path prune removes", w)
		}
		if w != Withdrawn {
			t.Fatalf("Withdraw = %v", w)
		}
	})

	t.Run("same NAR published again while prune removes it", func(t *testing.T) {
		c := open(t)
		url := aged(t, c, hp, []byte("shared"))
		if w, _ := c.Withdraw(hp, grace); w != Withdrawn {
			t.Fatalf("Withdraw = %v", w)
		}
		other := "1c6kzph7l0dcbfmjap64f0czdafn3b7x"
		testHook = func(stage string) {
			if stage == "nar" {
				publish(t, c, other, []byte("shared")) // the very same bytes
			}
		}
		defer func() { testHook = nil }()
		if _, removed, err := c.WithdrawNAR(url, grace); removed || err != nil {
			t.Fatalf("WithdrawNAR = %v, %v; want the fresh NAR kept", removed, err)
		}
		if !exists(c.NarPath(url)) || !exists(c.NarInfoPath(other)) {
			t.Error("prune removed the NAR a concurrent publish wrote")
		}
	})

	t.Run("grace 0 protects nothing", func(t *testing.T) {
		c := open(t)
		url := NarURL("sha256:" + nixHash([]byte("x")))
		publish(t, c, hp, []byte("x"))
		c.MakeJournal()
		if w, err := c.Withdraw(hp, 0); w != Withdrawn || err != nil {
			t.Fatalf("Withdraw = %v, %v", w, err)
		}
		if _, removed, err := c.WithdrawNAR(url, 0); !removed || err != nil {
			t.Fatalf("WithdrawNAR = %v, %v", removed, err)
		}
	})

	t.Run("restore and put back from the journal", func(t *testing.T) {
		c := open(t)
		url := aged(t, c, hp, []byte("back"))
		c.Withdraw(hp, grace)
		name := url[len("nar/"):]
		os.Rename(c.NarPath(url), c.journalPath(name)) // a prune killed mid-WithdrawNAR
		if err := c.PutBackNAR(name); err != nil || !exists(c.NarPath(url)) {
			t.Fatalf("PutBackNAR: %v", err)
		}
		if err := c.Restore(hp); err != nil || !exists(c.NarInfoPath(hp)) {
			t.Fatalf("Restore: %v", err)
		}
		infos, nars, _ := c.Journal()
		if len(infos)+len(nars) != 0 {
			t.Errorf("journal not empty: %v %v", infos, nars)
		}
	})
}

// TestGraceConcurrent: prune and a publisher run at once over many old
// paths, the publisher Claiming each (or, told it is gone, publishing it
// again). Prune cannot remove what the publisher relies on or writes:
// afterwards every path is whole.
func TestGraceConcurrent(t *testing.T) {
	c := open(t)
	const n = 100
	urls := make([]string, n)
	for i := range n {
		urls[i] = aged(t, c, hashPartN(i), []byte{byte(i), 'n', 'a', 'r'})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	republished := 0
	half := make(chan struct{})
	go func() { // the publisher, once prune is half-way, from the other end
		defer wg.Done()
		<-half
		for i := n - 1; i >= 0; i-- {
			if !c.Claim(hashPartN(i)) {
				publish(t, c, hashPartN(i), []byte{byte(i), 'n', 'a', 'r'})
				republished++
			}
		}
	}()
	go func() { // prune
		defer wg.Done()
		for i := range n {
			if i == n/2 {
				close(half)
			}
			w, err := c.Withdraw(hashPartN(i), grace)
			if err != nil {
				t.Error(err)
				continue
			}
			if w == Withdrawn {
				if _, _, err := c.WithdrawNAR(urls[i], grace); err != nil {
					t.Error(err)
				}
				c.DropJournalNarInfo(hashPartN(i))
			}
		}
	}()
	wg.Wait()
	for i := range n {
		ni, err := c.ReadNarInfo(hashPartN(i))
		if err != nil || ni == nil {
			t.Errorf("path %d: narinfo gone (%v)", i, err)
			continue
		}
		if !exists(c.NarPath(ni.URL)) {
			t.Errorf("path %d: NAR gone under its narinfo", i)
		}
	}
	t.Logf("%d of %d paths published again after prune took them", republished, n)
}

// TestRefusesOutsideNar: a narinfo's URL never leads prune (or a reader)
// to a file outside nar/.
func TestRefusesOutsideNar(t *testing.T) {
	c := open(t)
	secret := c.NarInfoPath(hp)
	os.WriteFile(secret, []byte("not to be removed"), 0o644)
	old := time.Now().Add(-2 * grace)
	os.Chtimes(secret, old, old)
	for _, url := range []string{"nar/../" + hp + ".narinfo", "../x.nar", hp + ".narinfo", ".nix-ipfs/announced/" + hp, "nar/", "nar/a/../../" + hp + ".narinfo"} {
		if c.NarPath(url) != "" {
			t.Errorf("NarPath(%q) = %q", url, c.NarPath(url))
		}
		for _, g := range []time.Duration{0, grace} {
			if _, removed, err := c.WithdrawNAR(url, g); removed || err == nil {
				t.Errorf("WithdrawNAR(%q, %v) = %v, %v", url, g, removed, err)
			}
		}
		if _, removed := c.RemoveOldNAR(url, 0); removed {
			t.Errorf("RemoveOldNAR(%q) removed something", url)
		}
	}
	if !exists(secret) {
		t.Error("a hostile URL removed a file outside nar/")
	}
}

// TestRefusesHostileHashParts: a hash part or file hash that is not Nix's
// (from a file name, an event, a request) names no file, so no write,
// move or removal leaves the directories it belongs in.
func TestRefusesHostileHashParts(t *testing.T) {
	c := open(t)
	c.MakeJournal()
	outside := filepath.Join(c.Dir, "precious")
	os.WriteFile(outside+".narinfo", []byte("x"), 0o644)
	for _, h := range []string{"", "../precious", "../../etc/passwd", hp + "/../precious", "0C6KZPH7L0DCBFMJAP64F0CZDAFN3B7X", hp + "x", "precious"} {
		if p := c.NarInfoPath(h); p != "" {
			t.Errorf("NarInfoPath(%q) = %q", h, p)
		}
		if err := c.WriteNarInfo(h, []byte("x"), nil); err == nil {
			t.Errorf("WriteNarInfo(%q) wrote", h)
		}
		if err := c.MarkAnnounced(h, "bafy"); err == nil {
			t.Errorf("MarkAnnounced(%q) wrote", h)
		}
		if c.Claim(h) {
			t.Errorf("Claim(%q) = true", h)
		}
		if w, _ := c.Withdraw(h, 0); w != Gone {
			t.Errorf("Withdraw(%q) = %v", h, w)
		}
		if err := c.Restore(h); err == nil {
			t.Errorf("Restore(%q) did not refuse", h)
		}
		if err := c.WriteMirrorIndex(h, hp); err == nil {
			t.Errorf("WriteMirrorIndex(%q) wrote", h)
		}
		if _, ok := c.MirrorIndex(h); ok {
			t.Errorf("MirrorIndex(%q) found something", h)
		}
	}
	for _, name := range []string{"", ".", "..", "../precious.narinfo", "a/b.nar", ".tmp-incoming.nar-1"} {
		if err := c.PutBackNAR(name); err == nil {
			t.Errorf("PutBackNAR(%q) did not refuse", name)
		}
	}
	if !exists(outside + ".narinfo") {
		t.Error("a hostile name removed a file")
	}
	if ents, _ := os.ReadDir(c.Dir); len(ents) != 4 { // nix-cache-info, nar, .nix-ipfs, precious.narinfo
		t.Errorf("cache holds %d entries after hostile writes", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Dir(c.Dir)); len(ents) != 1 {
		t.Errorf("hostile writes reached the cache's parent: %d entries", len(ents))
	}
}
