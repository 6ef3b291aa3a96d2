package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// scope lets the benchmark use internal/testenv, which was written for
// tests: it is the testing.TB those helpers take. Fatal unwinds to the
// section that opened the scope (see runScope); Cleanup and TempDir are
// undone when the scope closes, last first, so every daemon a section
// starts is stopped and every directory removed, whatever happened.
//
// The embedded testing.TB is nil: only the methods below exist, which are
// the ones testenv calls. Anything else would panic, and be reported as the
// section's failure.
type scope struct {
	testing.TB
	name string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	closed   bool
}

// fatal is what Fatalf panics with, for runScope to recover.
type fatal struct{ msg string }

var (
	scopesMu sync.Mutex
	open     = map[*scope]bool{}
)

func newScope(name string) *scope {
	s := &scope{name: name}
	scopesMu.Lock()
	open[s] = true
	scopesMu.Unlock()
	return s
}

// runScope runs f in a fresh scope and closes it. A Fatal inside f (or a
// panic) becomes the returned error.
func runScope(name string, f func(s *scope)) (err error) {
	s := newScope(name)
	defer s.close()
	defer func() {
		switch r := recover().(type) {
		case nil:
		case fatal:
			err = errors.New(r.msg)
		default:
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	f(s)
	return nil
}

// closeAll closes every open scope, for an interrupted run.
func closeAll() {
	scopesMu.Lock()
	var all []*scope
	for s := range open {
		all = append(all, s)
	}
	scopesMu.Unlock()
	for _, s := range all {
		s.close()
	}
}

func (s *scope) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	cl := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		func() {
			defer func() {
				if r := recover(); r != nil {
					logf("%s: cleanup: %v", s.name, r)
				}
			}()
			cl[i]()
		}()
	}
	scopesMu.Lock()
	delete(open, s)
	scopesMu.Unlock()
}

func (s *scope) Helper()      {}
func (s *scope) Name() string { return s.name }

func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *scope) TempDir() string {
	d, err := os.MkdirTemp("", "nix-ipfs-bench-")
	if err != nil {
		s.Fatalf("temp dir: %v", err)
	}
	s.Cleanup(func() { removeAll(d) })
	return d
}

func (s *scope) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

func (s *scope) Fatalf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	panic(fatal{fmt.Sprintf(format, args...)})
}

func (s *scope) Fatal(args ...any)                { s.Fatalf("%s", fmt.Sprint(args...)) }
func (s *scope) FailNow()                         { s.Fatalf("failed") }
func (s *scope) Skipf(format string, args ...any) { s.Fatalf("cannot run: "+format, args...) }
func (s *scope) Skip(args ...any)                 { s.Fatalf("cannot run: %s", fmt.Sprint(args...)) }
func (s *scope) Logf(format string, args ...any)  { logf(s.name+": "+format, args...) }
func (s *scope) Log(args ...any)                  { logf("%s: %s", s.name, fmt.Sprint(args...)) }
func (s *scope) Errorf(format string, args ...any) {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.Logf(format, args...)
}
func (s *scope) Error(args ...any) { s.Errorf("%s", fmt.Sprint(args...)) }
func (s *scope) check(err error, what string) {
	if err != nil {
		s.Fatalf("%s: %v", what, err)
	}
}

// removeAll removes a tree, making read-only directories (a Nix store
// copied into it) writable first.
func removeAll(dir string) {
	if err := os.RemoveAll(dir); err == nil {
		return
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	os.RemoveAll(dir)
}

var verbose bool

func logf(format string, args ...any) {
	if verbose {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
	}
}

// progress always prints: the run takes minutes and should say what it does.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// run runs a command and returns its stdout; a failure is fatal.
func (s *scope) run(ctx context.Context, env []string, name string, args ...string) string {
	out, err := runCmd(ctx, env, name, args...)
	if err != nil {
		s.Fatalf("%v", err)
	}
	return out
}

func runCmd(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 20))
	}
	return stdout.String(), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procStatus returns a field of /proc/PID/status in bytes (for the kB
// fields: VmRSS, VmHWM).
func procStatus(pid int, field string) (int64, error) {
	n, err := procField(pid, "status", field)
	return n * 1024, err
}

// procField returns the number that starts a "field: value" line of
// /proc/PID/file (status, io).
func procField(pid int, file, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/%s has no %s", pid, file, field)
}

// resetPeakRSS makes VmHWM start again from the current RSS (clear_refs 5,
// Linux 4.0 and later), so a peak can be read for one phase of a process.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// cpuTime returns the user+system CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	// After ")": state(0) ppid(1) ... utime(11) stime(12), in clock ticks.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// kuboPID finds the ipfs daemon serving the repository repo, by its
// environment (testenv does not expose the process).
func kuboPID(repo string) int {
	ents, _ := os.ReadDir("/proc")
	want := []byte("IPFS_PATH=" + repo + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte("daemon")) {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err == nil && bytes.Contains(env, want) {
			return pid
		}
	}
	return 0
}

// waitFor polls cond every interval until it holds or timeout passes.
func (s *scope) waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ctx.Err() != nil {
			s.Fatalf("interrupted waiting for %s", what)
		}
		if time.Now().After(deadline) {
			s.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
