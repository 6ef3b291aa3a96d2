// Package schemagen generates the JSON Schemas in schemas/ from the event
// types in package events, so the Go types and the published contract cannot
// drift: schemas/gen writes the files, and a test fails when they differ.
package schemagen

import (
	"encoding/json"
	"reflect"

	"github.com/invopop/jsonschema"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/latest"
	"github.com/nix-ipfs/nix-ipfs/mirrorlist"
	"github.com/nix-ipfs/nix-ipfs/schemas"
)

var titles = map[string]string{
	events.TypeBuilt:      "A Nix build finished on a builder (sent by nix-ipfs-hook)",
	events.TypePublished:  "A store path is in the binary cache and in IPFS (sent by the publisher)",
	events.TypePinned:     "A mirror holds a NAR's CID pinned (sent by a mirror)",
	events.TypeRetired:    "A store path left the binary cache; its NAR may be let go (sent by nix-ipfs prune)",
	events.TypeDeadLetter: "An event a worker gave up on, and why",
	events.TypeCacheRoot:  "The binary cache as a UnixFS directory has a new root CID (sent by the publisher with --mfs-dir)",
	events.TypeLatest:     "A job has a new latest build: its signed document, for the mirrors' caches (sent by the publisher)",
}

// Documents are the files other than events that nix-ipfs publishes with
// a schema, by type: the Go value each schema is generated from.
var Documents = map[string]any{
	mirrorlist.Type: &mirrorlist.List{},
	latest.Type:     &latest.Doc{},
}

var docTitles = map[string]string{
	mirrorlist.Type: "The mirrors that hold a binary cache's NARs on IPFS (" + mirrorlist.FileName + " in the cache root, kept by the publisher)",
	latest.Type:     "The latest successful build of a job, signed with the cache key (" + latest.Dir + "/<job>.json in the cache root, kept by the publisher)",
}

// Generate returns the name and contents of the schema file of every type
// this code writes. The schemas of older versions (events.OldTypes) are not
// generated: they are frozen as they were released.
//
// The schemas of Documents are generated as well.
func Generate() (map[string][]byte, error) {
	out := map[string][]byte{}
	gen := func(typ string, v any, title string) error {
		r := &jsonschema.Reflector{
			ExpandedStruct: true,
			DoNotReference: true,
		}
		s := r.ReflectFromType(reflect.TypeOf(v).Elem())
		s.ID = jsonschema.ID(schemas.BaseURL + schemas.FileName(typ))
		s.Title = title
		if p, ok := s.Properties.Get("type"); ok {
			p.Const = typ
			p.Pattern = ""
		}
		data, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		out[schemas.FileName(typ)] = append(data, '\n')
		return nil
	}
	for _, typ := range events.Types {
		if err := gen(typ, events.New(typ), titles[typ]); err != nil {
			return nil, err
		}
	}
	for typ, v := range Documents {
		if err := gen(typ, v, docTitles[typ]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
