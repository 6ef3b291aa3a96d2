package schemagen

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/schemas"
)

// TestSchemasUpToDate fails when the Go event types and the schema files in
// schemas/ disagree. Fix with: go generate ./events
func TestSchemasUpToDate(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(events.Types)+len(Documents) {
		t.Fatalf("%d schemas for %d event types and %d documents", len(files), len(events.Types), len(Documents))
	}
	onDisk, _ := filepath.Glob("../../schemas/*.json")
	if want := len(files) + len(events.OldTypes); len(onDisk) != want {
		t.Errorf("schemas/ holds %d files; the types and documents make %d and %d older versions are frozen", len(onDisk), len(files), len(events.OldTypes))
	}
	for _, typ := range events.OldTypes {
		if _, ok := files[schemas.FileName(typ)]; ok {
			t.Errorf("%s is an older version but its schema is generated", typ)
		}
		if _, err := os.Stat(filepath.Join("../../schemas", schemas.FileName(typ))); err != nil {
			t.Errorf("the frozen schema of %s is gone: %v", typ, err)
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("../../schemas", name))
		if err != nil {
			t.Errorf("%s: %v (run go generate ./events)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("schemas/%s differs from the Go types: run go generate ./events", name)
		}
	}
}
