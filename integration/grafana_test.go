package integration

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// dashboardQueries returns every PromQL expression of the Grafana dashboard
// in deploy/grafana, by panel title.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, "deploy/grafana/nix-ipfs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy/grafana/nix-ipfs.json: %v", err)
	}
	out := map[string][]string{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	return out
}

var metricNameRE = regexp.MustCompile(`\bnixipfs_[a-z0-9_]+`)

// scrapeFamilies returns the metric families a /metrics page declares
// (# TYPE lines), with their types.
func scrapeFamilies(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// TestGrafanaDashboardQueriesRealMetrics: every metric the dashboard in
// deploy/grafana queries exists on the /metrics of the real workers (the
// publisher, a mirror and a substituter binary) after they did real work: a
// nix-build published, pinned on B, and its NAR served from IPFS by the
// substituter. The dashboard covers lag per consumer, publish and pin rates,
// dead letters and substituter sources.
func TestGrafanaDashboardQueriesRealMetrics(t *testing.T) {
	queries := dashboardQueries(t)
	wanted := map[string]bool{}
	var all []string
	for _, exprs := range queries {
		for _, e := range exprs {
			all = append(all, e)
			for _, m := range metricNameRE.FindAllString(e, -1) {
				wanted[m] = true
			}
		}
	}
	joined := strings.Join(all, "\n")
	for _, need := range []string{"nixipfs_consumer_pending", "nixipfs_publisher_paths_total", "nixipfs_mirror_pins_total",
		`outcome="dead_lettered"`, "nixipfs_substituter_nars_total"} {
		if !strings.Contains(joined, need) {
			t.Errorf("the dashboard does not query %s", need)
		}
	}

	a := newHostA(t)
	pubMetrics, mirMetrics := freeAddr(t), freeAddr(t)
	a.startPublisher(t, "--metrics-addr", pubMetrics)
	b := testenv.StartKubo(t)
	testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), []string{"mirror", "--name", "b", "--metrics-addr", mirMetrics},
		mirEnv(a.nats.URL, b.API)...)
	top := a.nix.Build(t, testenv.Drv("grafana-"+testenv.Nonce(), `echo dashboards > $out`, ""))[0]
	ni := a.waitPublished(t, []string{top}, 2*time.Minute)[top]
	testenv.Eventually(t, 2*time.Minute, "pinned on B", func() bool { return mirPins(t, b)[ni.IPFSHash] })

	sub := startSubstituterProc(t, a.bin, "file://"+a.cache, "--kubo-api", b.API)
	fetchThrough(t, sub, top)
	sub.waitNars(t, 1, `source="ipfs"`)
	// And one request it refuses.
	if resp, err := http.Post(sub.URL+"/nix-cache-info", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the substituter: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	urls := []string{"http://" + pubMetrics + "/metrics", "http://" + mirMetrics + "/metrics", sub.metrics}
	var missing []string
	// The consumers' lag is sampled every few seconds: wait for it.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		have := map[string]string{}
		for _, u := range urls {
			for name, typ := range scrapeFamilies(t, u) {
				have[name] = typ
			}
		}
		missing = missing[:0]
		for m := range wanted {
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b := strings.TrimSuffix(m, suffix); b != m && have[b] == "histogram" {
					base = b
				}
			}
			if have[base] == "" {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("the dashboard queries metrics no worker exposes: %v", missing)
	}
}
