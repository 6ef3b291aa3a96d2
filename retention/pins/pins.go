// Package pins is the named pins retention keeps: each keeps its last
// revisions' closures, stored in a JetStream key-value bucket so every
// host sees the same pins.
package pins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// BucketName is the JetStream key-value bucket that holds the named pins.
const BucketName = "nixipfs_pins"

// Pin is a named pin: its last KeepRevisions revisions are live roots.
type Pin struct {
	Name          string `json:"name"`
	KeepRevisions int    `json:"keep_revisions"`
	// Revisions, oldest first; at most KeepRevisions of them.
	Revisions []Revision `json:"revisions"`
}

// Revision is one store path a pin kept, and when it was added.
type Revision struct {
	StorePath string    `json:"store_path"`
	Added     time.Time `json:"added"`
}

// Live returns the store paths the pin keeps.
func (p Pin) Live() []string {
	revs := p.Revisions
	if n := p.KeepRevisions; n > 0 && len(revs) > n {
		revs = revs[len(revs)-n:]
	}
	out := make([]string, len(revs))
	for i, r := range revs {
		out[i] = r.StorePath
	}
	return out
}

var pinNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidateName checks a pin's name: it is a key in the bucket.
func ValidateName(name string) error {
	if !pinNameRE.MatchString(name) || name[len(name)-1] == '.' {
		return errs.Errorf(errs.Invalid, "pin name %q: use 1 to 128 letters, digits, '_', '-' and '.', not starting with '-' or '.' nor ending with '.'", name)
	}
	return nil
}

// Bucket is the pin bucket. A nil *Bucket (no bucket yet) holds no pins.
type Bucket struct {
	kv jetstream.KeyValue
}

// Open opens the pin bucket. With create, a missing bucket is created
// with replicas replicas (the stream's, so pins survive what the stream
// survives); without, a missing bucket gives a nil *Bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, create bool) (*Bucket, error) {
	kv, err := js.KeyValue(ctx, BucketName)
	if err == nil {
		return &Bucket{kv: kv}, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, errs.E(errs.Transient, fmt.Errorf("pin bucket %s: %w", BucketName, err))
	}
	if !create {
		return nil, nil
	}
	if replicas < 1 {
		replicas = 1
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketName,
		Description: "nix-ipfs named pins: each keeps its last revisions' closures in the cache",
		History:     8,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, BucketName)
	}
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("create pin bucket %s: %w", BucketName, err))
	}
	return &Bucket{kv: kv}, nil
}

// Get returns the pin called name, or ok false.
func (p *Bucket) Get(ctx context.Context, name string) (Pin, uint64, bool, error) {
	if p == nil {
		return Pin{}, 0, false, nil
	}
	e, err := p.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Pin{}, 0, false, nil
	}
	if err != nil {
		return Pin{}, 0, false, errs.E(errs.Transient, fmt.Errorf("pin %s: %w", name, err))
	}
	var pin Pin
	if err := json.Unmarshal(e.Value(), &pin); err != nil {
		return Pin{}, 0, false, errs.Errorf(errs.Invalid, "pin %s: stored value does not decode: %v", name, err)
	}
	return pin, e.Revision(), true, nil
}

// Add makes storePath the newest revision of the pin called name, creating
// the pin if needed. keep > 0 sets how many revisions the pin keeps; 0
// leaves an existing pin's setting (a new pin keeps 1). Concurrent adds are
// serialised by the bucket's revision check.
func (p *Bucket) Add(ctx context.Context, name, storePath string, keep int, now time.Time) (Pin, error) {
	if err := ValidateName(name); err != nil {
		return Pin{}, err
	}
	for attempt := 0; ; attempt++ {
		pin, rev, ok, err := p.Get(ctx, name)
		if err != nil {
			return Pin{}, err
		}
		if !ok {
			pin = Pin{Name: name, KeepRevisions: 1}
		}
		if keep > 0 {
			pin.KeepRevisions = keep
		}
		revs := pin.Revisions[:0:0]
		for _, r := range pin.Revisions {
			if r.StorePath != storePath {
				revs = append(revs, r)
			}
		}
		revs = append(revs, Revision{StorePath: storePath, Added: now.UTC()})
		if len(revs) > pin.KeepRevisions {
			revs = revs[len(revs)-pin.KeepRevisions:]
		}
		pin.Revisions = revs
		b, _ := json.Marshal(pin)
		if ok {
			_, err = p.kv.Update(ctx, name, b, rev)
		} else {
			_, err = p.kv.Create(ctx, name, b)
		}
		if err == nil {
			return pin, nil
		}
		if attempt < 10 && (errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err)) {
			continue // another add won the race: read again
		}
		return Pin{}, errs.E(errs.Transient, fmt.Errorf("pin %s: %w", name, err))
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Remove deletes the pin called name; a missing pin is an Invalid error.
func (p *Bucket) Remove(ctx context.Context, name string) error {
	if _, _, ok, err := p.Get(ctx, name); err != nil {
		return err
	} else if !ok {
		return errs.Errorf(errs.Invalid, "no pin called %q", name)
	}
	if err := p.kv.Purge(ctx, name); err != nil {
		return errs.E(errs.Transient, fmt.Errorf("remove pin %s: %w", name, err))
	}
	return nil
}

// List returns every pin, by name.
func (p *Bucket) List(ctx context.Context) ([]Pin, error) {
	if p == nil {
		return nil, nil
	}
	keys, err := p.kv.ListKeys(ctx)
	if err != nil {
		return nil, errs.E(errs.Transient, fmt.Errorf("list pins: %w", err))
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []Pin
	for _, n := range names {
		pin, _, ok, err := p.Get(ctx, n)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, pin)
		}
	}
	return out, nil
}
