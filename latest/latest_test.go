package latest

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nix-ipfs/nix-ipfs/cachedir"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/schemas"
)

const (
	out1 = "/nix/store/0c0b7pvwvr2ab8h5q0gbm2whsbn9hbsd-hello-2.12.1"
	out2 = "/nix/store/1f2d6sclidc2ps8j2cp6p1jfw7dwqrmr-hello-2.12.1-man"
	drv  = "/nix/store/2lqiq6fqi0v7jjlc6zgpdr8wfw35z8yw-hello-2.12.1.drv"
)

func keys(t *testing.T, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

func signed(t *testing.T, sk signature.SecretKey, built time.Time, seq uint64, outs ...string) *Doc {
	t.Helper()
	d := New("proj:main:hello", built, seq, drv, 42, outs)
	if err := d.Sign(sk); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRoundTripAndVerify(t *testing.T) {
	sk, pk := keys(t, "cache-1")
	_, other := keys(t, "other-1")
	d := signed(t, sk, time.Unix(1700000000, 5), 7, out2, out1)
	if d.Outputs[0] != out1 {
		t.Fatalf("outputs not sorted: %v", d.Outputs)
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(bytes.NewReader(b), "/nix/store")
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify([]signature.PublicKey{other, pk}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := got.Verify([]signature.PublicKey{other}); !errors.Is(err, ErrUntrusted) || !errs.Is(err, errs.Corrupt) {
		t.Fatalf("Verify by an unknown key = %v, want ErrUntrusted", err)
	}
	// Every signed field is bound: change any and the signature fails.
	for name, change := range map[string]func(*Doc){
		"job":     func(d *Doc) { d.Job = "proj:main:other" },
		"built":   func(d *Doc) { d.Built = d.Built.Add(time.Nanosecond) },
		"seq":     func(d *Doc) { d.Seq++ },
		"drv":     func(d *Doc) { d.DrvPath = "" },
		"hydra":   func(d *Doc) { d.HydraBuild = 43 },
		"outputs": func(d *Doc) { d.Outputs = d.Outputs[:1] },
	} {
		c := *got
		change(&c)
		if err := c.Verify([]signature.PublicKey{pk}); err == nil || errors.Is(err, ErrUntrusted) {
			t.Errorf("%s changed: Verify = %v, want a signature that does not verify", name, err)
		}
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	sk, _ := keys(t, "cache-1")
	good, _ := signed(t, sk, time.Unix(1700000000, 0), 1, out1).Marshal()
	for name, in := range map[string]string{
		"empty":         "",
		"not json":      "hello",
		"array":         "[]",
		"other type":    strings.Replace(string(good), Type, "nixipfs.latest.v2", 1),
		"unknown field": strings.Replace(string(good), `"job"`, `"extra": 1, "job"`, 1),
		"bad job":       strings.Replace(string(good), "proj:main:hello", "../etc/passwd", 1),
		"bad output":    strings.Replace(string(good), out1, "/etc/passwd", 1),
		"other store":   strings.Replace(string(good), out1, "/gnu/store/0c0b7pvwvr2ab8h5q0gbm2whsbn9hbsd-hello-2.12.1", 1),
		"trailing":      string(good) + "{}",
		"too large":     strings.Repeat(" ", MaxSize+1) + string(good),
		"no sigs":       strings.Replace(string(good), `"sigs": [`, `"sigs": [], "x": [`, 1),
	} {
		if _, err := Parse(strings.NewReader(in), "/nix/store"); err == nil || !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Parse = %v, want an Invalid error", name, err)
		}
	}
}

func TestStateRefusesRollback(t *testing.T) {
	sk, _ := keys(t, "cache-1")
	st := State{Dir: t.TempDir()}
	t0 := time.Unix(1700000000, 0)
	older, newer := signed(t, sk, t0, 1, out1), signed(t, sk, t0.Add(time.Hour), 2, out2)
	if err := st.Accept(older); err != nil {
		t.Fatal(err)
	}
	if err := st.Accept(newer); err != nil {
		t.Fatal(err)
	}
	if err := st.Accept(newer); err != nil {
		t.Fatalf("the same document again: %v", err)
	}
	if err := st.Accept(older); !errors.Is(err, ErrRollback) {
		t.Fatalf("older document after newer: %v, want ErrRollback", err)
	}
	// Same instant: the sequence orders.
	sameTime := signed(t, sk, t0.Add(time.Hour), 1, out1)
	if err := st.Accept(sameTime); !errors.Is(err, ErrRollback) {
		t.Fatalf("same time, lower seq: %v, want ErrRollback", err)
	}
}

func TestGet(t *testing.T) {
	sk, _ := keys(t, "cache-1")
	dir := t.TempDir()
	d := signed(t, sk, time.Unix(1700000000, 0), 1, out1)
	b, _ := d.Marshal()
	if err := os.MkdirAll(filepath.Join(dir, Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName(d.Job)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	// The document of job A under job B's name is refused.
	if err := os.WriteFile(filepath.Join(dir, FileName("proj:main:evil")), b, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	ctx := context.Background()
	for _, base := range []string{srv.URL, "file://" + dir} {
		got, err := Get(ctx, srv.Client(), base, d.Job, "/nix/store")
		if err != nil || got.Fingerprint() != d.Fingerprint() {
			t.Fatalf("Get(%s) = %v, %v", base, got, err)
		}
		if _, err := Get(ctx, srv.Client(), base, "proj:main:none", ""); !errs.Is(err, errs.NotYet) {
			t.Errorf("Get of a job without a document (%s) = %v, want NotYet", base, err)
		}
		if _, err := Get(ctx, srv.Client(), base, "proj:main:evil", ""); !errs.Is(err, errs.Corrupt) {
			t.Errorf("Get of another job's document (%s) = %v, want Corrupt", base, err)
		}
	}
	if _, err := Get(ctx, srv.Client(), srv.URL, "../x", ""); !errs.Is(err, errs.Invalid) {
		t.Errorf("Get of a bad job name = %v", err)
	}
}

// What Marshal writes is valid under the published schema, and what the
// schema refuses Parse refuses too.
func TestSchema(t *testing.T) {
	sk, _ := keys(t, "cache-1")
	b, err := signed(t, sk, time.Unix(1700000000, 0), 1, out1, out2).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate(Type, b); err != nil {
		t.Fatalf("schema refuses a written document: %v\n%s", err, b)
	}
	bad := bytes.Replace(b, []byte(`"job": "proj:main:hello"`), []byte(`"job": "../x"`), 1)
	if schemas.Validate(Type, bad) == nil {
		t.Fatal("schema accepts a job name with a slash")
	}
	if _, err := Parse(bytes.NewReader(bad), ""); err == nil {
		t.Fatal("Parse accepts a job name with a slash")
	}
}

func TestKeep(t *testing.T) {
	sk, _ := keys(t, "cache-1")
	c := cachedir.Cache{Dir: t.TempDir(), StoreDir: "/nix/store"}
	t0 := time.Unix(1700000000, 0)
	mk := func(at time.Time, seq uint64, out string) []byte {
		b, err := signed(t, sk, at, seq, out).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	older, newer := mk(t0, 1, out1), mk(t0.Add(time.Minute), 2, out2)
	for _, step := range []struct {
		raw    []byte
		kept   bool
		holds  []byte
		reason string
	}{
		{older, true, older, "first document"},
		{newer, true, newer, "a newer build replaces it"},
		{older, false, newer, "an older build replayed does not"},
		{newer, true, newer, "the same document again is in place"},
	} {
		kept, err := Keep(c, step.raw)
		if err != nil || kept != step.kept {
			t.Fatalf("%s: Keep = %v, %v; want %v", step.reason, kept, err, step.kept)
		}
		got, _ := c.ReadLatest("proj:main:hello")
		if !bytes.Equal(got, step.holds) {
			t.Fatalf("%s: the cache holds\n%s", step.reason, got)
		}
	}
	if _, err := Keep(c, []byte("garbage")); err == nil {
		t.Fatal("Keep accepted garbage")
	}
	other := cachedir.Cache{Dir: c.Dir, StoreDir: "/gnu/store"}
	if _, err := Keep(other, newer); err == nil {
		t.Fatal("Keep accepted a document of another store")
	}
	if jobs, err := c.LatestJobs(); err != nil || len(jobs) != 1 || jobs[0] != "proj:main:hello" {
		t.Fatalf("LatestJobs = %v, %v", jobs, err)
	}
}
