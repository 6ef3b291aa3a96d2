package ipfs_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nardag"
)

// TestImport: a DAG built in process reaches kubo through DagImport
// (nardag.Import), pinned,
// and reads back byte for byte; for a kubo chunker its CID is the one
// kubo's add gives.
func TestImport(t *testing.T) {
	k := testenv.StartKubo(t, testenv.KuboOffline())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before, err := k.Client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(7, 3<<20+11)
	hash := "0123456789abcdfghijklmnpqrsvwxyz"
	copy(data[600000:], hash)
	for _, ch := range []string{"size-262144", "nix-refs-4096-524288"} {
		c, err := nardag.Import(ctx, k.Client, func(put nardag.Sink) (cid.Cid, error) {
			return nardag.Build(ctx, bytes.NewReader(data), ch, []string{hash}, put)
		}, true)
		if err != nil {
			t.Fatalf("%s: Import: %v", ch, err)
		}
		if got := catAll(t, k.Client, ctx, c); !bytes.Equal(got, data) {
			t.Fatalf("%s: cat of %s differs from the input", ch, c)
		}
		if ok, err := k.Client.IsPinned(ctx, c); err != nil || !ok {
			t.Errorf("%s: %s pinned %v (%v)", ch, c, ok, err)
		}
		if ch == "size-262144" {
			if want := cliAdd(t, k, writeFile(t, data), "--cid-version=1"); c != want {
				t.Errorf("Import %s, kubo's add %s", c, want)
			}
		}
	}
	pins, err := k.Client.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != len(before)+2 {
		t.Errorf("pins %v, want the two roots only (not the placeholder)", pins)
	}

	// A failing source keeps its error and kind; nothing is pinned.
	boom := errs.Errorf(errs.Corrupt, "boom")
	_, err = nardag.Import(ctx, k.Client, func(put nardag.Sink) (cid.Cid, error) {
		if err := put(cid.Undef, nil); err != nil {
			return cid.Undef, err
		}
		return cid.Undef, boom
	}, true)
	if !errors.Is(err, boom) || !errs.Is(err, errs.Corrupt) {
		t.Errorf("Import with a failing source: %v", err)
	}

	// kubo's add refuses a chunker it does not have, before sending.
	p := ipfs.DefaultParams()
	p.Chunker = "nix-refs-4096-524288"
	if _, err := k.Client.Add(ctx, bytes.NewReader(data), p, false); !errs.Is(err, errs.Invalid) {
		t.Errorf("Add with %s: %v, want Invalid", p.Chunker, err)
	}
	p.Nocopy = true
	if err := p.Validate(); !errs.Is(err, errs.Config) {
		t.Errorf("nocopy with %s: %v, want Config", p.Chunker, err)
	}
}
