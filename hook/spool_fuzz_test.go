package hook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// FuzzSpool: whatever bytes are spooled come back byte for byte from the
// one file List returns, inside the spool directory; decoding them (what
// drain does) never panics and fails only as Invalid; what does not decode
// is quarantined out of the way. Files that are not spooled events (temp
// files, other names, directories) are never listed.
func FuzzSpool(f *testing.F) {
	ev := &events.Built{Host: "b", StoreDir: "/nix/store", OutPaths: []string{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello"}}
	events.Seal(ev)
	good, err := events.Encode(ev)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, int64(0), ".tmp-x")
	f.Add([]byte(`{"type":"nixipfs.built.v1","id":"nope"}`), int64(-1), "x.json")
	f.Add([]byte{}, time.Now().UnixNano(), "bad")
	f.Add([]byte("\x00\xff{"), int64(1<<62), "00000000000000000001-zz.json")
	f.Fuzz(func(t *testing.T, data []byte, nanos int64, junkName string) {
		dir := filepath.Join(t.TempDir(), "spool")
		sp := Spool{Dir: dir}
		// Junk beside the spooled event: a file of any valid name (but the
		// quarantine directory's, which a file there would block).
		if junkName != "" && junkName != badDir && !strings.ContainsAny(junkName, "/\x00") && junkName != "." && junkName != ".." && len(junkName) < 200 {
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, junkName), []byte("junk"), 0o600)
		}
		sum := sha256.Sum256(data)
		id := hex.EncodeToString(sum[:])
		p, err := sp.Put(id, data, time.Unix(0, nanos))
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		if filepath.Dir(p) != dir {
			t.Fatalf("spooled to %s, outside %s", p, dir)
		}
		files, err := sp.List()
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, f := range files {
			base := filepath.Base(f)
			if strings.HasPrefix(base, tmpPrefix) || !strings.HasSuffix(base, spoolExt) {
				t.Fatalf("List returned %q", base)
			}
			found = found || f == p
		}
		if !found {
			t.Fatalf("List %v lacks the spooled %s", files, p)
		}
		back, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("read back %d bytes (%v), spooled %d", len(back), err, len(data))
		}
		if _, err := events.Decode(back); err != nil {
			if !errs.Is(err, errs.Invalid) {
				t.Fatalf("decode error of kind %v: %v", errs.KindOf(err), err)
			}
			dst, err := sp.Quarantine(p)
			if err != nil {
				t.Fatalf("quarantine: %v", err)
			}
			if filepath.Dir(dst) != filepath.Join(dir, badDir) {
				t.Fatalf("quarantined to %s", dst)
			}
			files, _ := sp.List()
			for _, f := range files {
				if f == p {
					t.Fatal("a quarantined file is still listed")
				}
			}
		}
	})
}
