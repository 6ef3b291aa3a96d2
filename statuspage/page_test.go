package statuspage

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/replication"
	"github.com/nix-ipfs/nix-ipfs/status"
)

// fixed is a Source with one report: a unit test of the rendering only
// (integration/statuspage_test.go runs the page over a real pipeline, in
// a real browser).
type fixed struct {
	r   *status.Report
	err error
}

func (f fixed) Collect(context.Context) (*status.Report, error) { return f.r, f.err }

func report() *status.Report {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	flow := &status.Flow{Since: now.Add(-time.Hour), Bucket: 5 * time.Minute}
	for i, n := range []string{"built", "published", "pinned", "retired", "dead letters"} {
		b := make([]int, status.FlowBuckets)
		b[11] = i
		flow.Stages = append(flow.Stages, status.Stage{Name: n, Total: i, Buckets: b})
	}
	return &status.Report{Stream: "NIXIPFS", Messages: 9, DeadLetters: 1,
		Consumers: []status.Consumer{{Name: "mirror-b", Role: "mirror", Pending: 3, AckPending: 1}},
		LastDead:  []status.DeadLetter{{Seq: 4, Time: now.Add(-time.Minute), Subject: "nixipfs.built", Kind: "invalid", Reason: "no <out_paths>"}},
		Retention: &status.Retention{CacheBytes: 3000, WouldFree: 1000, Policy: "--keep-for 1h"},
		Overview: &status.Overview{Now: now, Flow: flow, Live: replication.Live{Paths: 2, Bytes: 2000},
			Mirrors: []replication.MirrorShare{{Name: "b", Holds: 1, Live: 2, Share: 0.5, LastPin: now.Add(-90 * time.Second)}},
			Builds: []replication.BuildReport{{Build: replication.Build{Time: now, OutPaths: []string{"/nix/store/x-top"}, Job: "p:j:top"},
				Published: true, Mirrors: []string{"b", "c"}}}},
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestPageRenders(t *testing.T) {
	h := New(fixed{r: report()}, Options{Refresh: 5 * time.Second})
	code, body := get(t, h, "/")
	if code != 200 {
		t.Fatalf("GET /: %d\n%s", code, body)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`data-figure="consumer/mirror-b/pending">3<`,
		`data-figure="mirror/b/holds">1<`,
		`data-figure="dead_letters">1<`,
		`no &lt;out_paths&gt;`, // escaped
		`data-figure="flow/dead letters">4<`,
		`data-value="b,c"`,
		`data-figure="retention/kept_bytes" data-value="2000"`,
		`1m ago`,
		`<svg`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("the page has a script")
	}
	code, body = get(t, h, "/status.json")
	if code != 200 || !strings.Contains(body, `"overview"`) || !strings.Contains(body, `"stream": "NIXIPFS"`) {
		t.Errorf("GET /status.json: %d\n%s", code, body)
	}
	if code, _ := get(t, h, "/other"); code != 404 {
		t.Errorf("GET /other: %d", code)
	}
}

func TestPageFailsWithReason(t *testing.T) {
	h := New(fixed{err: errors.New("nats: no servers available")}, Options{Refresh: 5 * time.Second})
	code, body := get(t, h, "/")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no servers available") {
		t.Errorf("GET / with NATS down: %d %s", code, body)
	}
}

func TestAgo(t *testing.T) {
	now := time.Unix(100000, 0)
	for d, want := range map[time.Duration]string{5 * time.Second: "5s ago", 3 * time.Minute: "3m ago", 5 * time.Hour: "5h ago", 72 * time.Hour: "3d ago"} {
		if got := ago(now, now.Add(-d)); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
	if ago(now, time.Time{}) != "never" {
		t.Error("zero time")
	}
}
