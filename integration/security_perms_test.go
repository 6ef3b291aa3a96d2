package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// violationLog is a nats-server logger that keeps the permission
// violations the server reports.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) add(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	if strings.Contains(s, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}
func (l *violationLog) Noticef(f string, v ...any) { l.add(f, v...) }
func (l *violationLog) Warnf(f string, v ...any)   { l.add(f, v...) }
func (l *violationLog) Fatalf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Errorf(f string, v ...any)  { l.add(f, v...) }
func (l *violationLog) Debugf(f string, v ...any)  {}
func (l *violationLog) Tracef(f string, v ...any)  {}

func (l *violationLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

// repoFile returns the path of a file in the repository.
func repoFile(t *testing.T, rel string) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", rel)
}

// TestSecurityLeastPrivilege runs the embedded NATS server with the
// permissions of deploy/nats/nats-server.conf, the documented example, and
// every component with its own user: the hook (run and flush), the
// publisher, status and the mirror each do their real work without a
// single permission violation, and each is refused what it must not do:
// the hook forging a "published" or "pinned" event or reading the stream,
// the publisher forging builds or pins, a mirror announcing for another
// mirror or forging "published" events, status writing anything.
func TestSecurityLeastPrivilege(t *testing.T) {
	conf := repoFile(t, "deploy/nats/nats-server.conf")
	pw := map[string]string{}
	for _, u := range []string{"HOOK", "PUBLISHER", "MIRROR_B", "STATUS", "ADMIN"} {
		pw[u] = "pw-" + strings.ToLower(u) + "-" + testenv.Nonce()
		t.Setenv("NIXIPFS_"+u+"_PASSWORD", pw[u])
	}
	loaded, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%s: %v", conf, err)
	}
	vlog := &violationLog{}
	n := testenv.StartNATS(t, func(o *server.Options) {
		store := o.StoreDir
		*o = *loaded
		o.Host, o.Port, o.StoreDir, o.NoLog, o.NoSigs = "127.0.0.1", -1, store, true, true
	})
	n.Server.SetLogger(vlog, false, false)
	userEnv := func(user, pwKey string) []string {
		return []string{"NIX_IPFS_NATS_URL=" + n.URL, "NIX_IPFS_NATS_USER=" + user, "NIX_IPFS_NATS_PASSWORD=" + pw[pwKey]}
	}

	bin := testenv.Binaries(t)
	nix := testenv.NewNix(t)
	kubo := testenv.StartKubo(t, testenv.KuboOffline())
	hookBin, nixIPFS := filepath.Join(bin, "nix-ipfs-hook"), filepath.Join(bin, "nix-ipfs")
	emptyConf := filepath.Join(t.TempDir(), "hook.conf")
	os.WriteFile(emptyConf, nil, 0o644)
	cache, spool := filepath.Join(t.TempDir(), "cache"), filepath.Join(t.TempDir(), "spool")
	admin := connectJS(t, n.URL, nats.UserInfo("admin", pw["ADMIN"]))

	// The publisher, with its user, creates the stream, its consumer and
	// its lease bucket.
	testenv.StartProc(t, nixIPFS, []string{"publisher"}, append(userEnv("publisher", "PUBLISHER"),
		"NIX_IPFS_KUBO_API="+kubo.API, "NIX_IPFS_CACHE_DIR="+cache, "NIX_IPFS_SECRET_KEY_FILE="+nix.SecretKey,
		"NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_CONFIG="+emptyConf)...)
	testenv.Eventually(t, time.Minute, "the publisher's consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := admin.Consumer(ctx, events.DefaultStream, "publisher")
		return err == nil
	})

	// The hook, as Nix runs it, then flush of a spooled event.
	hookEnv := append(userEnv("hook", "HOOK"), "NIX_IPFS_SPOOL_DIR="+spool, "NIX_IPFS_CONFIG="+emptyConf, "NIX_IPFS_TIMEOUT=10s")
	nix.Hook = hookBin
	nix.Env = hookEnv
	direct := nix.Build(t, testenv.Drv("lp-direct-"+testenv.Nonce(), `echo direct > $out`, ""))[0]
	if files, _ := (hook.Spool{Dir: spool}).List(); len(files) != 0 {
		t.Fatalf("the hook user could not publish: %d events spooled", len(files))
	}
	nix.Env = append(append([]string{}, hookEnv...), "NIX_IPFS_NATS_URL=nats://127.0.0.1:1")
	spooled := nix.Build(t, testenv.Drv("lp-spooled-"+testenv.Nonce(), `echo spooled > $out`, ""))[0]
	start := time.Now()
	out, err := runBin(hookBin, []string{"flush"}, hookEnv...)
	if err != nil || !strings.Contains(out, "flushed 1 ") {
		t.Fatalf("hook flush as the hook user: %v\n%s", err, out)
	}
	t.Logf("flush as the hook user took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))

	paths := []string{direct, spooled}
	testenv.Eventually(t, 2*time.Minute, "both paths published", func() bool { return countNarinfos(cache, paths) == 2 })

	// Status with its user.
	out, err = runBin(nixIPFS, []string{"status", "--json"}, userEnv("status", "STATUS")...)
	var st struct {
		Stream    string            `json:"stream"`
		Consumers []json.RawMessage `json:"consumers"`
	}
	if err != nil || json.Unmarshal([]byte(out[max(strings.Index(out, "{"), 0):]), &st) != nil || st.Stream != events.DefaultStream {
		t.Errorf("status as the status user: %v\n%s", err, out)
	}

	components := []string{"publisher", "hook", "hook-flush", "status"}
	if hasCommand(t, bin, "mirror") {
		components = append(components, "mirror")
		testenv.StartProc(t, nixIPFS, []string{"mirror", "--name", "b"}, append(userEnv("mirror-b", "MIRROR_B"),
			"NIX_IPFS_KUBO_API="+kubo.API, "NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_CONFIG="+emptyConf)...)
		testenv.Eventually(t, 2*time.Minute, "both CIDs pinned by mirror b", func() bool {
			return len(streamEvents(t, admin, events.SubjectPinned("b"))) == 2
		})
	}
	// A real "published" event, to forge below.
	pub := &events.Published{}
	if es := streamEvents(t, admin, events.SubjectPublished); len(es) > 0 {
		pub = es[0].(*events.Published)
	}
	forged, _ := json.Marshal(pub)

	// Each worker dead-letters with its own user: garbage on the subjects
	// they consume.
	wantDead := 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if _, err := admin.Publish(ctx, events.SubjectBuilt, []byte("garbage for the publisher")); err != nil {
		t.Fatal(err)
	}
	if len(components) == 5 {
		wantDead++
		if _, err := admin.Publish(ctx, events.SubjectPublished, []byte("garbage for the mirror")); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	testenv.Eventually(t, time.Minute, "the garbage dead-lettered", func() bool { return len(deadLetters(t, admin)) == wantDead })
	// Status again, now that there are dead letters to list.
	out, err = runBin(nixIPFS, []string{"status", "--json"}, userEnv("status", "STATUS")...)
	var st2 struct {
		LastDead []json.RawMessage `json:"last_dead_letters"`
	}
	if err != nil || json.Unmarshal([]byte(out[max(strings.Index(out, "{"), 0):]), &st2) != nil || len(st2.LastDead) != wantDead {
		t.Errorf("status as the status user, listing dead letters: %v\n%s", err, out)
	}

	for _, v := range vlog.take() {
		// By design: hook flush tries to bring the stream's settings up to
		// date, and the hook user has no right to; it carries on.
		if strings.Contains(v, `"$G/user:hook"`) && strings.Contains(v, `"$JS.API.STREAM.`) {
			continue
		}
		// By design: status's dead-letter reader tries to delete itself when
		// done; the status user may not delete consumers (that right would
		// reach the workers' durable ones), and the reader expires anyway.
		if strings.Contains(v, `"$G/user:status"`) && strings.Contains(v, `"$JS.API.CONSUMER.DELETE.NIXIPFS.`) {
			continue
		}
		t.Errorf("a component did its work with a permission violation (the example config lacks a grant): %s", v)
	}

	// What each user must not do.
	type attempt struct{ user, pwKey, subject string }
	attempts := []attempt{
		{"hook", "HOOK", events.SubjectPublished},
		{"hook", "HOOK", events.SubjectPinned("b")},
		{"hook", "HOOK", events.SubjectDeadPrefix + "built"},
		{"hook", "HOOK", "$JS.API.STREAM.DELETE.NIXIPFS"},
		{"hook", "HOOK", "$JS.API.CONSUMER.CREATE.NIXIPFS.snoop.nixipfs.>"},
		{"hook", "HOOK", "$JS.API.STREAM.PURGE.NIXIPFS"},
		{"hook", "HOOK", "$KV.nixipfs_publish_locks.x"},
		{"publisher", "PUBLISHER", events.SubjectBuilt},
		{"publisher", "PUBLISHER", events.SubjectPinned("b")},
		{"publisher", "PUBLISHER", "$JS.API.STREAM.DELETE.NIXIPFS"},
		{"publisher", "PUBLISHER", "$JS.API.CONSUMER.DELETE.NIXIPFS.mirror-b"},
		{"mirror-b", "MIRROR_B", events.SubjectPublished},
		{"mirror-b", "MIRROR_B", events.SubjectBuilt},
		{"mirror-b", "MIRROR_B", events.SubjectPinned("c")},
		{"mirror-b", "MIRROR_B", "$JS.ACK.NIXIPFS.publisher.1.1.1.1.1"},
		{"mirror-b", "MIRROR_B", "$JS.API.CONSUMER.MSG.NEXT.NIXIPFS.publisher"},
		{"status", "STATUS", events.SubjectBuilt},
		{"status", "STATUS", events.SubjectPublished},
		{"status", "STATUS", "$JS.API.STREAM.DELETE.NIXIPFS"},
		{"status", "STATUS", "$JS.API.CONSUMER.DELETE.NIXIPFS.publisher"},
	}
	before := streamMsgs(t, admin)
	refused := 0
	for _, a := range attempts {
		var mu sync.Mutex
		var asyncErr error
		nc, err := nats.Connect(n.URL, nats.UserInfo(a.user, pw[a.pwKey]), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			asyncErr = err
			mu.Unlock()
		}))
		if err != nil {
			t.Fatalf("connect as %s: %v", a.user, err)
		}
		// A plain publish: the server answers a forbidden one with an
		// error before the flush's PONG. (A permitted one would do its
		// harm, and the stream count below would show it.)
		nc.Publish(a.subject, forged)
		ferr := nc.FlushTimeout(5 * time.Second)
		violated := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return asyncErr != nil && strings.Contains(asyncErr.Error(), "Permissions Violation")
		}
		for i := 0; i < 50 && !violated(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		nc.Close()
		if !violated() {
			t.Errorf("%s may publish to %s (flush: %v)", a.user, a.subject, ferr)
			continue
		}
		refused++
	}
	// The hook cannot read the stream either.
	hookNC, err := nats.Connect(n.URL, nats.UserInfo("hook", pw["HOOK"]))
	if err != nil {
		t.Fatal(err)
	}
	hjs, _ := jetstream.New(hookNC)
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	if _, err := hjs.OrderedConsumer(ctx, events.DefaultStream, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("the hook user could create a consumer and read the stream")
	} else {
		refused++
	}
	cancel()
	hookNC.Close()
	after := streamMsgs(t, admin)
	if after != before {
		t.Errorf("the stream went from %d to %d messages during the refused attempts", before, after)
	}
	if v := vlog.take(); len(v) < refused {
		t.Errorf("%d refusals but the server logged %d violations", refused, len(v))
	}
	reliability(t, "nats-least-privilege", "runs", len(components)+len(attempts)+1, "components_ok", len(components),
		"forbidden_tried", len(attempts)+1, "refused", refused, "lost", 0)
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
