package publisher

import (
	"context"
	"os"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/mirrorcache"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// TestEventRebuildsNarinfo: the "published" event carries what a mirror
// needs to rebuild the narinfo this publisher wrote, byte for byte: the
// deriver, every signature (the store's own and the cache's), the CA field
// and, since published.v3, the IPFSSig line: a mirror's narinfo is the
// publisher's byte for byte.
// The event goes through the wire format first, as a mirror receives it.
// (mirrorcache's TestNarInfoMatchesNixCopy holds the same against what
// `nix copy` writes.)
func TestEventRebuildsNarinfo(t *testing.T) {
	pub, st, _, p := setup(t)
	other, _, _ := signature.GenerateKeypair("builder-1", nil)
	info := st.infos[p]
	fp := "1;" + p + ";" + info.NarHash + ";" + "0" // any text: only the line's presence matters
	sig, err := other.Sign(nil, fp)
	if err != nil {
		t.Fatal(err)
	}
	info.Sigs = []string{sig.String()}
	info.CA = "fixed:r:" + info.NarHash
	ev, err := pub.PublishPath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := mirrorcache.NarInfo(got.(*events.Published))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(pub.opt.Cache.NarInfoPath("0c6kzph7l0dcbfmjap64f0czdafn3b7x"))
	if err != nil {
		t.Fatal(err)
	}
	wni, err := narinfo.ParseBytes(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(wni.IPFSSigs) != 1 {
		t.Errorf("the publisher wrote %d IPFSSig lines, want 1", len(wni.IPFSSigs))
	}
	if err := wni.VerifyCID([]signature.PublicKey{pub.opt.Key.ToPublicKey()}); err != nil {
		t.Errorf("the publisher's IPFSSig: %v", err)
	}
	if ni.String() != string(want) {
		t.Errorf("narinfo rebuilt from the event:\n%s\n--- the publisher wrote ---\n%s", ni.String(), want)
	}
	if len(ev.Sigs) != 2 || ev.Deriver == "" || ev.CA == "" || len(ev.IPFSSigs) != 1 {
		t.Errorf("event sigs %q deriver %q ca %q ipfs_sigs %q: want 2 sigs, a deriver, a CA, an IPFSSig", ev.Sigs, ev.Deriver, ev.CA, ev.IPFSSigs)
	}
}
