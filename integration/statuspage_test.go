package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/status"
)

// browser starts Debian's chromium headless with a fresh profile and
// returns a context to drive it with.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := testenv.NeedProgram(t, "chromium")
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800))
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel3)
	return ctx
}

// figuresJS collects every figure the page marks (data-figure), by name:
// its data-value when it has one, else its text.
const figuresJS = `Object.fromEntries([...document.querySelectorAll('[data-figure]')].map(e => [e.dataset.figure, e.dataset.value ?? e.textContent.trim()]))`

// expectedFigures are the figures a page must show for report r.
func expectedFigures(r *status.Report) map[string]string {
	f := map[string]string{"dead_letters": fmt.Sprint(r.DeadLetters), "live/paths": fmt.Sprint(r.Overview.Live.Paths)}
	for _, c := range r.Consumers {
		f["consumer/"+c.Name+"/pending"] = fmt.Sprint(c.Pending)
		f["consumer/"+c.Name+"/ack_pending"] = fmt.Sprint(c.AckPending)
	}
	for _, m := range r.Overview.Mirrors {
		f["mirror/"+m.Name+"/holds"] = fmt.Sprint(m.Holds)
	}
	for _, s := range r.Overview.Flow.Stages {
		f["flow/"+s.Name] = fmt.Sprint(s.Total)
	}
	for i, b := range r.Overview.Builds {
		v := "unpublished"
		if b.Published {
			v = strings.Join(b.Mirrors, ",")
		}
		f[fmt.Sprintf("build/%d/mirrors", i)] = v
	}
	for _, d := range r.LastDead {
		f[fmt.Sprintf("dead/%d/reason", d.Seq)] = d.Reason
	}
	if rt := r.Retention; rt != nil {
		f["retention/cache_bytes"] = fmt.Sprint(rt.CacheBytes)
		f["retention/kept_bytes"] = fmt.Sprint(rt.KeptBytes())
		f["retention/would_free"] = fmt.Sprint(rt.WouldFree)
	}
	return f
}

// TestStatusPageInBrowser: `nix-ipfs status --listen` over a real
// pipeline (a nix-build through the hook, the publisher binary, a mirror
// binary pinning on a second kubo, a garbage event the publisher
// dead-letters), loaded in Debian's chromium: every figure the page shows
// equals what `nix-ipfs status --json` prints for the same moment, the
// page fits 1280x800 and a phone's width without sideways scrolling, it
// asks to be refreshed, and screenshots of both are written.
func TestStatusPageInBrowser(t *testing.T) {
	testenv.NeedProgram(t, "chromium")
	start := time.Now()
	h := newOpsHost(t)
	h.startMirror(t)
	top := h.nix.Build(t, opsClosure(testenv.Nonce()))[0]
	h.waitReplicated(t, top, 1, 3*time.Minute)
	// A second build: two rows of latest builds. Waited for as well, so
	// the figures stand still while they are compared.
	top2 := h.nix.Build(t, opsClosure(testenv.Nonce()))[0]
	h.waitReplicated(t, top2, 1, 3*time.Minute)
	t.Logf("%s: two closures replicated", time.Since(start))

	_, js := h.nats.Connect(t)
	if _, err := js.Publish(context.Background(), events.SubjectBuilt, []byte(`{"type":"nixipfs.built.v2","garbage":true}`)); err != nil {
		t.Fatal(err)
	}
	statusArgs := []string{"--cache-dir", h.cache, "--keep-for", "1h", "--status-timeout", "1m"}
	var report status.Report
	testenv.Eventually(t, time.Minute, "the garbage dead-lettered and every consumer caught up", func() bool {
		out, code := h.nixIPFS(t, append([]string{"status", "--json"}, statusArgs...)...)
		if code != 0 {
			t.Fatalf("status --json: exit %d\n%s", code, out)
		}
		report = status.Report{}
		if err := json.Unmarshal([]byte(out), &report); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		for _, c := range report.Consumers {
			if c.Pending > 0 || c.AckPending > 0 {
				return false
			}
		}
		return report.DeadLetters == 1 && len(report.Consumers) >= 2
	})

	t.Logf("%s: the pipeline stands still", time.Since(start))
	addr := freeAddr(t)
	page := "http://" + addr + "/"
	testenv.StartProc(t, filepath.Join(h.bin, "nix-ipfs"), append([]string{"status", "--listen", addr, "--refresh", "5s"}, statusArgs...),
		"NIX_IPFS_NATS_URL="+h.nats.URL)
	testenv.Eventually(t, 30*time.Second, "the status page serving", func() bool { return httpOK(page) })

	ctx := browser(t)
	// The page in a browser, and the JSON of the same moment: nothing
	// moves in the pipeline now, so both describe one state.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("main"))); err != nil {
		t.Fatalf("load %s in chromium: %v", page, err)
	}
	figs, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](figuresJS))
	if err != nil {
		t.Fatal(err)
	}
	out, code := h.nixIPFS(t, append([]string{"status", "--json"}, statusArgs...)...)
	if code != 0 {
		t.Fatalf("status --json: exit %d\n%s", code, out)
	}
	report = status.Report{}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatal(err)
	}
	delete(figs, "now")
	want := expectedFigures(&report)
	if !reflect.DeepEqual(figs, want) {
		t.Errorf("the page's figures differ from status --json:\npage: %v\njson: %v", figs, want)
	}
	// Not an empty match: the pipeline's work is on the page (four
	// builds, a derivation each, and the garbage on the built subject).
	for name, v := range map[string]string{"mirror/b/holds": "4", "dead_letters": "1", "flow/built": "5", "live/paths": "4",
		"build/0/mirrors": "b", "build/1/mirrors": "b", "consumer/publisher/pending": "0"} {
		if figs[name] != v {
			t.Errorf("page figure %s = %q, want %q", name, figs[name], v)
		}
	}
	if len(report.LastDead) != 1 || report.LastDead[0].Reason == "" || figs[fmt.Sprintf("dead/%d/reason", report.LastDead[0].Seq)] == "" {
		t.Errorf("the dead letter's reason is not on the page: %+v", report.LastDead)
	}

	refresh, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('meta[http-equiv=refresh]').content`))
	if err != nil || refresh != "5" {
		t.Errorf("meta refresh = %q, %v", refresh, err)
	}
	dir := os.Getenv("NIX_IPFS_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, v := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{{"status-page.png", 1280, 800, false}, {"status-page-phone.png", 390, 844, true}} {
		opts := []chromedp.EmulateViewportOption{}
		if v.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(v.width, v.height, opts...), chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("main"))); err != nil {
			t.Fatal(err)
		}
		overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		if err != nil || overflow {
			t.Errorf("%dx%d: the page is wider than the window (%v)", v.width, v.height, err)
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if v.width == 1280 {
			// What 1280x800 shows without scrolling.
			if shot, err = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, v.name)
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s (%d bytes)", p, len(shot))
	}
}

// TestStatusPageInUp: `nix-ipfs up` serves the same page at /status/
// (without retention: up runs no prune), and after a real build through
// the hook its figures in chromium equal what `nix-ipfs status --json`
// prints against up's embedded NATS.
func TestStatusPageInUp(t *testing.T) {
	testenv.NeedProgram(t, "ipfs")
	testenv.NeedProgram(t, "chromium")
	n := testenv.NewNix(t)
	bin := testenv.Binaries(t)
	natsAddr, httpAddr := freeAddr(t), freeAddr(t)
	testenv.StartProc(t, filepath.Join(bin, "nix-ipfs"), []string{"up",
		"--data-dir", t.TempDir(), "--secret-key-file", n.SecretKey,
		"--nats-listen", natsAddr, "--listen", httpAddr, "--kubo-init-profile", "test", "--log-format", "console"},
		"IPFS_PATH="+filepath.Join(t.TempDir(), "no-kubo-here"))
	base := "http://" + httpAddr
	testenv.Eventually(t, 90*time.Second, "nix-ipfs up serving", func() bool { return httpOK(base + "/nix-cache-info") })
	n.Hook = filepath.Join(bin, "nix-ipfs-hook")
	empty := filepath.Join(t.TempDir(), "hook.conf")
	must(t, os.WriteFile(empty, nil, 0o644))
	n.Env = []string{"NIX_IPFS_NATS_URL=nats://" + natsAddr, "NIX_IPFS_CONFIG=" + empty,
		"NIX_IPFS_SPOOL_DIR=" + filepath.Join(t.TempDir(), "spool")}
	n.Build(t, opsClosure(testenv.Nonce()))

	var report status.Report
	testenv.Eventually(t, 2*time.Minute, "the closure published and the publisher caught up", func() bool {
		out, err := exec.Command(filepath.Join(bin, "nix-ipfs"), "status", "--json", "--nats-url", "nats://"+natsAddr).Output()
		if err != nil {
			return false
		}
		report = status.Report{}
		if json.Unmarshal(out, &report) != nil || report.Overview == nil {
			return false
		}
		for _, c := range report.Consumers {
			if c.Pending > 0 || c.AckPending > 0 {
				return false
			}
		}
		return report.Overview.Live.Paths == 2
	})
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/status/"), chromedp.WaitVisible(chromedp.CSS("main"))); err != nil {
		t.Fatalf("load %s/status/ in chromium: %v", base, err)
	}
	figs, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](figuresJS))
	if err != nil {
		t.Fatal(err)
	}
	delete(figs, "now")
	if want := expectedFigures(&report); !reflect.DeepEqual(figs, want) {
		t.Errorf("up's page differs from status --json:\npage: %v\njson: %v", figs, want)
	}
	if figs["live/paths"] != "2" || figs["flow/published"] != "2" || figs["build/0/mirrors"] != "" {
		t.Errorf("up's page: %v (want 2 paths published, no mirror)", figs)
	}
	if !httpOK(base + "/status/status.json") {
		t.Error("up does not serve /status/status.json")
	}
}
