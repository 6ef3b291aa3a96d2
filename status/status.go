// Package status reports what a nix-ipfs deployment holds and what is behind:
// the stream, each durable consumer's backlog and redeliveries, the dead
// letters, and each mirror's lag. It reads only; it is what `nix-ipfs
// status` prints and what an operator's monitoring can poll as JSON.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/retention"
)

// Report is the status of one stream.
type Report struct {
	Stream string `json:"stream"`
	// Replicas is the stream's configured replica count; Cluster is where
	// they are, absent on a server that is not clustered.
	Replicas    int               `json:"replicas"`
	Cluster     *Cluster          `json:"cluster,omitempty"`
	Messages    uint64            `json:"messages"`
	Bytes       uint64            `json:"bytes"`
	FirstSeq    uint64            `json:"first_seq"`
	LastSeq     uint64            `json:"last_seq"`
	Subjects    map[string]uint64 `json:"subjects"`
	Consumers   []Consumer        `json:"consumers"`
	DeadLetters uint64            `json:"dead_letters"`
	LastDead    []DeadLetter      `json:"last_dead_letters,omitempty"`
	// Retention, with --cache-dir: the cache and what a prune would free.
	Retention *Retention `json:"retention,omitempty"`
	// Overview, from a Collector: the last hour's flow, the mirrors'
	// shares of the live set, the latest builds.
	Overview *Overview `json:"overview,omitempty"`
}

// Cluster is the Raft group of a clustered stream or consumer.
type Cluster struct {
	Name string `json:"name,omitempty"`
	// Leader is the server that takes writes; empty while none is elected.
	Leader string `json:"leader"`
	// Peers are the other replicas, as the leader sees them.
	Peers []Peer `json:"peers,omitempty"`
}

// Peer is one replica that is not the leader.
type Peer struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline,omitempty"`
	// Lag is how many operations the peer is behind the leader.
	Lag uint64 `json:"lag,omitempty"`
	// Active is how long ago the leader last heard from it.
	Active time.Duration `json:"active_ns"`
}

// Lagging reports whether the peer is offline or behind the leader.
func (p Peer) Lagging() bool { return p.Offline || !p.Current || p.Lag > 0 }

// Lagging returns the peers that are offline or behind.
func (c *Cluster) Lagging() []Peer {
	if c == nil {
		return nil
	}
	var out []Peer
	for _, p := range c.Peers {
		if p.Lagging() {
			out = append(out, p)
		}
	}
	return out
}

func clusterOf(ci *jetstream.ClusterInfo) *Cluster {
	// A server that is not clustered still names itself leader; only a
	// cluster has a name.
	if ci == nil || ci.Name == "" {
		return nil
	}
	c := &Cluster{Name: ci.Name, Leader: ci.Leader}
	for _, p := range ci.Replicas {
		if p == nil {
			continue
		}
		c.Peers = append(c.Peers, Peer{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag, Active: p.Active})
	}
	sort.Slice(c.Peers, func(i, j int) bool { return c.Peers[i].Name < c.Peers[j].Name })
	return c
}

// Consumer is one durable consumer's state.
type Consumer struct {
	Name string `json:"name"`
	// Role is "publisher", "mirror" or "other", from the name.
	Role        string `json:"role"`
	Filter      string `json:"filter"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	// AckFloor is the stream sequence up to which everything is acked.
	AckFloor uint64 `json:"ack_floor_stream_seq"`
	// Replicas of the consumer's state (0: the stream's).
	Replicas int      `json:"replicas"`
	Cluster  *Cluster `json:"cluster,omitempty"`
}

// DeadLetter summarises a dead letter.
type DeadLetter struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Subject string    `json:"original_subject"`
	Kind    string    `json:"kind"`
	Reason  string    `json:"reason"`
	// Job and HydraBuild name the job of a dead-lettered built event that
	// came from Hydra (nix-ipfs-hook hydra).
	Job        string `json:"job,omitempty"`
	HydraBuild int64  `json:"hydra_build,omitempty"`
}

// Collect builds a Report; it keeps the last `lastDead` dead letters.
func Collect(ctx context.Context, js jetstream.JetStream, stream string, lastDead int) (*Report, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.SubjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	r := &Report{Stream: stream, Replicas: info.Config.Replicas, Cluster: clusterOf(info.Cluster), Messages: info.State.Msgs, Bytes: info.State.Bytes,
		FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Subjects: map[string]uint64{}}
	for subj, n := range info.State.Subjects {
		r.Subjects[subj] = n
		if strings.HasPrefix(subj, events.SubjectDeadPrefix) {
			r.DeadLetters += n
		}
	}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		c := Consumer{Name: ci.Name, Filter: ci.Config.FilterSubject, Pending: ci.NumPending,
			AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered, AckFloor: ci.AckFloor.Stream,
			Replicas: ci.Config.Replicas, Cluster: clusterOf(ci.Cluster)}
		if c.Filter == "" && len(ci.Config.FilterSubjects) > 0 {
			c.Filter = strings.Join(ci.Config.FilterSubjects, ",")
		}
		switch {
		case strings.HasPrefix(ci.Name, "mirror-"):
			c.Role = "mirror"
		case ci.Name == "publisher" || strings.HasPrefix(ci.Name, "publisher"):
			c.Role = "publisher"
		default:
			c.Role = "other"
		}
		if ci.Config.Durable == "" {
			continue // ephemeral: a replay or a status reader
		}
		r.Consumers = append(r.Consumers, c)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	sort.Slice(r.Consumers, func(i, j int) bool { return r.Consumers[i].Name < r.Consumers[j].Name })
	if lastDead > 0 && r.DeadLetters > 0 {
		r.LastDead, err = lastDeadLetters(ctx, js, stream, lastDead)
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

func lastDeadLetters(ctx context.Context, js jetstream.JetStream, stream string, n int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := events.Scan(ctx, js, stream, events.ScanOptions{Consumer: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectDeadPrefix + ">"},
		// A reader that polls must not leave a consumer per call for
		// the server's default five minutes.
		InactiveThreshold: 10 * time.Second,
	}}, func(m jetstream.Msg) error {
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		d := DeadLetter{Seq: meta.Sequence.Stream}
		e, err := events.Decode(m.Data())
		if dl, ok := e.(*events.DeadLetter); err == nil && ok {
			d.Time, d.Subject, d.Kind, d.Reason = dl.Time, dl.Subject, dl.Kind, dl.Reason
			// The payload may be cut or invalid (that is often why it
			// is here): the job is shown only when it decodes.
			if orig, err := events.Decode(dl.Payload); err == nil {
				if b, ok := orig.(*events.Built); ok {
					d.Job, d.HydraBuild = b.Job, b.HydraBuild
				}
			}
		} else if err != nil {
			d.Reason = "(undecodable: " + err.Error() + ")"
		} else {
			d.Reason = fmt.Sprintf("(a %s event on %s, not a dead letter)", events.Head(e).Type, m.Subject())
		}
		out = append(out, d)
		if len(out) > n {
			out = out[1:]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the dead letters: %w", err)
	}
	return out, nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "stream %s: %d events, %s, seq %d..%d\n", r.Stream, r.Messages, retention.Bytes(int64(r.Bytes)), r.FirstSeq, r.LastSeq)
	fmt.Fprintf(w, "  replicas %d%s\n", max(r.Replicas, 1), r.Cluster.describe())
	var subs []string
	for s := range r.Subjects {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	for _, s := range subs {
		fmt.Fprintf(w, "  %-32s %d\n", s, r.Subjects[s])
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tROLE\tFILTER\tPENDING (lag)\tIN FLIGHT\tREDELIVERED\tREPLICAS")
	for _, c := range r.Consumers {
		reps := "-"
		if c.Replicas > 0 {
			reps = fmt.Sprint(c.Replicas)
		}
		if c.Cluster != nil {
			reps += c.Cluster.describe()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", c.Name, c.Role, c.Filter, c.Pending, c.AckPending, c.Redelivered, reps)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ndead letters: %d\n", r.DeadLetters)
	for _, d := range r.LastDead {
		job := ""
		if d.Job != "" {
			job = fmt.Sprintf("  job %s (Hydra build %d)", d.Job, d.HydraBuild)
		}
		fmt.Fprintf(w, "  seq %d  %s  %s%s  %s: %s\n", d.Seq, d.Time.Format(time.RFC3339), d.Subject, job, d.Kind, d.Reason)
	}
}

// describe is ", leader n1, lagging: n3 (offline)", or "" when not
// clustered.
func (c *Cluster) describe() string {
	if c == nil {
		return ""
	}
	leader := c.Leader
	if leader == "" {
		leader = "NONE (no leader elected: writes wait)"
	}
	s := ", leader " + leader
	var lag []string
	for _, p := range c.Lagging() {
		what := fmt.Sprintf("%d behind", p.Lag)
		if p.Offline {
			what = "offline"
		} else if !p.Current && p.Lag == 0 {
			what = "not current"
		}
		lag = append(lag, fmt.Sprintf("%s (%s, seen %s ago)", p.Name, what, p.Active.Round(time.Millisecond)))
	}
	if len(lag) > 0 {
		s += ", lagging: " + strings.Join(lag, ", ")
	} else if len(c.Peers) > 0 {
		s += ", peers current"
	}
	return s
}
