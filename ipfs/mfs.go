package ipfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/path"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/kubo/client/rpc"
)

// MFS (kubo's mutable file system) operations, for the cache as a UnixFS
// directory. Every call takes flush: false leaves the change in the
// daemon's memory until FilesFlush (or another flushing call) writes the
// directories up to the root, which is what makes many small changes
// cheap in a large directory. kubo shards a directory (HAMT) by itself once
// it grows past Import.UnixFSHAMTDirectorySizeThreshold.

// FilesWrite writes data to the MFS file p, creating it and its parent
// directories, replacing what was there; CIDv1 with raw leaves.
func (k *Kubo) FilesWrite(ctx context.Context, p string, data []byte, flush bool) error {
	body := files.NewMultiFileReader(files.NewMapDirectory(map[string]files.Node{"": files.NewBytesFile(data)}), false, false)
	err := k.api.Request("files/write", p).
		Option("create", true).
		Option("parents", true).
		Option("truncate", true).
		Option("cid-version", 1).
		Option("raw-leaves", true).
		Option("flush", flush).
		Body(body).
		Exec(ctx, nil)
	return k.fail(ctx, err, "files write %s", p)
}

// FilesLink links the existing DAG c into MFS at p (no data is copied),
// creating parent directories. An entry already at p is replaced unless it
// is c already.
func (k *Kubo) FilesLink(ctx context.Context, c cid.Cid, p string, flush bool) error {
	if err := needCID("files cp", c); err != nil {
		return err
	}
	if cur, err := k.FilesStat(ctx, p); err == nil {
		if cur.Equals(c) {
			return nil
		}
		if err := k.FilesRm(ctx, p, flush); err != nil {
			return err
		}
	} else if !isNotExist(err) {
		return err
	}
	err := k.api.Request("files/cp", path.FromCid(c).String(), p).
		Option("parents", true).
		Option("flush", flush).
		Exec(ctx, nil)
	return k.fail(ctx, err, "files cp %s %s", c, p)
}

// FilesRm removes p from MFS; a path that does not exist is no error.
func (k *Kubo) FilesRm(ctx context.Context, p string, flush bool) error {
	err := k.api.Request("files/rm", p).Option("recursive", true).Option("force", true).Option("flush", flush).Exec(ctx, nil)
	if isNotExist(err) {
		return nil
	}
	return k.fail(ctx, err, "files rm %s", p)
}

// FilesMkdir creates the MFS directory p (and its parents) with CIDv1, if
// missing.
func (k *Kubo) FilesMkdir(ctx context.Context, p string) error {
	err := k.api.Request("files/mkdir", p).Option("parents", true).Option("cid-version", 1).Exec(ctx, nil)
	return k.fail(ctx, err, "files mkdir %s", p)
}

// FilesFlush writes p's pending changes up to the MFS root and returns p's
// CID.
func (k *Kubo) FilesFlush(ctx context.Context, p string) (cid.Cid, error) {
	var out struct{ Cid string }
	if err := k.api.Request("files/flush", p).Exec(ctx, &out); err != nil {
		return cid.Undef, k.fail(ctx, err, "files flush %s", p)
	}
	return k.FilesStat(ctx, p)
}

// FilesStat returns the CID of the MFS entry p. A missing entry is an error
// for which isNotExist holds.
func (k *Kubo) FilesStat(ctx context.Context, p string) (cid.Cid, error) {
	var st struct{ Hash string }
	if err := k.api.Request("files/stat", p).Option("hash", true).Exec(ctx, &st); err != nil {
		if isNotExist(err) {
			return cid.Undef, err
		}
		return cid.Undef, k.fail(ctx, err, "files stat %s", p)
	}
	c, err := cid.Decode(st.Hash)
	if err != nil {
		return cid.Undef, k.fail(ctx, err, "files stat %s", p)
	}
	return c, nil
}

// IsNotExist reports whether err says an MFS path does not exist.
func IsNotExist(err error) bool { return isNotExist(err) }

func isNotExist(err error) bool {
	var ce *rpc.Error
	if errors.As(err, &ce) {
		return strings.Contains(ce.Message, "does not exist") || strings.Contains(ce.Message, "no such file")
	}
	return err != nil && strings.Contains(err.Error(), "file does not exist")
}

// PinsNamed lists the recursive pins named name.
func (k *Kubo) PinsNamed(ctx context.Context, name string) ([]cid.Cid, error) {
	// --name makes the daemon send only the pins whose name contains
	// name, not every pin it holds; the exact match is checked below.
	resp, err := k.api.Request("pin/ls").
		Option("type", "recursive").
		Option("names", true).
		Option("name", name).
		Option("stream", true).
		Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "pin ls --names")
	}
	defer resp.Close()
	var out []cid.Cid
	dec := json.NewDecoder(resp.Output)
	for {
		var ev struct{ Cid, Name string }
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, k.failStream(ctx, err, "pin ls --names")
		}
		if ev.Name != name {
			continue
		}
		c, err := cid.Decode(ev.Cid)
		if err != nil {
			return nil, fmt.Errorf("kubo %s: pin ls: daemon listed CID %q: %w", k.addr, ev.Cid, err)
		}
		out = append(out, c)
	}
}

// PinUpdate moves a recursive pin, and its name, from one DAG to another,
// walking only what differs: for a new cache root that shares nearly
// everything with the last, a fraction of a second where pinning it anew
// walks the whole directory (docs/BENCHMARKS.md, "mfs").
func (k *Kubo) PinUpdate(ctx context.Context, from, to cid.Cid) error {
	err := k.api.Request("pin/update", path.FromCid(from).String(), path.FromCid(to).String()).
		Option("unpin", true).Exec(ctx, nil)
	return k.fail(ctx, err, "pin update %s %s", from, to)
}
