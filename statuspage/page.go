// Package statuspage is the status page an operator leaves open: one
// server-rendered HTML page (its charts inline SVG, no script) that
// refreshes itself, over a status.Report: the last hour's flow per stage,
// each consumer's lag, each mirror's share of the live set and its last
// pin, the dead letters with their reasons, retention, and the latest
// builds with the mirrors that hold their closures. The same report is
// served as JSON beside it (status.json), in the form `nix-ipfs status
// --json` prints. `nix-ipfs status --listen` serves it, and `nix-ipfs up`
// mounts it at /status/.
package statuspage

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/retention"
	"github.com/nix-ipfs/nix-ipfs/status"
)

// Source gives the report a page shows.
type Source interface {
	Collect(ctx context.Context) (*status.Report, error)
}

var _ Source = (*status.Collector)(nil)

//go:embed templates/*.html
var templates embed.FS

// Options configure the page.
type Options struct {
	// Refresh is how often the page reloads itself; 0 never.
	Refresh time.Duration
	// Timeout bounds one collection; 0 is 30 s.
	Timeout time.Duration
	Log     *zap.Logger
}

// Handler serves the page at its root ("/" or "/index.html" below where
// it is mounted) and the report as JSON at status.json.
type Handler struct {
	src  Source
	o    Options
	page *template.Template
}

var _ http.Handler = (*Handler)(nil)

// New returns the page's handler.
func New(src Source, o Options) *Handler {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	page := template.Must(template.New("page.html").Funcs(funcs).ParseFS(templates, "templates/page.html"))
	return &Handler{src: src, o: o, page: page}
}

// Bar geometry of the flow charts: FlowBuckets bars of barWidth in a
// 240x28 box, a pixel kept for the base line.
const (
	barWidth  = 18
	barStep   = 20
	barHeight = 26
)

var funcs = template.FuncMap{
	"bytes": retention.Bytes,
	"join":  strings.Join,
	"barX":  func(i int) int { return i*barStep + 1 },
	"barH":  func(v, max int) int { return barLen(v, max) },
	"barY":  func(v, max int) int { return 1 + barHeight - barLen(v, max) },
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f", 100*f) },
	"stageColor": func(i int) string {
		return []string{"#6172f3", "#12b76a", "#0ba5ec", "#98a2b3", "#f04438"}[i%5]
	},
	"ago": ago,
}

// barLen is a bucket's bar height: at least 2 pixels for any event, so
// one event among thousands still shows.
func barLen(v, max int) int {
	if v <= 0 || max <= 0 {
		return 0
	}
	return min(barHeight, 2+(barHeight-2)*v/max)
}

// ago says how long before now t was, for a person: "12s", "5m", "3h",
// "2d"; "never" for the zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

type pageData struct {
	R       *status.Report
	O       *status.Overview
	Dead    []status.DeadLetter // newest first
	Refresh int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch strings.TrimPrefix(r.URL.Path, "/") {
	case "", "index.html":
	case "status.json":
		h.serveJSON(w, r)
		return
	default:
		http.NotFound(w, r)
		return
	}
	rep, err := h.collect(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	d := pageData{R: rep, O: rep.Overview, Refresh: int(h.o.Refresh / time.Second)}
	d.Dead = slices.Clone(rep.LastDead)
	slices.Reverse(d.Dead)
	var b bytes.Buffer
	if err := h.page.Execute(&b, d); err != nil {
		h.fail(w, fmt.Errorf("render: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

func (h *Handler) serveJSON(w http.ResponseWriter, r *http.Request) {
	rep, err := h.collect(r.Context())
	if err != nil {
		h.fail(w, err)
		return
	}
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

func (h *Handler) collect(ctx context.Context) (*status.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, h.o.Timeout)
	defer cancel()
	rep, err := h.src.Collect(ctx)
	if err != nil {
		return nil, err
	}
	if rep.Overview == nil {
		return nil, fmt.Errorf("the report has no overview (not from a status.Collector)")
	}
	return rep, nil
}

// fail answers 503: the page cannot say anything while NATS does not
// answer, and says so; a refresh tries again.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	h.o.Log.Warn("status page", zap.Error(err))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.o.Refresh > 0 {
		w.Header().Set("Refresh", fmt.Sprint(int(h.o.Refresh/time.Second)))
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, "nix-ipfs status: %v\n", err)
}
