package mirrorfill

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Outcome is what became of one item of a batch (replay, backfill).
type Outcome int

const (
	// Pinned now.
	OutPinned Outcome = iota
	// AlreadyPinned before: skipped fast.
	OutAlready
	// Failed after its attempts; a later run retries it.
	OutFailed
	// Skipped for good: an invalid event, a narinfo without IPFSHash, a
	// path not in the cache.
	OutSkipped
)

// Tally counts outcomes.
type Tally struct {
	Pinned, Already, Failed, Skipped int64
}

func (t *Tally) add(o Outcome) {
	switch o {
	case OutPinned:
		t.Pinned++
	case OutAlready:
		t.Already++
	case OutFailed:
		t.Failed++
	case OutSkipped:
		t.Skipped++
	}
}

// Done is the number of items handled.
func (t Tally) Done() int64 { return t.Pinned + t.Already + t.Failed + t.Skipped }

func (t Tally) String() string {
	s := fmt.Sprintf("%d pinned, %d already pinned, %d failed", t.Pinned, t.Already, t.Failed)
	if t.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", t.Skipped)
	}
	return s
}

// Progress shows a batch's progress to a person.
type Progress interface {
	// Start says how many items there are.
	Start(total int64)
	// Step records one item's outcome. Safe for concurrent use.
	Step(o Outcome)
	// Finish ends the display, complete or not.
	Finish()
}

// Progress modes.
const (
	ProgressAuto  = "auto"
	ProgressBar   = "bar"
	ProgressLines = "lines"
	ProgressNone  = "none"
)

// NewProgress returns a progress display on w: a bar (done/total, rate,
// ETA) when mode is "bar", or "auto" and w is a terminal; a line every
// interval when mode is "lines", or "auto" and w is not a terminal (a log, a
// CI job); nothing for "none".
func NewProgress(mode string, w io.Writer, label string, interval time.Duration) (Progress, error) {
	switch mode {
	case ProgressAuto, "":
		if isTerminal(w) {
			return newBarProgress(w, label), nil
		}
		return newLineProgress(w, label, interval), nil
	case ProgressBar:
		return newBarProgress(w, label), nil
	case ProgressLines:
		return newLineProgress(w, label, interval), nil
	case ProgressNone:
		return noProgress{}, nil
	}
	return nil, fmt.Errorf("--progress %q: want auto, bar, lines or none", mode)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

type noProgress struct{}

func (noProgress) Start(int64)  {}
func (noProgress) Step(Outcome) {}
func (noProgress) Finish()      {}

// lineProgress prints plain lines, for output that is not a terminal.
type lineProgress struct {
	w     io.Writer
	label string
	every time.Duration
	now   func() time.Time

	mu          sync.Mutex
	total       int64
	t           Tally
	start, last time.Time
}

func newLineProgress(w io.Writer, label string, every time.Duration) *lineProgress {
	if every <= 0 {
		every = 10 * time.Second
	}
	return &lineProgress{w: w, label: label, every: every, now: time.Now}
}

func (p *lineProgress) Start(total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = total
	p.start = p.now()
	p.last = p.start
	fmt.Fprintf(p.w, "%s: %d to do\n", p.label, total)
}

func (p *lineProgress) Step(o Outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.add(o)
	if now := p.now(); now.Sub(p.last) >= p.every && p.t.Done() < p.total {
		p.last = now
		fmt.Fprintln(p.w, p.line(now))
	}
}

func (p *lineProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	fmt.Fprintf(p.w, "%s in %s\n", p.line(now), now.Sub(p.start).Round(time.Millisecond))
}

// line is "label: done/total (pct%), tally; rate/s, ETA d".
func (p *lineProgress) line(now time.Time) string {
	done := p.t.Done()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d/%d", p.label, done, p.total)
	if p.total > 0 {
		fmt.Fprintf(&b, " (%.0f%%)", 100*float64(done)/float64(p.total))
	}
	fmt.Fprintf(&b, ", %s", p.t)
	if el := now.Sub(p.start).Seconds(); el > 0 && done > 0 {
		rate := float64(done) / el
		fmt.Fprintf(&b, "; %.1f/s", rate)
		if left := p.total - done; left > 0 {
			eta := time.Duration(float64(left) / rate * float64(time.Second))
			fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
		}
	}
	return b.String()
}

// barProgress draws a progress bar on a terminal.
type barProgress struct {
	w     io.Writer
	label string

	mu  sync.Mutex
	bar *progressbar.ProgressBar
	t   Tally
}

func newBarProgress(w io.Writer, label string) *barProgress {
	return &barProgress{w: w, label: label}
}

func (p *barProgress) Start(total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if total <= 0 {
		fmt.Fprintf(p.w, "%s: nothing to do\n", p.label)
		return
	}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.label),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("paths"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(barThrottle),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

func (p *barProgress) Step(o Outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.add(o)
	if p.bar == nil {
		return
	}
	if o == OutFailed {
		// Shown with the next render.
		p.bar.Describe(fmt.Sprintf("%s (%d failed)", p.label, p.t.Failed))
	}
	p.bar.Add(1)
}

// barThrottle bounds how often the bar is redrawn: a replay skipping pinned
// CIDs steps thousands of times a second.
const barThrottle = 100 * time.Millisecond

func (p *barProgress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil && !p.bar.IsFinished() {
		// Interrupted or cut short: draw the last state, which the
		// throttle may have held back, and leave it on screen.
		time.Sleep(barThrottle)
		p.bar.Add(0)
		p.bar.Exit()
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.label, p.t)
}
