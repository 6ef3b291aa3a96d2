package cachedir

import (
	"fmt"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/storepath"
)

// The batch writes: many small paths' files made durable together, for
// a closure of thousands of small paths. Each file stays atomic and
// crash-safe as with Commit and WriteNarInfo (its data fsynced before
// its rename, its directory fsynced after); what a batch shares is the
// directory fsync, once for all of its renames, and the data fsyncs run
// side by side. The order between the kinds is the caller's, as for one
// path: CommitNARs returns before WriteNarInfos of the same paths starts.

// CommitNARs commits NAR temp files (CreateNAR) to NarPath(urls[i]),
// returning one error per file. Where the error is nil, the NAR is in
// place and durable, and its narinfo may be written.
func (c Cache) CommitNARs(tmps []*atomicfile.File, urls []string) []error {
	paths := make([]string, len(urls))
	bad := make([]error, len(urls))
	for i, u := range urls {
		if err := CheckNarURL(u); err != nil {
			bad[i] = errs.E(errs.Invalid, err)
			tmps[i].Abort()
			continue
		}
		paths[i] = c.NarPath(u)
	}
	return commitSome(tmps, paths, bad)
}

// WriteNarInfos writes the narinfos texts[i] of hashParts[i] atomically,
// returning one error per narinfo. Their NARs must be in place and
// durable already (CommitNARs): no reader may see a narinfo without its
// NAR.
func (c Cache) WriteNarInfos(hashParts []string, texts [][]byte) []error {
	tmps := make([]*atomicfile.File, len(hashParts))
	paths := make([]string, len(hashParts))
	bad := make([]error, len(hashParts))
	for i, hp := range hashParts {
		if err := storepath.ValidateHashPart(hp); err != nil {
			bad[i] = errs.E(errs.Invalid, err)
			continue
		}
		paths[i] = c.NarInfoPath(hp)
		f, err := atomicfile.Create(paths[i], 0o644)
		if err != nil {
			bad[i] = errs.E(errs.Transient, err)
			continue
		}
		if _, err := f.Write(texts[i]); err != nil {
			f.Abort()
			bad[i] = errs.E(errs.Transient, fmt.Errorf("write %s: %w", paths[i], err))
			continue
		}
		tmps[i] = f
	}
	return commitSome(tmps, paths, bad)
}

// commitSome commits the files whose bad[i] is nil, and returns bad with
// their outcomes filled in, as Transient errors (a disk that failed).
func commitSome(tmps []*atomicfile.File, paths []string, bad []error) []error {
	var (
		files []*atomicfile.File
		dests []string
		idx   []int
	)
	for i := range tmps {
		if bad[i] == nil {
			files, dests, idx = append(files, tmps[i]), append(dests, paths[i]), append(idx, i)
		}
	}
	for j, err := range atomicfile.CommitAll(files, dests) {
		if err != nil {
			bad[idx[j]] = errs.E(errs.Transient, err)
		}
	}
	return bad
}
