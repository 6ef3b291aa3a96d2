package cachedir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/narinfo"
)

// TestBatchWrites: NARs committed together land whole under their names,
// then their narinfos; a bad name fails only its own entry, and nothing
// half-written stays behind.
func TestBatchWrites(t *testing.T) {
	c := open(t)
	const n = 40
	var (
		tmps  []*atomicfile.File
		urls  []string
		nars  [][]byte
		hps   []string
		texts [][]byte
	)
	for i := 0; i < n; i++ {
		nar := bytes.Repeat([]byte(fmt.Sprint(i, " ")), 100+i)
		tmp, err := c.CreateNAR()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.Write(nar); err != nil {
			t.Fatal(err)
		}
		h := "sha256:" + nixHash(nar)
		url := NarURL(h)
		if i == 5 {
			url = "nar/../escape.nar"
		}
		tmps, urls, nars = append(tmps, tmp), append(urls, url), append(nars, nar)
		ni := &narinfo.NarInfo{StorePath: "/nix/store/" + hashPartN(i) + "-x", URL: NarURL(h), Compression: "none",
			FileHash: h, FileSize: uint64(len(nar)), NarHash: h, NarSize: uint64(len(nar))}
		hp := hashPartN(i)
		if i == 7 {
			hp = "not-a-hash-part"
		}
		hps, texts = append(hps, hp), append(texts, []byte(ni.String()))
	}
	for i, err := range c.CommitNARs(tmps, urls) {
		if (i == 5) != (err != nil) || (err != nil && !errs.Is(err, errs.Invalid)) {
			t.Errorf("NAR %d: %v", i, err)
		}
		if i == 5 {
			continue
		}
		if got, err := os.ReadFile(c.NarPath(urls[i])); err != nil || !bytes.Equal(got, nars[i]) {
			t.Errorf("NAR %d: %d bytes on disk (%v), want %d", i, len(got), err, len(nars[i]))
		}
	}
	for i, err := range c.WriteNarInfos(hps, texts) {
		if (i == 7) != (err != nil) {
			t.Errorf("narinfo %d: %v", i, err)
		}
		if i == 7 {
			continue
		}
		if got, err := c.ReadNarInfoBytes(hps[i]); err != nil || !bytes.Equal(got, texts[i]) {
			t.Errorf("narinfo %d: %q (%v)", i, got, err)
		}
	}
	for _, d := range []string{c.Dir, c.NarDir()} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
				t.Errorf("temp file left: %s", filepath.Join(d, e.Name()))
			}
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "escape.nar")); err == nil {
		t.Error("a NAR URL outside nar/ was written")
	}
}
