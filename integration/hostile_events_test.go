package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/nats-io/nats.go"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
	"github.com/nix-ipfs/nix-ipfs/mirror"
)

// hostileEvent is a message published raw onto a subject a worker consumes.
type hostileEvent struct {
	name    string
	subject string
	data    []byte
	// reason is what the dead letter's reason must say (any of the words,
	// case-insensitive), so that a person reading it knows what was wrong.
	reason []string
}

// exhaustedCases are dead-lettered after --max-attempts deliveries rather
// than at the first: a path not in the store yet may still arrive.
var exhaustedCases = map[string]bool{"built/not-in-nix-db": true}

const okPath = "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hostile-ok"

// Well-formed values for fields a hostile event does not attack.
var (
	okNix32  = nix32Of("ok")
	okHash   = "sha256:" + okNix32
	okNarURL = "nar/" + okNix32 + ".nar"
	okCID    = rawCID("ok")
	otherCID = rawCID("other")
)

func nix32Of(s string) string {
	sum := sha256.Sum256([]byte(s))
	return nixbase32.EncodeToString(sum[:])
}

func rawCID(s string) string {
	mh, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, mh).String()
}

// sealedJSON seals e and marshals it without validating it, as a hostile
// or buggy producer would.
func sealedJSON(e events.Event) []byte {
	events.Seal(e)
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return b
}

// mutated returns e's JSON with fields changed (nil deletes), keeping its id.
func mutated(e events.Event, set map[string]any) []byte {
	var m map[string]any
	if err := json.Unmarshal(sealedJSON(e), &m); err != nil {
		panic(err)
	}
	for k, v := range set {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return b
}

func builtWith(outs ...string) *events.Built {
	return &events.Built{Host: "hostile", StoreDir: "/nix/store", OutPaths: outs}
}

func publishedWith(f func(p *events.Published)) *events.Published {
	p := &events.Published{
		Host: "hostile", StoreDir: "/nix/store", StorePath: okPath, NarHash: okHash, NarSize: 120,
		References: []string{}, CacheURL: "http://cache.invalid", NarURL: okNarURL, CID: okCID,
		Import:    events.ImportParams{CIDVersion: 1, Chunker: "size-262144", RawLeaves: true, HashFunction: "sha2-256", MaxFileLinks: 174},
		Publisher: events.Node{PeerID: "12D3KooWJizc39Nsqrq7thXusv1ebPxHLFSMm8wcy9MCqzt8JqU9", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}},
	}
	if f != nil {
		f(p)
	}
	return p
}

// padTo returns a JSON object of exactly n bytes that is otherwise ev's
// fields plus a filler field.
func padTo(ev []byte, n int) []byte {
	head := strings.TrimSuffix(string(ev), "}") + `,"filler":"`
	fill := n - len(head) - 2
	return []byte(head + strings.Repeat("x", fill) + `"}`)
}

func hostileBuilt() []hostileEvent {
	s := events.SubjectBuilt
	under := 1<<20 - 1024 // headers count towards the limit too
	return []hostileEvent{
		{"built/outside-store", s, sealedJSON(builtWith("/etc/passwd")), []string{"not directly under", "store"}},
		{"built/dotdot", s, sealedJSON(builtWith("/nix/store/../etc/0c6kzph7l0dcbfmjap64f0czdafn3b7x-passwd")), []string{"not directly under"}},
		{"built/dotdot-in-name", s, sealedJSON(builtWith("/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x/../../../etc/passwd")), []string{"not directly under"}},
		{"built/dotdot-base", s, sealedJSON(builtWith("/nix/store/..")), []string{"basename", "hash"}},
		{"built/nul-in-path", s, sealedJSON(builtWith("/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-a\x00b")), []string{"name", "character"}},
		{"built/other-store-dir", s, sealedJSON(&events.Built{Host: "h", StoreDir: "/gnu/store", OutPaths: []string{"/gnu/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}}), []string{"store"}},
		{"built/store-dir-dotdot", s, sealedJSON(&events.Built{Host: "h", StoreDir: "/nix/../etc", OutPaths: []string{"/nix/../etc/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}}), []string{"store"}},
		{"built/drv-not-drv", s, sealedJSON(&events.Built{Host: "h", StoreDir: "/nix/store", DrvPath: okPath, OutPaths: []string{okPath}}), []string{".drv"}},
		{"built/not-in-nix-db", s, sealedJSON(builtWith(okPath)), []string{"not a valid path"}},
		{"built/future-version", s, mutated(builtWith(okPath), map[string]any{"type": "nixipfs.built.v9"}), []string{"unknown event type"}},
		{"built/v1-with-v2-field", s, mutated(builtWith(okPath), map[string]any{"type": events.TypeBuiltV1, "job": "p:j:x"}), []string{"job"}},
		{"built/schema-v0", s, mutated(builtWith(okPath), map[string]any{"type": "nixipfs.built.v0"}), []string{"unknown event type"}},
		{"built/no-type", s, mutated(builtWith(okPath), map[string]any{"type": nil}), []string{"unknown event type"}},
		{"built/no-out-paths", s, mutated(builtWith(okPath), map[string]any{"out_paths": nil}), []string{"out_paths"}},
		{"built/empty-out-paths", s, mutated(builtWith(okPath), map[string]any{"out_paths": []string{}}), []string{"out_paths", "minitems", "items"}},
		{"built/no-id", s, mutated(builtWith(okPath), map[string]any{"id": nil}), []string{"id"}},
		{"built/no-store-dir", s, mutated(builtWith(okPath), map[string]any{"store_dir": nil}), []string{"store_dir"}},
		{"built/out-paths-not-strings", s, mutated(builtWith(okPath), map[string]any{"out_paths": []int{1, 2}}), []string{"out_paths", "string"}},
		{"built/tampered-id", s, mutated(builtWith(okPath), map[string]any{"out_paths": []string{"/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-other"}}), []string{"does not match"}},
		{"built/unknown-field", s, mutated(builtWith(okPath), map[string]any{"exec": "rm -rf /"}), []string{"exec", "additional"}},
		{"built/too-many-outputs", s, sealedJSON(builtWith(manyPaths(1025)...)), []string{"out_paths", "maxitems", "1024"}},
		{"built/not-json", s, []byte("rm -rf / # not an event"), []string{"not a json object"}},
		{"built/empty", s, []byte{}, []string{"not a json object"}},
		{"built/null", s, []byte("null"), []string{"unknown event type"}},
		{"built/array", s, []byte(`[{"type":"nixipfs.built.v1"}]`), []string{"not a json object"}},
		{"built/deep-nesting", s, []byte(strings.Repeat("[", 100000) + strings.Repeat("]", 100000)), []string{"not a json object", "depth"}},
		{"built/binary", s, []byte{0xff, 0xfe, 0x00, 0x01, '{'}, []string{"not a json object"}},
		{"built/published-event-on-built", s, sealedJSON(publishedWith(nil)), []string{"publisher got a"}},
		{"built/just-under-1MiB", s, padTo(sealedJSON(builtWith(okPath)), under), []string{"filler", "additional"}},
	}
}

func hostilePublished() []hostileEvent {
	s := events.SubjectPublished
	under := 1<<20 - 1024
	return []hostileEvent{
		{"published/invalid-cid", s, sealedJSON(publishedWith(func(p *events.Published) { p.CID = "notacid" })), []string{"cid"}},
		{"published/truncated-cid", s, sealedJSON(publishedWith(func(p *events.Published) { p.CID = okCID[:20] })), []string{"cid"}},
		{"published/non-canonical-cid", s, sealedJSON(publishedWith(func(p *events.Published) { p.CID = "B" + strings.ToUpper(okCID[1:]) })), []string{"cid"}},
		{"published/outside-store", s, sealedJSON(publishedWith(func(p *events.Published) { p.StorePath = "/etc/passwd" })), []string{"store_path"}},
		{"published/dotdot", s, sealedJSON(publishedWith(func(p *events.Published) { p.StorePath = "/nix/store/../../etc/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x" })), []string{"store_path"}},
		{"published/nar-url-traversal", s, sealedJSON(publishedWith(func(p *events.Published) { p.NarURL = "nar/../../../etc/passwd" })), []string{"nar_url"}},
		{"published/bad-narhash", s, sealedJSON(publishedWith(func(p *events.Published) { p.NarHash = "md5:abc" })), []string{"nar_hash"}},
		{"published/negative-size", s, sealedJSON(publishedWith(func(p *events.Published) { p.NarSize = -1 })), []string{"nar_size", "minimum"}},
		{"published/bad-multiaddr", s, sealedJSON(publishedWith(func(p *events.Published) { p.Publisher.Addrs = []string{"/ip4/999.1.1.1/tcp/1"} })), []string{"addr"}},
		{"published/bad-reference", s, sealedJSON(publishedWith(func(p *events.Published) { p.References = []string{"../../etc/passwd"} })), []string{"references"}},
		{"published/future-version", s, mutated(publishedWith(nil), map[string]any{"type": "nixipfs.published.v9"}), []string{"unknown event type"}},
		{"published/v1-with-v2-field", s, mutated(publishedWith(nil), map[string]any{"type": events.TypePublishedV1, "sigs": []string{"k:x"}}), []string{"sigs"}},
		{"published/no-cid", s, mutated(publishedWith(nil), map[string]any{"cid": nil}), []string{"cid"}},
		{"published/tampered-id", s, mutated(publishedWith(nil), map[string]any{"cid": otherCID}), []string{"does not match"}},
		{"published/built-event-on-published", s, sealedJSON(builtWith(okPath)), []string{"mirror got a"}},
		{"published/not-json", s, []byte("<html>"), []string{"not a json object"}},
		{"published/just-under-1MiB", s, padTo(sealedJSON(publishedWith(nil)), under), []string{"filler", "additional"}},
	}
}

func manyPaths(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("/nix/store/%032d-p", i))
	}
	return out
}

// TestHostileEvents publishes malformed and malicious events raw onto
// nixipfs.built and nixipfs.published while the real publisher and mirror
// run. Each is dead-lettered once, as invalid, with a reason that says what
// is wrong; an event over 1 MiB is refused by the stream itself; and the
// workers keep going: a real build after all of them is published and
// mirrored.
func TestHostileEvents(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	// A path not in the store may still arrive (a remote build on a Hydra
	// master), so the publisher retries it --max-attempts times.
	a.startPublisher(t, "--max-attempts", "2")
	withMirror := hasCommand(t, a.bin, "mirror")
	cases := hostileBuilt()
	if withMirror {
		// The mirror pins on A's own node: the hostile events never get that
		// far, and the valid one after them is pinned at once.
		testenv.StartProc(t, filepath.Join(a.bin, "nix-ipfs"), []string{"mirror", "--name", "m"},
			"NIX_IPFS_NATS_URL="+a.nats.URL, "NIX_IPFS_KUBO_API="+a.kubo.API, "NIX_IPFS_LOG_FORMAT=console")
		cases = append(cases, hostilePublished()...)
	} else {
		t.Log("nix-ipfs mirror has not landed: hostile published events not tried")
	}
	_, js := a.nats.Connect(t)
	// The publisher creates the stream; wait for it and for the consumers.
	testenv.Eventually(t, time.Minute, "the workers' consumers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.Consumer(ctx, events.DefaultStream, "publisher"); err != nil {
			return false
		}
		if withMirror {
			if _, err := js.Consumer(ctx, events.DefaultStream, mirror.Durable("m")); err != nil {
				return false
			}
		}
		return true
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seqs := map[uint64]hostileEvent{}
	for _, c := range cases {
		ack, err := js.Publish(ctx, c.subject, c.data)
		if err != nil {
			t.Fatalf("%s: the stream refused %d bytes: %v", c.name, len(c.data), err)
		}
		seqs[ack.Sequence] = c
	}
	// Over the limit: refused at publish time, never stored.
	over := padTo(sealedJSON(builtWith(okPath)), 1<<20+1)
	_, err := js.Publish(ctx, events.SubjectBuilt, over)
	if err == nil || !(errors.Is(err, nats.ErrMaxPayload) || strings.Contains(strings.ToLower(err.Error()), "maximum")) {
		t.Errorf("an event of %d bytes was not refused: %v", len(over), err)
	}

	// A valid build after all of that is handled.
	top := a.nix.Build(t, testenv.Drv("after-hostile-"+testenv.Nonce(), `echo fine > $out`, ""))[0]
	flushSpool(t, a.builder)
	got := a.waitPublished(t, []string{top}, 2*time.Minute)
	if withMirror {
		testenv.Eventually(t, 2*time.Minute, "the valid event mirrored", func() bool {
			for _, e := range streamEvents(t, js, events.SubjectPinned("m")) {
				if e.(*events.Pinned).CID == got[top].IPFSHash {
					return true
				}
			}
			return false
		})
	}
	testenv.Eventually(t, time.Minute, "every hostile event dead-lettered", func() bool {
		return len(deadLetters(t, js)) >= len(cases)
	})
	waitDrained(t, js, "publisher", time.Minute)
	if withMirror {
		waitDrained(t, js, mirror.Durable("m"), time.Minute)
	}

	byCase := map[string]int{}
	for _, d := range deadLetters(t, js) {
		c, ok := seqs[d.StreamSeq]
		if !ok {
			t.Errorf("dead letter for seq %d, which was no hostile event: %s", d.StreamSeq, d.Reason)
			continue
		}
		byCase[c.name]++
		kind, deliveries := "invalid", uint64(1)
		if exhaustedCases[c.name] {
			kind, deliveries = "exhausted", 2
		}
		if d.Kind != kind || d.Subject != c.subject || d.Deliveries != deliveries {
			t.Errorf("%s: dead letter kind %q subject %q after %d deliveries, want %s, %s, %d", c.name, d.Kind, d.Subject, d.Deliveries, kind, c.subject, deliveries)
		}
		if !containsAny(d.Reason, c.reason) {
			t.Errorf("%s: dead letter reason %q does not say %q", c.name, d.Reason, c.reason)
		}
		if n := len(c.data); n > events.MaxDeadPayload != d.PayloadTruncated || (n <= events.MaxDeadPayload && string(d.Payload) != string(c.data)) {
			t.Errorf("%s: dead letter payload %d bytes (truncated %v), original %d", c.name, len(d.Payload), d.PayloadTruncated, n)
		}
		t.Logf("%-36s -> %s", c.name, trimReason(d.Reason))
	}
	lost := 0
	for _, c := range cases {
		if byCase[c.name] != 1 {
			lost++
			t.Errorf("%s: %d dead letters, want 1", c.name, byCase[c.name])
		}
	}
	built, published := 0, 0
	for _, c := range cases {
		if c.subject == events.SubjectBuilt {
			built++
		} else {
			published++
		}
	}
	reliability(t, "hostile-events", "runs", len(cases)+1, "in", len(cases), "built", built, "published", published,
		"dead_lettered", len(cases)-lost, "refused_over_1MiB", 1, "valid_after", 1, "lost", lost)
}

func containsAny(s string, words []string) bool {
	s = strings.ToLower(s)
	for _, w := range words {
		if strings.Contains(s, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

func trimReason(r string) string {
	if len(r) > 160 {
		return r[:160] + "..."
	}
	return r
}
