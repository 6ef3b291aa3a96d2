// Package kubod runs a kubo daemon as a child process for `nix-ipfs up`
// and the demo: where no kubo API answers but an `ipfs` binary is there, a
// one-host deployment gets its own node with a repository under its data
// directory, started with it and stopped with it.
package kubod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ipfs/nix-ipfs/ipfs"
)

// Options configure a new repository; they apply at init only.
type Options struct {
	// Profile is passed to `ipfs init --profile` ("test" for loopback-only
	// nodes with random ports; "" for kubo's default).
	Profile string
	// Swarm, API and Gateway override Addresses.* when set.
	Swarm   []string
	API     string
	Gateway string
	// Filestore enables Experimental.FilestoreEnabled (for --ipfs-nocopy).
	Filestore bool
	// Settings are set in the config before every start (see Settings).
	Settings []Setting
	// Offline starts the daemon without networking.
	Offline bool
	// Log receives the daemon's output; nil discards it.
	Log io.Writer
}

// Daemon is a running kubo.
type Daemon struct {
	Repo   string
	API    string // http URL
	Client *ipfs.Kubo
	cmd    *exec.Cmd
	done   chan struct{}
}

// Start initialises repo if it has no config, then starts `ipfs daemon`
// and waits until its API answers.
func Start(ctx context.Context, bin, repo string, o Options) (*Daemon, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("ipfs"); err != nil {
			return nil, errors.New("no kubo API answers and no ipfs binary on PATH: install kubo or give --kubo-api")
		}
	}
	d := &Daemon{Repo: repo}
	if _, err := os.Stat(filepath.Join(repo, "config")); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(repo, 0o700); err != nil {
			return nil, err
		}
		args := []string{"init"}
		if o.Profile != "" {
			args = append(args, "--profile="+o.Profile)
		}
		if err := d.run(ctx, bin, args...); err != nil {
			return nil, err
		}
		set := func(key string, v any) error {
			b, _ := json.Marshal(v)
			return d.run(ctx, bin, "config", "--json", key, string(b))
		}
		var err error
		if len(o.Swarm) > 0 {
			err = errors.Join(err, set("Addresses.Swarm", o.Swarm))
		}
		if o.API != "" {
			err = errors.Join(err, set("Addresses.API", o.API))
		}
		if o.Gateway != "" {
			err = errors.Join(err, set("Addresses.Gateway", o.Gateway))
		}
		if o.Filestore {
			err = errors.Join(err, set("Experimental.FilestoreEnabled", true))
		}
		if err != nil {
			return nil, err
		}
	}
	// nix-ipfs's settings for the node's role, at every start: a repository
	// made by an earlier release gets the ones added since (the compose
	// file's init scripts do the same).
	var err error
	for _, st := range o.Settings {
		err = errors.Join(err, d.run(ctx, bin, "config", "--json", st.Key, st.JSON))
	}
	if err != nil {
		return nil, err
	}
	apiFile := filepath.Join(repo, "api")
	os.Remove(apiFile) // a killed daemon leaves it behind
	args := []string{"daemon", "--migrate"}
	if o.Offline {
		args = append(args, "--offline")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env(repo)
	out := o.Log
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ipfs daemon: %w", err)
	}
	d.cmd, d.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.done) }()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-d.done:
			return nil, fmt.Errorf("ipfs daemon (%s) exited during start", repo)
		case <-ctx.Done():
			d.Stop(5 * time.Second)
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if err := d.ready(apiFile); err == nil {
			return d, nil
		} else if time.Now().After(deadline) {
			d.Stop(5 * time.Second)
			return nil, fmt.Errorf("ipfs daemon (%s) not answering: %w", repo, err)
		}
	}
}

func (d *Daemon) ready(apiFile string) error {
	b, err := os.ReadFile(apiFile)
	if err != nil {
		return err
	}
	url, err := ipfs.ResolveAPI(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	c, err := ipfs.Dial(url)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		return err
	}
	d.API, d.Client = url, c
	return nil
}

// Stop sends SIGTERM, waits up to timeout, then kills.
func (d *Daemon) Stop(timeout time.Duration) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(timeout):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

func (d *Daemon) run(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env(d.Repo)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ipfs %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func env(repo string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IPFS_PATH=") {
			e = append(e, kv)
		}
	}
	return append(e, "IPFS_PATH="+repo, "IPFS_TELEMETRY=off")
}
