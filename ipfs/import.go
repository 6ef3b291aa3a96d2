package ipfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/files"
	"github.com/ipfs/go-cid"
)

// DagImport sends cars, in order, in one `dag import` (kubo holds its GC
// lock from the first block to the last pin) and returns, for each root
// their headers name that kubo tried to pin (with pin), "" or its reason
// for not pinning it. nardag.Import streams a DAG through it.
func (k *Kubo) DagImport(ctx context.Context, cars []io.Reader, pin bool) (map[cid.Cid]string, error) {
	ents := make([]files.DirEntry, len(cars))
	for i, r := range cars {
		ents[i] = files.FileEntry(fmt.Sprintf("%d.car", i), files.NewReaderFile(r))
	}
	body := files.NewMultiFileReader(files.NewSliceDirectory(ents), false, false)
	resp, err := k.api.Request("dag/import").
		Option("pin-roots", pin).
		Option("stats", false).
		Body(body).
		Send(ctx)
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err != nil {
		return nil, k.fail(ctx, err, "dag import")
	}
	defer resp.Close()
	roots := map[cid.Cid]string{}
	dec := json.NewDecoder(resp.Output)
	for {
		var ev struct {
			Root *struct {
				Cid         cid.Cid
				PinErrorMsg string
			}
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return roots, nil
			}
			return nil, k.failStream(ctx, err, "dag import")
		}
		if ev.Root != nil {
			roots[ev.Root.Cid] = ev.Root.PinErrorMsg
		}
	}
}
