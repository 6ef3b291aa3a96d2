package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a worker binary running for a test, its output in a log file.
type Proc struct {
	Cmd  *exec.Cmd
	Log  string
	name string
	args []string
	env  []string
	cred *syscall.Credential
	mu   sync.Mutex
	done chan struct{}
}

// StartProc starts bin with args and env (added to the test's environment).
// It is killed at cleanup; on failure its log tail is printed.
func StartProc(t testing.TB, bin string, args []string, env ...string) *Proc {
	t.Helper()
	return startProc(t, nil, filepath.Base(bin), bin, args, env)
}

// StartProcAs is StartProc with the process running as cred's user and
// group (nil: as the test); the test must be root to give another.
func StartProcAs(t testing.TB, cred *syscall.Credential, bin string, args []string, env ...string) *Proc {
	t.Helper()
	return startProc(t, cred, filepath.Base(bin), bin, args, env)
}

// startProc is StartProcAs with the name its log goes by (the program's,
// when bin is a wrapper such as the chroot's).
func startProc(t testing.TB, cred *syscall.Credential, label, bin string, args, env []string) *Proc {
	t.Helper()
	p := &Proc{name: bin, args: args, env: env, cred: cred,
		Log: filepath.Join(t.TempDir(), label+".log")}
	p.start(t)
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		if t.Failed() {
			t.Logf("%s log tail:\n%s", label, p.Tail(60))
		}
	})
	return p
}

func (p *Proc) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.name, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.Cmd, p.done = cmd, done
	p.mu.Unlock()
}

// Restart starts the process again with the same arguments.
func (p *Proc) Restart(t testing.TB) { p.start(t) }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Cmd != nil && p.Cmd.Process != nil {
		syscall.Kill(-p.Cmd.Process.Pid, sig)
	}
}

// Wait waits up to d for the process to exit and reports whether it did.
func (p *Proc) Wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Eventually polls cond every 100 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
