// Package schemas holds the JSON Schema (draft 2020-12) of every event type,
// one file per type and version, and of the documents published beside the
// cache (the mirror list, mirrors.v1.json; the latest build of each job,
// latestbuild.v1.json), and validates payloads against
// them.
//
// The files are generated from the Go types in packages events and
// mirrorlist (go generate ./events); TestSchemasUpToDate fails when they
// drift. They are
// the contract for anyone who consumes the stream without this code.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed *.json
var FS embed.FS

// BaseURL is where the schemas say they live (their $id).
const BaseURL = "https://github.com/nix-ipfs/nix-ipfs/schemas/"

// FileName returns the schema file of an event type:
// "nixipfs.built.v1" -> "built.v1.json".
func FileName(typ string) string {
	return strings.TrimPrefix(typ, "nixipfs.") + ".json"
}

var (
	mu       sync.Mutex
	compiled = map[string]*jsonschema.Schema{}
)

func schemaFor(typ string) (*jsonschema.Schema, error) {
	mu.Lock()
	defer mu.Unlock()
	if s, ok := compiled[typ]; ok {
		return s, nil
	}
	name := FileName(typ)
	data, err := FS.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("no schema for event type %q", typ)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// Named by its published URL, so errors do not carry this process's
	// working directory into dead letters.
	url := BaseURL + name
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	compiled[typ] = s
	return s, nil
}

// Validate checks a JSON payload against the schema of event type typ.
func Validate(typ string, payload []byte) error {
	s, err := schemaFor(typ)
	if err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%s: not JSON: %v", typ, err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: does not match schema %s: %s", typ, FileName(typ), oneLine(err))
	}
	return nil
}

func oneLine(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}
