package latest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-ipfs/nix-ipfs/internal/atomicfile"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// State remembers, per job, the newest document a reader has accepted, in
// a directory of its own (one file per job, written atomically), so that an
// older document is refused later even though its signature is valid.
type State struct{ Dir string }

// ErrRollback is Accept's answer for a document older than one accepted
// before.
var ErrRollback = errors.New("latest: older than the build accepted before")

// Accept records d as the job's latest unless an accepted document is
// newer; the same document again is accepted. d must be verified first.
func (s State) Accept(d *Doc) error {
	p := filepath.Join(s.Dir, d.Job+".json")
	if f, err := os.Open(p); err == nil {
		prev, perr := Parse(f, "")
		f.Close()
		if perr == nil {
			if prev.Newer(d) {
				return errs.E(errs.Invalid, fmt.Errorf("%w: %s: offered the build of %s (seq %d), but the build of %s (seq %d) was accepted before: an old document replayed?",
					ErrRollback, d.Job, d.Built.Format("2006-01-02T15:04:05Z07:00"), d.Seq, prev.Built.Format("2006-01-02T15:04:05Z07:00"), prev.Seq))
			}
			if !d.Newer(prev) {
				return nil // the same build again
			}
		}
		// An unreadable state file is replaced: it can only lose the
		// protection it was meant to give, never grant a rollback.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return errs.E(errs.Transient, fmt.Errorf("latest: state %s: %w", p, err))
	}
	b, err := d.Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("latest: state: %w", err))
	}
	if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("latest: state %s: %w", p, err))
	}
	return nil
}

// Get fetches job's document from the binary cache at base (http, https or
// file URL) and checks its shape; storeDir, if set, is the store its
// outputs must be in. It does not verify the signature.
func Get(ctx context.Context, client *http.Client, base, job, storeDir string) (*Doc, error) {
	if err := ValidJob(job); err != nil {
		return nil, err
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, errs.Errorf(errs.Config, "latest: upstream %q: %v", base, err)
	}
	switch u.Scheme {
	case "file":
		f, err := os.Open(filepath.Join(u.Path, FileName(job)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errs.Errorf(errs.NotYet, "latest: %s has no latest build of %s", base, job)
		}
		if err != nil {
			return nil, errs.E(errs.Transient, fmt.Errorf("latest: %w", err))
		}
		defer f.Close()
		return checkJob(Parse(f, storeDir))(job)
	case "http", "https":
	default:
		return nil, errs.Errorf(errs.Config, "latest: upstream %q: want an http, https or file URL", base)
	}
	target := strings.TrimSuffix(base, "/") + "/" + FileName(job)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, errs.Errorf(errs.Config, "latest: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("latest: GET %s: %w", target, err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errs.Errorf(errs.NotYet, "latest: %s has no latest build of %s (404)", base, job)
	case resp.StatusCode != http.StatusOK:
		return nil, errs.Errorf(errs.Transient, "latest: GET %s: %s", target, resp.Status)
	}
	return checkJob(Parse(resp.Body, storeDir))(job)
}

// checkJob refuses a document for another job than the one asked for: a
// validly signed document of job A served as job B's.
func checkJob(d *Doc, err error) func(string) (*Doc, error) {
	return func(job string) (*Doc, error) {
		if err != nil {
			return nil, err
		}
		if d.Job != job {
			return nil, errs.Errorf(errs.Corrupt, "latest: asked for %s, got the document of %s", job, trunc(d.Job))
		}
		return d, nil
	}
}
