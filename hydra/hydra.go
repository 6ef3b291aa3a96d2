// Package hydra reads the notification Hydra's RunCommand plugin writes: a
// JSON file, named by the HYDRA_JSON environment variable, describing one
// build that finished on the Hydra master (hydra-notify runs the command).
//
// The fields are those of makeJsonPayload in Hydra's
// lib/Hydra/Plugin/RunCommand.pm. Hydra fills them from its database, so a
// number may arrive as a JSON number or as a numeric string, a boolean as
// true/false or 0/1, and most text fields may be null: the reader accepts
// each form and rejects anything else with an error that names the field.
// Fields this package does not use (homepage, description, license,
// products, metrics, and any Hydra adds later) are ignored.
package hydra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MaxSize is the largest notification read. Hydra's payload is small
// (a build's outputs, products and metrics); a bigger file is not one.
const MaxSize = 16 << 20

// EventBuildFinished is the only event RunCommand sends today.
const EventBuildFinished = "buildFinished"

// Notification is one RunCommand payload.
type Notification struct {
	// Event is what happened; Hydra sends "buildFinished".
	Event string
	// Build is Hydra's build id.
	Build int64
	// Finished is whether the build finished (always true for
	// buildFinished, kept for the check).
	Finished bool
	// Timestamp is when the build was queued (Unix seconds).
	Timestamp int64
	// Project, Jobset and Job name the job.
	Project, Jobset, Job string
	// DrvPath is the build's derivation.
	DrvPath string
	// StartTime and StopTime are Unix seconds; 0 when Hydra sent null.
	StartTime, StopTime int64
	// BuildStatus is Hydra's result code: 0 is success. HasStatus is false
	// when Hydra sent null.
	BuildStatus int
	HasStatus   bool
	// NixName and System are the derivation's name and platform.
	NixName, System string
	// Outputs are the build's outputs, in Hydra's order.
	Outputs []Output
}

// Output is one output of a build.
type Output struct {
	Name string
	Path string
}

// JobName returns "project:jobset:job", the form hydra.conf's <runcommand>
// matchers use.
func (n *Notification) JobName() string {
	return n.Project + ":" + n.Jobset + ":" + n.Job
}

// StatusText names Hydra's build status codes (Hydra's BuildStatus enum and
// showStatus).
func StatusText(code int) string {
	switch code {
	case 0:
		return "succeeded"
	case 1:
		return "failed"
	case 2:
		return "dependency failed"
	case 3:
		return "aborted"
	case 4:
		return "cancelled"
	case 6:
		return "failed with output"
	case 7:
		return "timed out"
	case 8:
		return "cached failure"
	case 9:
		return "unsupported system"
	case 10:
		return "log limit exceeded"
	case 11:
		return "output limit exceeded"
	case 12:
		return "non-deterministic"
	}
	return "unknown status"
}

// Skip says why a notification is not a successful build whose outputs can
// be published, or "" when it is one.
func (n *Notification) Skip() string {
	switch {
	case n.Event != EventBuildFinished:
		return fmt.Sprintf("event %q is not %s", n.Event, EventBuildFinished)
	case !n.Finished:
		return "the build is not finished"
	case !n.HasStatus:
		return "the build has no status"
	case n.BuildStatus != 0:
		return fmt.Sprintf("buildStatus %d (%s)", n.BuildStatus, StatusText(n.BuildStatus))
	case len(n.Outputs) == 0:
		return "the build has no outputs"
	}
	return ""
}

// wire is the JSON as Hydra writes it.
type wire struct {
	Event       *string   `json:"event"`
	Build       flexInt   `json:"build"`
	Finished    flexBool  `json:"finished"`
	Timestamp   flexInt   `json:"timestamp"`
	Project     *string   `json:"project"`
	Jobset      *string   `json:"jobset"`
	Job         *string   `json:"job"`
	DrvPath     *string   `json:"drvPath"`
	StartTime   flexInt   `json:"startTime"`
	StopTime    flexInt   `json:"stopTime"`
	BuildStatus flexInt   `json:"buildStatus"`
	NixName     *string   `json:"nixName"`
	System      *string   `json:"system"`
	Outputs     []wireOut `json:"outputs"`
}

type wireOut struct {
	Name *string `json:"name"`
	Path *string `json:"path"`
}

// Parse reads one notification. It fails on anything that is not a JSON
// object with at least event, build, project, jobset, job and outputs of the
// right types, naming the field.
func Parse(r io.Reader) (*Notification, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("more than %d bytes: not a Hydra notification", MaxSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("empty file")
	}
	if trimmed[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("not a Hydra notification: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	n := &Notification{}
	for _, f := range []struct {
		name string
		src  *string
		dst  *string
		need bool
	}{
		{"event", w.Event, &n.Event, true},
		{"project", w.Project, &n.Project, true},
		{"jobset", w.Jobset, &n.Jobset, true},
		{"job", w.Job, &n.Job, true},
		{"drvPath", w.DrvPath, &n.DrvPath, false},
		{"nixName", w.NixName, &n.NixName, false},
		{"system", w.System, &n.System, false},
	} {
		if f.src == nil {
			if f.need {
				return nil, fmt.Errorf("field %q is missing or null", f.name)
			}
			continue
		}
		*f.dst = *f.src
	}
	if !w.Build.set {
		return nil, errors.New(`field "build" is missing or null`)
	}
	if w.Build.v <= 0 {
		return nil, fmt.Errorf(`field "build" = %d: not a build id`, w.Build.v)
	}
	if w.Outputs == nil {
		return nil, errors.New(`field "outputs" is missing or null`)
	}
	n.Build = w.Build.v
	n.Finished = w.Finished.v
	n.Timestamp = w.Timestamp.v
	n.StartTime = w.StartTime.v
	n.StopTime = w.StopTime.v
	if w.BuildStatus.set {
		if w.BuildStatus.v < 0 || w.BuildStatus.v > 1<<16 {
			return nil, fmt.Errorf(`field "buildStatus" = %d: out of range`, w.BuildStatus.v)
		}
		n.BuildStatus, n.HasStatus = int(w.BuildStatus.v), true
	}
	for i, o := range w.Outputs {
		if o.Name == nil || o.Path == nil {
			return nil, fmt.Errorf("outputs[%d]: name and path are required", i)
		}
		n.Outputs = append(n.Outputs, Output{Name: *o.Name, Path: *o.Path})
	}
	return n, nil
}

// flexInt is an integer sent as a number, a numeric string, or null.
type flexInt struct {
	v   int64
	set bool
}

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		s = strings.TrimSpace(str)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer", b)
	}
	f.v, f.set = v, true
	return nil
}

// flexBool is a boolean sent as true/false, 0/1 (also quoted), or null.
type flexBool struct {
	v bool
}

func (f *flexBool) UnmarshalJSON(b []byte) error {
	switch strings.Trim(string(b), `"`) {
	case "true", "1":
		f.v = true
	case "false", "0", "null", "":
		f.v = false
	default:
		return fmt.Errorf("%s is not a boolean", b)
	}
	return nil
}
