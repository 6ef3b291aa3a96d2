package publisher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/ipfs"
	"github.com/nix-ipfs/nix-ipfs/nar"
	"github.com/nix-ipfs/nix-ipfs/nixstore"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// slowIPFS counts the adds under way, so a test sees how many paths are
// published at once.
type slowIPFS struct {
	fakeIPFS
	mu          sync.Mutex
	active, max int
}

func (s *slowIPFS) Add(ctx context.Context, r io.Reader, p ipfs.Params, pin bool) (cid.Cid, error) {
	s.mu.Lock()
	s.active++
	s.max = max(s.max, s.active)
	s.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	c, err := s.fakeIPFS.Add(ctx, r, p, pin)
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
	return c, err
}

// HandleBuilt publishes every path of a closure, as many at once as
// Concurrency and no more, and a path that fails does not stop the others:
// the event's error names each failed path and has the worst kind.
func TestHandleBuiltPublishesEveryPathAndReportsTheWorst(t *testing.T) {
	root := t.TempDir()
	st := &fakeStore{dir: filepath.Join(root, "store"), infos: map[string]*nixstore.PathInfo{}}
	var closure []string
	for i := range 40 {
		h := sha256.Sum256([]byte{byte(i)})
		sp := filepath.Join(st.dir, nixbase32.EncodeToString(h[:20])+fmt.Sprintf("-p%d", i))
		os.MkdirAll(sp, 0o755)
		os.WriteFile(filepath.Join(sp, "f"), []byte(sp), 0o644)
		var buf bytes.Buffer
		if err := nar.DumpPath(&buf, sp); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		st.infos[sp] = &nixstore.PathInfo{Path: sp, NarHash: "sha256:" + nixbase32.EncodeToString(sum[:]), NarSize: uint64(buf.Len())}
		closure = append(closure, sp)
	}
	corrupt, gone := closure[7], closure[23]
	st.infos[corrupt].NarHash = "sha256:" + strings.Repeat("0", 52)
	delete(st.infos, gone)

	sk, _, _ := signature.GenerateKeypair("test-1", nil)
	node := &slowIPFS{}
	pub, err := New(Options{Cache: Cache{Dir: filepath.Join(root, "cache")}, Key: sk, Params: ipfs.DefaultParams(), Concurrency: 3}, st, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = pub.HandleBuilt(context.Background(), &events.Built{StoreDir: st.dir, OutPaths: closure})
	if errs.KindOf(err) != errs.Corrupt || !strings.Contains(err.Error(), corrupt) || !strings.Contains(err.Error(), gone) {
		t.Fatalf("err = %v (kind %v), want kind Corrupt naming %s and %s", err, errs.KindOf(err), corrupt, gone)
	}
	for _, sp := range closure {
		_, statErr := os.Stat(pub.opt.Cache.NarInfoPath(storepath.HashPart(sp)))
		if ok := sp != corrupt && sp != gone; ok != (statErr == nil) {
			t.Errorf("%s: narinfo written: %v", sp, statErr == nil)
		}
	}
	if node.max != 3 {
		t.Errorf("%d paths published at once, want Concurrency (3)", node.max)
	}
}
