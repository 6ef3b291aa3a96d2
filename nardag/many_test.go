package nardag_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"

	"github.com/nix-ipfs/nix-ipfs/nardag"
)

// carImporter reads the CARs as kubo's dag import does, with go-car's
// reader (a header it cannot parse fails the import), checks every block
// against its CID, and reports a root pinned when it holds its block.
type carImporter struct{ blocks map[cid.Cid][]byte }

func (im *carImporter) DagImport(_ context.Context, cars []io.Reader, _ bool) (map[cid.Cid]string, error) {
	im.blocks = map[cid.Cid][]byte{}
	pinned := map[cid.Cid]string{}
	for _, r := range cars {
		br, err := car.NewBlockReader(r)
		if err != nil {
			return nil, fmt.Errorf("CAR header: %w", err)
		}
		for {
			b, err := br.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			c, err := b.Cid().Prefix().Sum(b.RawData())
			if err != nil || !c.Equals(b.Cid()) {
				return nil, fmt.Errorf("block %s does not hash to its CID", b.Cid())
			}
			im.blocks[b.Cid()] = b.RawData()
		}
		for _, root := range br.Roots {
			if _, ok := im.blocks[root]; ok {
				pinned[root] = ""
			} else {
				pinned[root] = "block was not found locally (offline): ipld: could not find " + root.String()
			}
		}
	}
	return pinned, nil
}

// TestImportManyPinsEveryRoot: the DAGs of many NARs in one import; the
// roots' header (more than 23 roots: a CBOR array with a length byte)
// parses, and names every NAR's root, each of which is Build's own.
func TestImportManyPinsEveryRoot(t *testing.T) {
	for _, n := range []int{1, 30, 300} {
		var datas [][]byte
		for i := 0; i < n; i++ {
			datas = append(datas, testData(100+i*997, int64(i), nil))
		}
		im := &carImporter{}
		var want []cid.Cid
		pinned, err := nardag.ImportMany(context.Background(), im, func(put nardag.Sink) ([]cid.Cid, error) {
			var roots []cid.Cid
			for _, d := range datas {
				r, err := nardag.Build(context.Background(), bytes.NewReader(d), "nix-refs-4096-524288", nil, put)
				if err != nil {
					return nil, err
				}
				roots = append(roots, r)
			}
			want = roots
			return roots, nil
		}, true)
		if err != nil {
			t.Fatalf("%d NARs: %v", n, err)
		}
		for i, r := range want {
			alone, _ := nardag.Build(context.Background(), bytes.NewReader(datas[i]), "nix-refs-4096-524288", nil, func(cid.Cid, []byte) error { return nil })
			if r != alone {
				t.Errorf("NAR %d: root %s in the batch, %s alone", i, r, alone)
			}
			if msg, ok := pinned[r]; !ok || msg != "" {
				t.Errorf("NAR %d: root %s not pinned (%q, reported %v)", i, r, msg, ok)
			}
		}
		if msg := pinned[nardag.PlaceholderRoot]; msg == "" {
			t.Errorf("%d NARs: the placeholder root was pinned", n)
		}
	}
}

// TestImportManyDaemonFails: the importer's error comes back and the
// builder is unblocked; a builder's own error is reported as such.
func TestImportManyDaemonFails(t *testing.T) {
	boom := errors.New("daemon refused")
	data := testData(8<<20, 5, nil)
	_, err := nardag.ImportMany(context.Background(), failingImporter{boom}, func(put nardag.Sink) ([]cid.Cid, error) {
		r, err := nardag.Build(context.Background(), bytes.NewReader(data), "nix-refs-4096-524288", nil, put)
		return []cid.Cid{r}, err
	}, true)
	if !errors.Is(err, boom) {
		t.Fatalf("ImportMany: %v, want the daemon's error", err)
	}
	bad := errors.New("store path unreadable")
	_, err = nardag.ImportMany(context.Background(), &carImporter{}, func(put nardag.Sink) ([]cid.Cid, error) {
		return nil, bad
	}, true)
	if !errors.Is(err, bad) {
		t.Fatalf("ImportMany with a failing builder: %v, want its error", err)
	}
}

// TestCARHeaderAndBlock: a CAR written with CARHeader and CARBlock reads
// back with go-car's reader: every root in its header, every block under
// its CID.
func TestCARHeaderAndBlock(t *testing.T) {
	var (
		roots []cid.Cid
		body  []byte
	)
	for i := 0; i < 40; i++ {
		r, err := nardag.Build(context.Background(), bytes.NewReader(testData(1000+i, int64(i), nil)), "nix-refs-4096-524288", nil,
			func(c cid.Cid, data []byte) error { body = append(body, nardag.CARBlock(c, data)...); return nil })
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, r)
	}
	im := &carImporter{}
	pinned, err := im.DagImport(context.Background(), []io.Reader{bytes.NewReader(append(nardag.CARHeader(roots), body...))}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roots {
		if msg, ok := pinned[r]; !ok || msg != "" {
			t.Errorf("root %s: %q, %v", r, msg, ok)
		}
	}
}
