package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func report(quick bool, keys ...string) *Report {
	r := &Report{Started: time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC), Rounds: 3, Quick: quick}
	for _, k := range keys {
		s := &Section{Key: k, Title: "Title of " + k}
		s.add(Row{What: k + " row", RatioText: "2.00x", Ours: "1 s", Base: "2 s", Aim: ">= 1x", Verdict: "met"})
		s.detailf("Detail of %s.\n", k)
		r.Sections = append(r.Sections, s)
	}
	return r
}

// A run of some sections replaces only theirs: the others keep the
// figures of the run that measured them, and the summary lists all.
func TestWriteMarkdownKeepsSectionsNotRun(t *testing.T) {
	file := filepath.Join(t.TempDir(), "B.md")
	os.WriteFile(file, []byte("# B\n\nprose before\n\n"+markBegin+"\nold format\n"+markEnd+"\n\nprose after\n"), 0o644)
	if err := report(false, "hook", "publish").WriteMarkdown(file); err != nil {
		t.Fatal(err)
	}
	second := report(false, "publish", "mirror")
	second.Started = second.Started.Add(time.Hour)
	second.Sections[0].Rows[0].Ours = "0.5 s"
	if err := second.WriteMarkdown(file); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(file)
	doc := string(b)
	for _, want := range []string{"prose before", "prose after", "Detail of hook.", "Detail of mirror.",
		"| hook | hook row |", "| publish | publish row | 2.00x | 0.5 s |", "| mirror | mirror row |",
		"Measured 2026-12-01 01:00 UTC", "Measured 2026-12-01 02:00 UTC", "keep the figures"} {
		if !strings.Contains(doc, want) {
			t.Errorf("document lacks %q:\n%s", want, doc)
		}
	}
	if strings.Contains(doc, "old format") || strings.Count(doc, "Detail of publish.") != 1 {
		t.Errorf("old text or a duplicated section:\n%s", doc)
	}
	if i, j := strings.Index(doc, "### Title of hook"), strings.Index(doc, "### Title of mirror"); i < 0 || j < i {
		t.Error("sections out of order")
	}

	// A quick run keeps nothing of the full runs.
	if err := report(true, "hook").WriteMarkdown(file); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(file)
	if strings.Contains(string(b), "Detail of mirror.") {
		t.Error("a quick run kept a full run's section")
	}
}
