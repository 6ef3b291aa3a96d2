// Command gen writes the event JSON Schemas from the Go types in package
// events: go run ./schemas/gen -out schemas (or go generate ./events).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-ipfs/nix-ipfs/events/schemagen"
)

func main() {
	out := flag.String("out", "schemas", "directory to write the schema files into")
	flag.Parse()
	files, err := schemagen.Generate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(*out, name), data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
