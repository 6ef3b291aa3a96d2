package upstream

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestFailoverAndProbe: an upstream answering 5xx is left out and probed;
// requests go to the next meanwhile; once it answers its probe it is asked
// first again; Close ends the probe (goleak checks that nothing outlives
// the test).
func TestFailoverAndProbe(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	var asked atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path != "/nix-cache-info" {
			asked.Add(1)
		}
		io.WriteString(w, "origin")
	}))
	defer origin.Close()
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "mirror")
	}))
	defer mirror.Close()
	u, err := New(Options{URLs: []string{origin.URL, mirror.URL}, ProbeInterval: 10 * time.Millisecond, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	get := func() string {
		t.Helper()
		resp, err := u.Get(context.Background(), http.MethodGet, "x.narinfo", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "mirror" {
		t.Fatalf("with the origin down: %q", got)
	}
	broken.Store(false)
	for deadline := time.Now().Add(10 * time.Second); get() != "origin"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the origin, up again, was not asked first again")
		}
	}
	if asked.Load() == 0 {
		t.Error("origin never asked")
	}
	// Down again: a probe runs when Close is called.
	broken.Store(true)
	get()
}

// TestIsNotFound: what Nix reads as a missing file.
func TestIsNotFound(t *testing.T) {
	for code, want := range map[int]bool{200: false, 403: true, 404: true, 410: true, 500: false} {
		if IsNotFound(code) != want {
			t.Errorf("IsNotFound(%d) = %v", code, !want)
		}
	}
}
