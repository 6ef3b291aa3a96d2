package status

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// TestCollectorOverview: against a real JetStream, the overview counts
// the last hour's events per stage, the live set and each mirror's share
// of it, and the latest build with the mirrors that hold its closure; a
// second Collect reads only what is new and still counts everything.
func TestCollectorOverview(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect(t)
	ctx := context.Background()
	if _, err := events.EnsureStream(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	pub := func(subject string, e events.Event) {
		t.Helper()
		events.Seal(e)
		if _, err := events.Publish(ctx, js, subject, e); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := mh.Sum([]byte("nar"), mh.SHA2_256, -1)
	c := cid.NewCidV1(cid.Raw, h).String()
	sp := "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-a"
	hash := strings.Repeat("1", 52)
	pub(events.SubjectBuilt, &events.Built{Host: "h", StoreDir: "/nix/store", OutPaths: []string{sp}})
	pub(events.SubjectPublished, &events.Published{Host: "h", StoreDir: "/nix/store", StorePath: sp, NarHash: "sha256:" + hash, NarSize: 42,
		References: []string{}, CacheURL: "file:///c", NarURL: "nar/" + hash + ".nar", CID: c,
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "p", Addrs: []string{}}})
	col := NewCollector(js, CollectorOptions{LastDead: 5})
	r, err := col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := r.Overview
	if o.Flow.Stages[0].Total != 1 || o.Flow.Stages[1].Total != 1 || o.Flow.Stages[2].Total != 0 || o.Live.Paths != 1 || o.Live.Bytes != 42 ||
		len(o.Builds) != 1 || len(o.Builds[0].Mirrors) != 0 || !o.Builds[0].Published {
		t.Fatalf("before any pin: %+v %+v", o.Flow.Stages, o)
	}
	pub(events.SubjectPinned("b"), &events.Pinned{Mirror: "b", CID: c, StorePath: sp, Bytes: 42, Node: events.Node{PeerID: "nb", Addrs: []string{}}})
	r, err = col.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o = r.Overview
	if o.Flow.Stages[2].Total != 1 || len(o.Mirrors) != 1 || o.Mirrors[0].Share != 1 || strings.Join(o.Builds[0].Mirrors, ",") != "b" {
		t.Fatalf("after b pinned: %+v", o)
	}
	var sum int
	for _, b := range o.Flow.Stages[0].Buckets {
		sum += b
	}
	if sum != 1 || o.Flow.Stages[0].Buckets[FlowBuckets-1] != 1 {
		t.Errorf("the build is not in the last bucket: %v", o.Flow.Stages[0].Buckets)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewMetrics(col, 10*time.Second, nil))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{"nixipfs_status_up": 1, "nixipfs_live_paths": 1, "nixipfs_live_nar_bytes": 42,
		"nixipfs_mirror_live_paths/b": 1, "nixipfs_dead_letters": 0} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("metric %s = %v (%v), want %v", name, v, ok, want)
		}
	}
	var text bytes.Buffer
	o.WriteText(&text)
	flat := strings.Join(strings.Fields(text.String()), " ")
	for _, want := range []string{"built 1", "live: 1 paths", "b 1 100%"} {
		if !strings.Contains(flat, want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}
