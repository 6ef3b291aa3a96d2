package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is one run's results.
type Report struct {
	Started  time.Time
	Took     time.Duration
	Quick    bool
	Rounds   int
	Flags    []string // flags given, -out aside
	Sizes    sizes
	Machine  Machine
	Sections []*Section
}

// Section is one measurement's results: summary rows for the main table
// and Markdown detail.
type Section struct {
	Key    string
	Title  string
	Rows   []Row
	Detail strings.Builder
	// NotRun says why the section could not run (a missing command).
	NotRun string
	Err    error
	Took   time.Duration
}

// Row is one line of the summary table: ratio first, then the medians it
// is made of, then the aim and whether it was met.
type Row struct {
	What  string
	Ratio float64 // NaN when the row compares nothing
	// RatioText, if set, is shown instead of Ratio (a ratio that is not a
	// speed-up).
	RatioText string
	Ours      string
	Base      string
	Aim       string
	Verdict   string // "met", "missed", or "" for a figure without an aim
}

func (s *Section) add(r Row) { s.Rows = append(s.Rows, r) }

func (s *Section) detailf(format string, args ...any) { fmt.Fprintf(&s.Detail, format, args...) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// verdictOf is verdict(ok) for a figure v, or "not run" when v is missing
// (a side left out with -sides).
func verdictOf(v float64, ok bool) string {
	if math.IsNaN(v) {
		return "not run"
	}
	return verdict(ok)
}

// Machine describes where the figures come from.
type Machine struct {
	CPUs     int
	CPUModel string
	Memory   string
	Kernel   string
	Versions string
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	if out, err := exec.Command("nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.CPUs)
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(v, &kb)
				m.Memory = fmtBytes(kb * 1024)
			}
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

func versions(b *Bench) string {
	var parts []string
	parts = append(parts, runtime.Version())
	if out, err := exec.Command("ipfs", "version", "--number").Output(); err == nil {
		parts = append(parts, "kubo "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("nix-build", "--version").Output(); err == nil {
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev := strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			rev += " + uncommitted changes"
		}
		parts = append(parts, "nix-ipfs "+rev)
	}
	return strings.Join(parts, ", ")
}

func (r *Report) sectionStatus(s *Section) string {
	switch {
	case s.NotRun != "":
		return "not run: " + s.NotRun
	case s.Err != nil:
		return "failed: " + firstLine(s.Err.Error())
	}
	return ""
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func ratioCell(row Row) string {
	r := row.Ratio
	if row.RatioText != "" {
		return row.RatioText
	}
	if math.IsNaN(r) {
		return ""
	}
	return fmtRatio(r)
}

// Table is the summary for the terminal.
func (r *Report) Table() string {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "MEASUREMENT\tRATIO\tNIX-IPFS\tBASELINE\tAIM\tMET")
	for _, s := range r.Sections {
		if st := r.sectionStatus(s); st != "" {
			fmt.Fprintf(w, "%s\t\t\t\t\t%s\n", s.Key, st)
		}
		for _, row := range s.Rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", row.What, ratioCell(row), row.Ours, row.Base, row.Aim, row.Verdict)
		}
	}
	w.Flush()
	return buf.String()
}

func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markdown is the generated part of the document. Sections this run did
// not measure keep their blocks from old (the previous generated part, by
// section key), each saying when it was measured; the summary table at the
// top is rebuilt from every section's block.
func (r *Report) Markdown(old map[string]string) string {
	blocks := map[string]string{}
	for k, v := range old {
		blocks[k] = v
	}
	for _, s := range r.Sections {
		blocks[s.Key] = r.sectionBlock(s)
	}
	var b strings.Builder
	ran := make([]string, 0, len(r.Sections))
	for _, s := range r.Sections {
		ran = append(ran, s.Key)
	}
	fmt.Fprintf(&b, "Latest run: `go run ./bench`%s on %s, %s, %d rounds, %s in all; it measured %s.",
		r.flagText(), r.Started.Format("2006-01-02 15:04 MST"), r.mode(), r.Rounds, r.Took.Round(time.Second), strings.Join(ran, ", "))
	if len(blocks) > len(r.Sections) {
		b.WriteString(" The other sections keep the figures of the run that last measured them; each section says when.")
	}
	b.WriteString("\n\n")
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %d CPUs (`nproc`), %s, %s memory, Linux %s; %s.\n\n", m.CPUs, m.CPUModel, m.Memory, m.Kernel, m.Versions)

	b.WriteString("| Section | Measurement | Ratio | nix-ipfs | Baseline | Aim | Met |\n|---|---|---|---|---|---|---|\n")
	keys := orderedKeys(blocks)
	for _, k := range keys {
		for _, row := range tableRows(blocks[k]) {
			fmt.Fprintf(&b, "| %s |%s\n", k, row)
		}
	}
	b.WriteString("\n")
	for _, k := range keys {
		b.WriteString(blocks[k])
		b.WriteString("\n")
	}
	return b.String()
}

func (r *Report) mode() string {
	if r.Quick {
		return "**quick run (-quick): small sizes, figures not meaningful**"
	}
	return "full run"
}

func (r *Report) flagText() string {
	if len(r.Flags) == 0 {
		return ""
	}
	return " `" + strings.Join(r.Flags, " ") + "`"
}

// sectionBlock is one section's part of the document, between its own
// markers: its title, when it was measured, its rows and its detail.
func (r *Report) sectionBlock(s *Section) string {
	var b strings.Builder
	title := s.Title
	if title == "" {
		title = s.Key
	}
	fmt.Fprintf(&b, "%s%s -->\n### %s\n\n", sectionBegin, s.Key, title)
	fmt.Fprintf(&b, "Measured %s by `go run ./bench`%s, %s, %d rounds; the section took %s.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), r.flagText(), r.mode(), r.Rounds, s.Took.Round(time.Second))
	b.WriteString("| Measurement | Ratio | nix-ipfs | Baseline | Aim | Met |\n|---|---|---|---|---|---|\n")
	if st := r.sectionStatus(s); st != "" {
		fmt.Fprintf(&b, "| (%s) | | | | | |\n", mdCell(st))
	}
	for _, row := range s.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdCell(row.What), ratioCell(row), mdCell(row.Ours), mdCell(row.Base), mdCell(row.Aim), row.Verdict)
	}
	b.WriteString("\n")
	if st := r.sectionStatus(s); st != "" && s.Err != nil && strings.Contains(s.Err.Error(), "\n") {
		fmt.Fprintf(&b, "```\n%s\n```\n\n", tail(s.Err.Error(), 30))
	}
	if d := strings.TrimSpace(s.Detail.String()); d != "" {
		b.WriteString(d)
		b.WriteString("\n\n")
	}
	fmt.Fprintf(&b, "%s%s -->\n", sectionEnd, s.Key)
	return b.String()
}

// orderedKeys lists the sections of blocks in sectionOrder; sections that
// no longer exist are left out.
func orderedKeys(blocks map[string]string) []string {
	var out []string
	for _, k := range sectionOrder {
		if _, ok := blocks[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// tableRows returns the rows of the first table in a section block, each
// without its leading "|".
func tableRows(block string) []string {
	var out []string
	inTable := false
	for _, line := range strings.Split(block, "\n") {
		switch {
		case strings.HasPrefix(line, "|---"):
			inTable = true
		case inTable && strings.HasPrefix(line, "|"):
			out = append(out, strings.TrimPrefix(line, "|"))
		case inTable:
			return out
		}
	}
	return out
}

// sectionBlocks finds the section blocks of a generated part, by key.
func sectionBlocks(gen string) map[string]string {
	out := map[string]string{}
	rest := gen
	for {
		i := strings.Index(rest, sectionBegin)
		if i < 0 {
			return out
		}
		rest = rest[i:]
		key, _, ok := strings.Cut(strings.TrimPrefix(rest, sectionBegin), " -->")
		if !ok || strings.ContainsAny(key, " \n") {
			rest = rest[len(sectionBegin):]
			continue
		}
		end := sectionEnd + key + " -->\n"
		j := strings.Index(rest, end)
		if j < 0 {
			return out
		}
		out[key] = rest[:j+len(end)]
		rest = rest[j+len(end):]
	}
}

const (
	markBegin    = "<!-- bench:begin (generated by go run ./bench; edit outside the markers) -->"
	markEnd      = "<!-- bench:end -->"
	sectionBegin = "<!-- bench:section "
	sectionEnd   = "<!-- bench:section-end "
)

const docSkeleton = `# Benchmarks

Figures from ` + "`make bench`" + ` (` + "`go run ./bench -out docs/BENCHMARKS.md`" + `).

## Latest run

` + markBegin + `
` + markEnd + `
`

// WriteMarkdown replaces the generated part of file, keeping the rest, and
// within it the sections this run did not measure.
func (r *Report) WriteMarkdown(file string) error {
	old, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		old = []byte(docSkeleton)
	} else if err != nil {
		return err
	}
	doc := string(old)
	i := strings.Index(doc, markBegin)
	j := strings.Index(doc, markEnd)
	if i < 0 || j < i {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + markBegin + "\n" + markEnd + "\n"
		i = strings.Index(doc, markBegin)
		j = strings.Index(doc, markEnd)
	}
	// A quick run's figures mean nothing: it keeps none of a full run's,
	// and no full run keeps its.
	var keep map[string]string
	if !r.Quick {
		keep = sectionBlocks(doc[i:j])
		for k, v := range keep {
			if strings.Contains(v, "quick run (-quick)") {
				delete(keep, k)
			}
		}
	}
	doc = doc[:i+len(markBegin)] + "\n\n" + r.Markdown(keep) + doc[j:]
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
