// Package lease keeps two publishers from publishing one store path at
// the same time: a lease per path in a JetStream key-value bucket, so
// publishers on different hosts that share a cache (and a NATS) see each
// other. A lease is refreshed while held; when its holder dies, a
// publisher on the same machine takes it over at once (the holder's
// process is gone), one on another machine after the lease's TTL.
//
// When another live publisher holds a path, Lock fails at once with an
// error IsHeld recognises: the caller waits on its own short schedule and
// tries again, and then usually finds the path done.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/errs"
)

// ErrHeld marks a lease held by another live publisher.
var ErrHeld = errors.New("lease held")

// IsHeld reports whether err says another publisher holds the lease.
func IsHeld(err error) bool { return errors.Is(err, ErrHeld) }

// DefaultTTL is how long a lease outlives a holder that stopped
// refreshing it (every TTL/3). It bounds how long a path stalls when its
// publisher dies on another host, or on this host before the lease named
// a process that can be checked. Short, so a crash costs seconds; long
// enough that a NATS leader election (about 7 s) does not lose a lease.
const DefaultTTL = 30 * time.Second

// Holder names a lease's holder precisely enough that another publisher
// on the same machine can tell whether it is still alive: a process id is
// only meaningful within one kernel boot and one pid namespace, and with
// the process's start time it is not fooled by a reused pid.
type Holder struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// Boot is the kernel's boot id (/proc/sys/kernel/random/boot_id).
	Boot string `json:"boot,omitempty"`
	// PIDNS is the holder's pid namespace (/proc/self/ns/pid), so containers
	// sharing a kernel and a hostname never judge each other's pids.
	PIDNS string `json:"pidns,omitempty"`
	// Start is the process's start time in clock ticks since boot
	// (/proc/<pid>/stat field 22).
	Start uint64 `json:"start,omitempty"`
	// StorePath is what the holder is publishing, for a person reading it.
	StorePath string `json:"store_path,omitempty"`
}

func (h Holder) String() string { return h.Host + "/" + strconv.Itoa(h.PID) }

// Self describes this process.
func Self() Holder {
	host, _ := os.Hostname()
	h := Holder{Host: host, PID: os.Getpid()}
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		h.Boot = strings.TrimSpace(string(b))
	}
	h.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
	h.Start, _ = procStart(h.PID)
	return h
}

// procStart reads a process's start time from /proc/<pid>/stat.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing parenthesis, where field 3 starts.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	const startField = 22 - 3
	if len(f) <= startField {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[startField], 10, 64)
}

// DeadOnThisMachine reports whether the holder h is known to be dead: it
// ran in this kernel boot and pid namespace as self does, and its process
// is gone or is now another process. A holder on another machine, or one
// that cannot be judged (an older publisher's lease), is never dead here:
// its lease ends with the TTL.
func (self Holder) DeadOnThisMachine(h Holder) bool {
	if self.Boot == "" || self.PIDNS == "" || h.Boot != self.Boot || h.PIDNS != self.PIDNS || h.PID <= 0 {
		return false
	}
	if h.PID == self.PID && h.Start == self.Start {
		return false // this very process
	}
	start, err := procStart(h.PID)
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	return h.Start != 0 && start != h.Start
}

// parseHolder reads a lease's value. Leases written by older publishers
// hold "host/pid" as plain text: they parse to a holder with no boot id,
// which is never judged dead.
func parseHolder(v []byte) Holder {
	var h Holder
	if err := json.Unmarshal(v, &h); err == nil && h.Host != "" {
		return h
	}
	host, pid, _ := strings.Cut(string(v), "/")
	h = Holder{Host: host}
	h.PID, _ = strconv.Atoi(pid)
	return h
}

// KV holds leases in a JetStream key-value bucket, so publishers on
// different hosts that share a cache (and a NATS) see each other. A lease
// is refreshed every TTL/3 while held. When its holder dies, a publisher on
// the same machine takes it over at once (the holder's process is gone);
// one on another machine waits for the TTL.
type KV struct {
	KV   jetstream.KeyValue
	Self Holder
	TTL  time.Duration
	Log  *zap.Logger
}

// Bucket is the key-value bucket that holds publish leases.
const Bucket = "nixipfs_publish_locks"

// NewKV creates or opens the lock bucket, with replicas copies on a
// NATS cluster (0: as many as the default stream has, events.StreamReplicas).
func NewKV(ctx context.Context, js jetstream.JetStream, self Holder, ttl time.Duration, replicas int, log *zap.Logger) (*KV, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	kv, err := events.EnsureKeyValue(ctx, js, events.DefaultStream, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "nix-ipfs publisher leases, one per store path hash being published",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("lock bucket: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &KV{KV: kv, Self: self, TTL: ttl, Log: log}, nil
}

// Lock takes the lease on key: free, or held by a holder dead on this
// machine. Otherwise it fails at once with an error IsHeld recognises.
func (l *KV) Lock(ctx context.Context, key, storePath string) (context.Context, func(), error) {
	me := l.Self
	me.StorePath = storePath
	val, err := json.Marshal(me)
	if err != nil {
		return nil, nil, errs.E(errs.Invalid, err)
	}
	rev, err := l.KV.Create(ctx, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		rev, err = l.takeOver(ctx, key, val)
	}
	if err != nil {
		return nil, nil, err
	}
	lctx, lost := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(l.TTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r, err := l.KV.Update(context.Background(), key, val, rev)
				if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
					// Expired while NATS was away, or taken over: the key is
					// free again only in the first case.
					r, err = l.KV.Create(context.Background(), key, val)
					if errors.Is(err, jetstream.ErrKeyExists) {
						holder := "another publisher"
						if e, gerr := l.KV.Get(context.Background(), key); gerr == nil {
							holder = parseHolder(e.Value()).String()
						}
						l.Log.Warn("lost the publish lease; stopping this path", zap.String("key", key),
							zap.String("store_path", storePath), zap.String("holder", holder))
						lost(errs.Errorf(errs.Transient, "%s: lost the publish lease to %s", storePath, holder))
						return
					}
				}
				if err != nil {
					l.Log.Warn("cannot refresh publish lease", zap.String("key", key), zap.Error(err))
					continue
				}
				rev = r
			}
		}
	}()
	return lctx, func() {
		close(stop)
		<-done
		lost(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Purge rather than delete: the key must be free for Create again.
		if err := l.KV.Purge(ctx, key, jetstream.LastRevision(rev)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			l.Log.Warn("cannot release publish lease; it expires by itself", zap.String("key", key), zap.Error(err))
		}
	}, nil
}

// takeOver replaces a lease whose holder is dead on this machine, with a
// compare-and-set on its revision, so of several publishers taking over
// one lease only one wins.
func (l *KV) takeOver(ctx context.Context, key string, val []byte) (uint64, error) {
	e, err := l.KV.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between Create and Get: take it the ordinary way.
		rev, err := l.KV.Create(ctx, key, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, errs.E(errs.Transient, fmt.Errorf("being published by another publisher: %w", ErrHeld))
		}
		if err != nil {
			return 0, errs.E(errs.Transient, fmt.Errorf("lease %s: %w", key, err))
		}
		return rev, nil
	}
	if err != nil {
		return 0, errs.E(errs.Transient, fmt.Errorf("lease %s: %w", key, err))
	}
	holder := parseHolder(e.Value())
	if !l.Self.DeadOnThisMachine(holder) {
		return 0, errs.E(errs.Transient, fmt.Errorf("being published by %s: %w", holder, ErrHeld))
	}
	rev, err := l.KV.Update(ctx, key, val, e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, errs.E(errs.Transient, fmt.Errorf("being published by another publisher: %w", ErrHeld))
	}
	if err != nil {
		return 0, errs.E(errs.Transient, fmt.Errorf("lease %s: %w", key, err))
	}
	l.Log.Info("took over the publish lease of a dead publisher", zap.String("key", key),
		zap.String("dead_holder", holder.String()), zap.Int("dead_pid", holder.PID))
	return rev, nil
}

// ReapDead releases the leases of holders dead on this machine, such as a
// predecessor killed between announcing a path and releasing its lease:
// nobody would otherwise need that lease, and it would linger until its TTL
// as a false "being published". It returns how many it released.
func (l *KV) ReapDead(ctx context.Context) (int, error) {
	keys, err := l.KV.ListKeys(ctx)
	if err != nil {
		return 0, errs.E(errs.Transient, fmt.Errorf("list publish leases: %w", err))
	}
	defer keys.Stop()
	n := 0
	for key := range keys.Keys() {
		e, err := l.KV.Get(ctx, key)
		if err != nil {
			continue // released meanwhile
		}
		holder := parseHolder(e.Value())
		if !l.Self.DeadOnThisMachine(holder) {
			continue
		}
		if err := l.KV.Purge(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
			continue // taken over meanwhile
		}
		l.Log.Info("released the publish lease of a dead publisher", zap.String("key", key),
			zap.String("dead_holder", holder.String()), zap.String("store_path", holder.StorePath))
		n++
	}
	return n, nil
}
