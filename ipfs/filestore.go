package ipfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
)

// CheckNocopy finds out whether the daemon can add files under dir by
// reference: it writes a small probe file there, adds it with p.Nocopy
// (unpinned), then removes the reference and the file. An error says why
// not (filestore disabled, dir outside the daemon's filestore root, or dir
// not visible to the daemon at the same path), in kubo's words with a hint.
func (k *Kubo) CheckNocopy(ctx context.Context, dir string, p Params) error {
	p.Nocopy = true
	if err := p.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("nocopy probe: %w", err)
	}
	f, err := os.CreateTemp(dir, ".nocopy-probe-*")
	if err != nil {
		return fmt.Errorf("nocopy probe: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	// Random bytes: the probe's block must be one no pin holds, so that
	// removing it afterwards takes nothing from anyone.
	b := make([]byte, 64)
	rand.Read(b)
	_, err = f.WriteString("nix-ipfs nocopy probe " + hex.EncodeToString(b) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("nocopy probe %s: %w", name, err)
	}
	c, err := k.AddFile(ctx, name, p, false)
	if err != nil {
		return err
	}
	return k.removeBlock(ctx, c)
}

// removeBlock removes one unpinned block (a filestore reference, for a
// filestore block).
func (k *Kubo) removeBlock(ctx context.Context, c cid.Cid) error {
	resp, err := k.api.Request("block/rm", c.String()).Option("force", true).Send(ctx)
	if err == nil {
		if resp.Error != nil {
			err = resp.Error
		}
		resp.Close()
	}
	return k.fail(ctx, err, "block rm %s", c)
}

// FilestoreEntry is one reference in kubo's filestore, as `ipfs filestore
// verify` reports it.
type FilestoreEntry struct {
	CID cid.Cid
	// Path is the referenced file, absolute (kubo records it relative to
	// its filestore root, Root).
	Path   string
	Offset uint64
	Size   uint64
	// Status is kubo's: "ok", "no-file" (moved or deleted), "changed",
	// "error" (unreadable), "corrupt", "missing".
	Status string
	Err    string
}

// FilestoreVerify checks every reference in the daemon's filestore against
// its file and returns them all. root is the filestore's root as the daemon
// sees it (the parent of its IPFS_PATH), to make paths absolute; "" leaves
// them as kubo reports them.
func (k *Kubo) FilestoreVerify(ctx context.Context, root string) ([]FilestoreEntry, error) {
	resp, err := k.api.Request("filestore/verify").Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "filestore verify")
	}
	defer resp.Close()
	var out []FilestoreEntry
	dec := json.NewDecoder(resp.Output)
	for {
		var ent struct {
			Status   int
			ErrorMsg string
			Key      struct {
				Root string `json:"/"`
			}
			FilePath string
			Offset   uint64
			Size     uint64
		}
		if err := dec.Decode(&ent); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, k.failStream(ctx, err, "filestore verify")
		}
		e := FilestoreEntry{Path: ent.FilePath, Offset: ent.Offset, Size: ent.Size, Status: filestoreStatus(ent.Status), Err: ent.ErrorMsg}
		if root != "" && !filepath.IsAbs(e.Path) {
			e.Path = filepath.Join(root, e.Path)
		}
		e.CID, _ = cid.Decode(ent.Key.Root)
		out = append(out, e)
	}
}

// filestoreStatus names boxo's filestore.Status codes as kubo prints them.
func filestoreStatus(s int) string {
	switch s {
	case 0:
		return "ok"
	case 10:
		return "error" // the file could not be read
	case 11:
		return "no-file"
	case 12:
		return "changed"
	case 20:
		return "corrupt"
	case 30:
		return "missing"
	default:
		return fmt.Sprintf("status-%d", s)
	}
}
