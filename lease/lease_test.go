package lease

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/internal/errs"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

func newLocker(t *testing.T, self Holder, ttl time.Duration) *KV {
	t.Helper()
	ns := testenv.StartNATS(t)
	_, js := ns.Connect(t)
	l, err := NewKV(context.Background(), js, self, ttl, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// putHolder writes a lease as another publisher would have.
func putHolder(t *testing.T, l *KV, key string, h Holder) {
	t.Helper()
	v, _ := json.Marshal(h)
	if _, err := l.KV.Create(context.Background(), key, v); err != nil {
		t.Fatal(err)
	}
}

// exitedPID returns the pid of a process that has exited and been reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

func TestSelfDescribesThisProcess(t *testing.T) {
	self := Self()
	if self.PID != os.Getpid() || self.Host == "" {
		t.Fatalf("Self() = %+v", self)
	}
	if self.Boot == "" || self.PIDNS == "" || self.Start == 0 {
		t.Fatalf("Self() cannot judge holders on this machine: %+v", self)
	}
	if start, err := procStart(os.Getpid()); err != nil || start != self.Start {
		t.Errorf("procStart = %d, %v; want %d", start, err, self.Start)
	}
}

func TestLockTakesOverOnlyDeadHoldersOnThisMachine(t *testing.T) {
	self := Self()
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Process.Kill(); live.Wait() })
	liveStart, err := procStart(live.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		holder   Holder
		plain    string // an older publisher's "host/pid" lease
		takeOver bool
	}{
		{name: "dead process, this machine", holder: Holder{Host: self.Host, PID: exitedPID(t), Boot: self.Boot, PIDNS: self.PIDNS, Start: 1}, takeOver: true},
		{name: "pid reused by another process", holder: Holder{Host: self.Host, PID: live.Process.Pid, Boot: self.Boot, PIDNS: self.PIDNS, Start: liveStart + 1}, takeOver: true},
		{name: "live process, this machine", holder: Holder{Host: self.Host, PID: live.Process.Pid, Boot: self.Boot, PIDNS: self.PIDNS, Start: liveStart}},
		{name: "dead pid, another kernel boot", holder: Holder{Host: self.Host, PID: exitedPID(t), Boot: "another-boot", PIDNS: self.PIDNS, Start: 1}},
		{name: "dead pid, another pid namespace", holder: Holder{Host: self.Host, PID: exitedPID(t), Boot: self.Boot, PIDNS: "pid:[1]", Start: 1}},
		{name: "older publisher's plain lease", plain: self.Host + "/" + "999999"},
		{name: "garbage lease", plain: "\x00{not json"},
	}
	l := newLocker(t, self, time.Minute)
	ctx := context.Background()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := "k" + string(rune('a'+i))
			if c.plain != "" {
				if _, err := l.KV.Create(ctx, key, []byte(c.plain)); err != nil {
					t.Fatal(err)
				}
			} else {
				putHolder(t, l, key, c.holder)
			}
			lctx, unlock, err := l.Lock(ctx, key, "/nix/store/x")
			if !c.takeOver {
				if !IsHeld(err) || !errs.Is(err, errs.Transient) {
					t.Fatalf("Lock = %v, want a transient 'held' error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lock did not take over: %v", err)
			}
			e, _ := l.KV.Get(ctx, key)
			if h := parseHolder(e.Value()); h.PID != self.PID || h.StorePath != "/nix/store/x" {
				t.Errorf("lease now names %+v", h)
			}
			if lctx.Err() != nil {
				t.Error("the lease's context is done while held")
			}
			unlock()
			if _, err := l.KV.Get(ctx, key); err == nil {
				t.Error("unlock left the lease in place")
			}
		})
	}
}

func TestLockHeldByOtherHostUntilReleased(t *testing.T) {
	a := Self()
	b := a
	b.Boot, b.Host = "b-boot", "b"
	la := newLocker(t, a, time.Minute)
	lb := &KV{KV: la.KV, Self: b, TTL: time.Minute, Log: la.Log}
	ctx := context.Background()
	_, unlock, err := la.Lock(ctx, "p", "/nix/store/p")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := lb.Lock(ctx, "p", "/nix/store/p"); !IsHeld(err) {
		t.Fatalf("second holder: %v, want held", err)
	}
	unlock()
	_, unlockB, err := lb.Lock(ctx, "p", "/nix/store/p")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	unlockB()
}

// A holder whose lease was taken from it (here: overwritten, as after an
// expiry while NATS was away and another publisher's Create) stops: its
// context ends with a cause that says so.
func TestLockLostCancelsTheHolder(t *testing.T) {
	l := newLocker(t, Self(), 600*time.Millisecond)
	ctx := context.Background()
	lctx, unlock, err := l.Lock(ctx, "p", "/nix/store/p")
	if err != nil {
		t.Fatal(err)
	}
	thief, _ := json.Marshal(Holder{Host: "thief", PID: 1})
	if _, err := l.KV.Put(ctx, "p", thief); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the holder never noticed it lost the lease")
	}
	cause := context.Cause(lctx)
	if !errs.Is(cause, errs.Transient) || errors.Is(cause, context.Canceled) {
		t.Errorf("cause %v: want a transient 'lost the lease' error", cause)
	}
	unlock()
	if e, err := l.KV.Get(ctx, "p"); err != nil || parseHolder(e.Value()).Host != "thief" {
		t.Errorf("releasing a lost lease removed the new holder's: %v", err)
	}
}

func TestReapDeadReleasesOnlyDeadHoldersLeases(t *testing.T) {
	self := Self()
	l := newLocker(t, self, time.Minute)
	ctx := context.Background()
	if n, err := l.ReapDead(ctx); err != nil || n != 0 {
		t.Fatalf("empty bucket: %d, %v", n, err)
	}
	putHolder(t, l, "dead", Holder{Host: self.Host, PID: exitedPID(t), Boot: self.Boot, PIDNS: self.PIDNS, Start: 1})
	putHolder(t, l, "elsewhere", Holder{Host: "b", PID: exitedPID(t), Boot: "b-boot", PIDNS: self.PIDNS, Start: 1})
	_, unlock, err := l.Lock(ctx, "mine", "/nix/store/m")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	n, err := l.ReapDead(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ReapDead = %d, %v; want 1", n, err)
	}
	if _, err := l.KV.Get(ctx, "dead"); err == nil {
		t.Error("the dead holder's lease is still there")
	}
	for _, k := range []string{"elsewhere", "mine"} {
		if _, err := l.KV.Get(ctx, k); err != nil {
			t.Errorf("lease %s released: %v", k, err)
		}
	}
}
