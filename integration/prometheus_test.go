package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// promServer is a Debian prometheus process and its HTTP API.
type promServer struct {
	URL string
}

// startPrometheus runs prometheus with config (YAML) and rules (file name
// to content) in a directory of its own, and waits until it is ready.
func startPrometheus(t *testing.T, config string, rules map[string]string) *promServer {
	t.Helper()
	bin := testenv.NeedProgram(t, "prometheus")
	dir := t.TempDir()
	for name, body := range rules {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	must(t, os.WriteFile(cfg, []byte(config), 0o644))
	addr := freeAddr(t)
	testenv.StartProc(t, bin, []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--log.level=info"})
	p := &promServer{URL: "http://" + addr}
	testenv.Eventually(t, time.Minute, "prometheus ready", func() bool { return httpOK(p.URL + "/-/ready") })
	return p
}

// query runs an instant query and returns its result (a vector's
// samples, or nil) and the error Prometheus gave.
func (p *promServer) query(expr string) ([]json.RawMessage, error) {
	resp, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	return r.Data.Result, nil
}

// alerts returns the state of each active alert by name ("pending",
// "firing"); an alert not in it is inactive.
func (p *promServer) alerts(t *testing.T) map[string]string {
	t.Helper()
	resp, err := http.Get(p.URL + "/api/v1/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range r.Data.Alerts {
		if out[a.Labels["alertname"]] != "firing" {
			out[a.Labels["alertname"]] = a.State
		}
	}
	return out
}

func (p *promServer) waitFiring(t *testing.T, alert string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, alert+" firing", func() bool { return p.alerts(t)[alert] == "firing" })
}

var forRE = regexp.MustCompile(`(?m)^(\s+for:\s*)\S+$`)

// TestPrometheusRulesCheck: promtool accepts the shipped alert rules and
// the example configuration that loads them.
func TestPrometheusRulesCheck(t *testing.T) {
	promtool := testenv.NeedProgram(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", repoFile(t, "deploy/prometheus/nix-ipfs-alerts.yml")},
		{"check", "config", repoFile(t, "deploy/prometheus/prometheus.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	b, err := os.ReadFile(repoFile(t, "deploy/prometheus/nix-ipfs-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"NixIPFSPublisherDown", "NixIPFSConsumerLagging", "NixIPFSDeadLettersRising", "NixIPFSMirrorShortOfLiveSet", "NixIPFSSubstituterFallingBack"} {
		if !strings.Contains(string(b), "alert: "+name+"\n") {
			t.Errorf("the rules lack %s", name)
		}
	}
}

// TestPrometheusScrapesPipeline: Debian's prometheus scrapes a real
// pipeline (the publisher, a mirror and a substituter binary, each on its
// --metrics-addr, and `nix-ipfs status --listen`) that did real work: a
// nix-build published and pinned, one NAR served from IPFS and one over
// HTTP, a request refused, a garbage event dead-lettered by the publisher
// and one by the mirror. Then every expression of the Grafana dashboard
// returns data through Prometheus's HTTP API; and the shipped alert rules,
// loaded with their `for:` cut to seconds, fire once their condition is
// made true (dead letters; a mirror stopped while a build is published;
// the publisher killed), and not before.
func TestPrometheusScrapesPipeline(t *testing.T) {
	testenv.NeedProgram(t, "prometheus")
	h := newOpsHost(t)
	h.startMirror(t)
	top := h.nix.Build(t, opsClosure(testenv.Nonce()))[0]
	h.waitReplicated(t, top, 1, 3*time.Minute)
	closure := closureOf(t, h.nix, top)
	infos := h.waitPublished(t, closure, time.Minute)

	sub := startSubstituterProc(t, h.bin, "file://"+h.cache, "--kubo-api", h.b.API)
	get := func(u string) int {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// From IPFS: the narinfo, then its NAR.
	fetchThrough(t, sub, top)
	sub.waitNars(t, 1, `source="ipfs"`)
	// Over HTTP: a NAR asked for without its narinfo first.
	var dep string
	for _, p := range closure {
		if p != top {
			dep = p
		}
	}
	if code := get(sub.URL + "/" + infos[dep].URL); code != 200 {
		t.Fatalf("NAR of %s: %d", dep, code)
	}
	if n := sub.nars(t, `source="upstream"`); n != 1 {
		t.Fatalf("NARs from upstream: %v, want 1", n)
	}
	if resp, err := http.Post(sub.URL+"/nix-cache-info", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST to the substituter: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	statusAddr := freeAddr(t)
	testenv.StartProc(t, filepath.Join(h.bin, "nix-ipfs"), []string{"status", "--listen", statusAddr}, "NIX_IPFS_NATS_URL="+h.nats.URL)
	testenv.Eventually(t, 30*time.Second, "status --listen serving", func() bool { return httpOK("http://" + statusAddr + "/metrics") })

	rules, err := os.ReadFile(repoFile(t, "deploy/prometheus/nix-ipfs-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// The shipped rules, waiting seconds instead of minutes.
	fast := forRE.ReplaceAllString(string(rules), "${1}2s")
	if fast == string(rules) {
		t.Fatal("no for: in the rules to shorten")
	}
	subMetrics := strings.TrimSuffix(strings.TrimPrefix(sub.metrics, "http://"), "/metrics")
	prom := startPrometheus(t, fmt.Sprintf(`
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [nix-ipfs-alerts.yml]
scrape_configs:
  - job_name: nix-ipfs-publisher
    static_configs: [{targets: [%q]}]
  - job_name: nix-ipfs-mirror
    static_configs: [{targets: [%q]}]
  - job_name: nix-ipfs-substituter
    static_configs: [{targets: [%q]}]
  - job_name: nix-ipfs-status
    static_configs: [{targets: [%q]}]
`, h.pubMetrics, h.mirMetrics, subMetrics, statusAddr), map[string]string{"nix-ipfs-alerts.yml": fast})

	// Every dashboard expression returns data. The dead letters come
	// after Prometheus's first scrape: an increase needs the counter seen
	// before it rose.
	testenv.Eventually(t, time.Minute, "the first scrape of every target", func() bool {
		r, err := prom.query(`count(up == 1) == 4`)
		return err == nil && len(r) == 1
	})
	if p := prom.alerts(t); p["NixIPFSDeadLettersRising"] != "" || p["NixIPFSPublisherDown"] != "" || p["NixIPFSMirrorShortOfLiveSet"] != "" {
		t.Errorf("alerts before their conditions: %v", p)
	}
	_, js := h.nats.Connect(t)
	ctx := context.Background()
	for _, subj := range []string{events.SubjectBuilt, events.SubjectPublished} {
		if _, err := js.Publish(ctx, subj, []byte(`{"garbage":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	queries := dashboardQueries(t)
	var titles []string
	for title := range queries {
		titles = append(titles, title)
	}
	sort.Strings(titles)
	deadline := time.Now().Add(2 * time.Minute)
	for _, title := range titles {
		for _, expr := range queries[title] {
			var res []json.RawMessage
			var err error
			for {
				res, err = prom.query(expr)
				if (err == nil && len(res) > 0) || time.Now().After(deadline) {
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
			if err != nil || len(res) == 0 {
				t.Errorf("panel %q: %s returns no data (%v)", title, expr, err)
			} else {
				t.Logf("panel %q: %s -> %s", title, expr, res[0])
			}
		}
	}

	// The alerts, each once its condition holds.
	prom.waitFiring(t, "NixIPFSDeadLettersRising")
	if a := prom.alerts(t); a["NixIPFSMirrorShortOfLiveSet"] != "" || a["NixIPFSPublisherDown"] != "" {
		t.Errorf("alerts whose condition does not hold: %v", a)
	}
	h.mirror.Signal(syscall.SIGKILL)
	top2 := h.nix.Build(t, opsClosure(testenv.Nonce()))[0]
	h.waitPublished(t, closureOf(t, h.nix, top2), time.Minute)
	prom.waitFiring(t, "NixIPFSMirrorShortOfLiveSet")
	h.pub.Signal(syscall.SIGKILL)
	prom.waitFiring(t, "NixIPFSPublisherDown")
}
