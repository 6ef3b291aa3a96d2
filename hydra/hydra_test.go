package hydra

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parseFile(t *testing.T, name string) (*Notification, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Parse(f)
}

// The fixtures follow makeJsonPayload in Hydra's RunCommand.pm; the
// multi-output one is the build of Hydra's own test (tests/jobs/runcommand.nix,
// outputs out and bin, two metrics, two products), with numbers sent as
// strings and finished as 1, as a Perl scalar from the database can be.
func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		file    string
		job     string
		build   int64
		skip    string // "" means publishable
		outputs []Output
		start   int64
		stop    int64
	}{
		{file: "successful.json", job: "nixpkgs:trunk:hello.x86_64-linux", build: 4711,
			outputs: []Output{{"out", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"}}, start: 1764540000, stop: 1764540042},
		{file: "failed.json", job: "nixpkgs:trunk:broken.x86_64-linux", build: 4712, skip: "buildStatus 1 (failed)",
			outputs: []Output{{"out", "/nix/store/1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s-broken-1.0"}}, start: 1764540100, stop: 1764540107},
		// A cached build: outputs were already valid, so Hydra marked it
		// succeeded with startTime = stopTime. Its outputs are still
		// published (publishing twice is harmless).
		{file: "cached.json", job: "nixpkgs:staging:hello.x86_64-linux", build: 4713,
			outputs: []Output{{"out", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"}}, start: 1764540200, stop: 1764540200},
		{file: "multi-output.json", job: "tests:basic:metrics", build: 4714,
			outputs: []Output{
				{"bin", "/nix/store/q2n8h3m1x5v7c9b0z4l6k8j0h2g4f6d8-my-build-product-bin"},
				{"out", "/nix/store/a1s2d3f4g5h6j7k8l9z0x1c2v3b4n5m6-my-build-product"},
			}, start: 1764540300, stop: 1764540301},
	} {
		t.Run(tc.file, func(t *testing.T) {
			n, err := parseFile(t, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if n.JobName() != tc.job || n.Build != tc.build {
				t.Errorf("job %q build %d, want %q %d", n.JobName(), n.Build, tc.job, tc.build)
			}
			if got := n.Skip(); got != tc.skip {
				t.Errorf("Skip() = %q, want %q", got, tc.skip)
			}
			if !reflect.DeepEqual(n.Outputs, tc.outputs) {
				t.Errorf("outputs %v, want %v", n.Outputs, tc.outputs)
			}
			if n.StartTime != tc.start || n.StopTime != tc.stop {
				t.Errorf("start/stop %d/%d, want %d/%d", n.StartTime, n.StopTime, tc.start, tc.stop)
			}
			if !strings.HasSuffix(n.DrvPath, ".drv") || n.System != "x86_64-linux" || n.NixName == "" {
				t.Errorf("drvPath/system/nixName = %q/%q/%q", n.DrvPath, n.System, n.NixName)
			}
		})
	}
}

func TestGarbage(t *testing.T) {
	for _, file := range []string{"garbage.txt", "truncated.json"} {
		if n, err := parseFile(t, file); err == nil {
			t.Errorf("%s parsed: %+v", file, n)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{``, "empty"},
		{`[]`, "not a JSON object"},
		{`{"build":1,"project":"p","jobset":"j","job":"x","outputs":[]}`, `"event"`},
		{`{"event":"buildFinished","project":"p","jobset":"j","job":"x","outputs":[]}`, `"build"`},
		{`{"event":"buildFinished","build":0,"project":"p","jobset":"j","job":"x","outputs":[]}`, "not a build id"},
		{`{"event":"buildFinished","build":"x1","project":"p","jobset":"j","job":"x","outputs":[]}`, "not an integer"},
		{`{"event":"buildFinished","build":1,"project":"p","jobset":"j","job":"x"}`, `"outputs"`},
		{`{"event":"buildFinished","build":1,"project":"p","jobset":"j","job":"x","outputs":[{"name":"out"}]}`, "outputs[0]"},
		{`{"event":"buildFinished","build":1,"project":3,"jobset":"j","job":"x","outputs":[]}`, "project"},
		{`{"event":"buildFinished","build":1,"finished":"yes","project":"p","jobset":"j","job":"x","outputs":[]}`, "not a boolean"},
		{`{"event":"buildFinished","build":1,"buildStatus":-1,"project":"p","jobset":"j","job":"x","outputs":[]}`, "out of range"},
		{`{"event":"buildFinished","build":1,"project":"p","jobset":"j","job":"x","outputs":[]} {}`, "trailing"},
	} {
		_, err := Parse(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error mentioning %q", tc.in, err, tc.want)
		}
	}
	if _, err := Parse(strings.NewReader("{" + strings.Repeat(" ", MaxSize) + "}")); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("oversized file: %v", err)
	}
}

func TestSkip(t *testing.T) {
	ok := Notification{Event: EventBuildFinished, Finished: true, HasStatus: true, Outputs: []Output{{"out", "/nix/store/x"}}}
	if s := ok.Skip(); s != "" {
		t.Fatalf("successful build skipped: %s", s)
	}
	for _, tc := range []struct {
		mod  func(*Notification)
		want string
	}{
		{func(n *Notification) { n.Event = "buildStarted" }, `event "buildStarted"`},
		{func(n *Notification) { n.Finished = false }, "not finished"},
		{func(n *Notification) { n.HasStatus = false }, "no status"},
		{func(n *Notification) { n.BuildStatus = 8 }, "cached failure"},
		{func(n *Notification) { n.BuildStatus = 99 }, "unknown status"},
		{func(n *Notification) { n.Outputs = nil }, "no outputs"},
	} {
		n := ok
		tc.mod(&n)
		if s := n.Skip(); !strings.Contains(s, tc.want) {
			t.Errorf("Skip() = %q, want %q", s, tc.want)
		}
	}
}

// FuzzParse: no input crashes or hangs the parser, and whatever it accepts
// has the fields it promises.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"successful.json", "failed.json", "cached.json", "multi-output.json", "garbage.txt", "truncated.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"event":null,"build":"1","outputs":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			if n != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if n.Build <= 0 || n.Outputs == nil && n.Skip() == "" {
			t.Fatalf("accepted a notification without a build id or outputs: %+v", n)
		}
		if n.HasStatus && (n.BuildStatus < 0 || n.BuildStatus > 1<<16) {
			t.Fatalf("status out of range: %d", n.BuildStatus)
		}
		_ = n.Skip()
		_ = n.JobName()
	})
}
