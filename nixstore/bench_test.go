package nixstore

import (
	"context"
	"path/filepath"
	"testing"
)

// Benchmarks run only with -bench, on a synthetic database: 20000 paths,
// each referencing up to 3 random others, with cycles. The closure of
// path 3 holds about 15000 of them.
//
//	go test -run '^$' -bench . ./nixstore/

func benchDB(b *testing.B) (*DB, []string) {
	b.Helper()
	const n = 20000
	db := filepath.Join(b.TempDir(), "db.sqlite")
	paths := synthDB(b, db, "/nix/store", n, randomGraph(n))
	d, err := OpenDB(db, "/nix/store")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d, paths
}

func BenchmarkClosure(b *testing.B) {
	d, paths := benchDB(b)
	ctx := context.Background()
	c, err := d.Closure(ctx, paths[3:4])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := d.Closure(ctx, paths[3:4]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(c)), "paths/op")
}

func BenchmarkQueryPathInfo(b *testing.B) {
	d, paths := benchDB(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := d.QueryPathInfo(ctx, paths[i%len(paths)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
