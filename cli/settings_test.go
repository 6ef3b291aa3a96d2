package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nix-ipfs/nix-ipfs/config"
	"github.com/nix-ipfs/nix-ipfs/hook"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// hookCommand names nix-ipfs-hook among the nix-ipfs subcommands here.
const hookCommand = "nix-ipfs-hook"

// settingSets returns the flag set of every command: each nix-ipfs
// subcommand and nix-ipfs-hook.
func settingSets() map[string]*config.Set {
	out := map[string]*config.Set{}
	for name, c := range commands {
		s := config.NewSet("nix-ipfs "+name, "", "")
		c.setup(s)
		out[name] = s
	}
	var hc hook.Config
	s := config.NewSet(hookCommand, "", "")
	hc.Register(s)
	out[hookCommand] = s
	return out
}

// sharedMeanings lists the settings that several commands read with help
// texts that differ, and the one meaning they share, so that one value
// serves every command on a host. A setting whose meaning differs between
// commands gets a different name instead (the substituter's nar-spool-dir
// is not the hook's spool-dir; status's status-timeout is not the hook's
// timeout).
var sharedMeanings = map[string]string{
	"kubo-api":            "this host's kubo RPC API",
	"cache-dir":           "the binary cache directory the publisher writes",
	"cache-url":           "the binary cache's URL",
	"concurrency":         "units of work handled at once (store paths, CIDs)",
	"max-attempts":        "attempts before an event that keeps failing is dead-lettered",
	"ack-wait":            "how long a silent worker keeps an event before it is redelivered",
	"mirror":              "the mirror's name",
	"host":                "this host's name in the events it sends",
	"json":                "print JSON",
	"dry-run":             "change nothing, say what would change",
	"upstream":            "the binary cache to read from, several for failover",
	"trusted-public-keys": "the publishers' keys, as in nix.conf",
	// The gate is `wait --timeout D`; the hook's timeout bounds a
	// run the same way, on NATS instead of on the mirrors.
	"timeout": "how long one run waits before it gives up",
}

// perProcess lists settings whose meaning is the same everywhere but whose
// value belongs to one process: an address it listens on, its own config
// file. They are given as flags or in the command's own config file
// (deploy/ does so), never in an environment several commands share.
var perProcess = map[string]bool{
	"config":       true,
	"listen":       true,
	"metrics-addr": true,
	// The store path a status or wait run asks about.
	"closure": true,
}

// TestOneMeaningPerSetting: a setting (flag, NIX_IPFS_* variable, config
// key) that several commands read has one meaning: the same help text, or
// an entry above that says what the one meaning is.
func TestOneMeaningPerSetting(t *testing.T) {
	usages := map[string]map[string][]string{} // flag -> usage -> commands
	for cmd, s := range settingSets() {
		s.VisitAll(func(f *flag.Flag) {
			if usages[f.Name] == nil {
				usages[f.Name] = map[string][]string{}
			}
			usages[f.Name][f.Usage] = append(usages[f.Name][f.Usage], cmd)
		})
	}
	shared := map[string]bool{}
	for name, byUsage := range usages {
		n := 0
		for _, cmds := range byUsage {
			n += len(cmds)
		}
		if n > 1 {
			shared[name] = true
		}
		if len(byUsage) < 2 || sharedMeanings[name] != "" || perProcess[name] {
			continue
		}
		var b strings.Builder
		for u, cmds := range byUsage {
			sort.Strings(cmds)
			fmt.Fprintf(&b, "\n  %s: %s", strings.Join(cmds, ", "), u)
		}
		t.Errorf("--%s (%s) means different things:%s\nrename one, or say in sharedMeanings what the one meaning is", name, config.EnvName(name), b.String())
	}
	for name := range sharedMeanings {
		if !shared[name] {
			t.Errorf("sharedMeanings lists %q, which no two commands read", name)
		}
	}
}

// TestEveryCommandWithTheUnionEnvironment gives every command the union of
// every command's environment, as on a host where all of them, the hook
// included, see the same NIX_IPFS_* variables, and checks each still works:
// each takes its own values, the hook (run, hydra, flush), status, serve
// and the substituter do their real work, and every other command accepts
// its settings (--config-check: they need kubo and a Nix store to run).
func TestEveryCommandWithTheUnionEnvironment(t *testing.T) {
	n := testenv.StartNATS(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	os.MkdirAll(cache, 0o755)
	os.WriteFile(filepath.Join(cache, "nix-cache-info"), []byte("StoreDir: /nix/store\n"), 0o644)
	upstream := httptest.NewServer(http.FileServer(http.Dir(cache)))
	defer upstream.Close()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	key := filepath.Join(dir, "signing-key")
	os.WriteFile(key, []byte("cache.example.org-1:"+base64.StdEncoding.EncodeToString(priv)), 0o600)
	kubo := "http://127.0.0.1:5001"

	// What each command is given on this host, settings shared with
	// others included. Per-process settings are flags (perArgs).
	envs := map[string]map[string]string{
		hookCommand: {"NATS_URL": n.URL, "SPOOL_DIR": filepath.Join(dir, "events"), "TIMEOUT": "10s",
			"HOST": "host-a", "STORE_DIR": "/nix/store"},
		"publisher": {"NATS_URL": n.URL, "CACHE_DIR": cache, "CACHE_URL": upstream.URL, "SECRET_KEY_FILE": key,
			"KUBO_API": kubo, "STORE_DIR": "/nix/store", "CONCURRENCY": "4", "LOG_FORMAT": "json", "ACK_WAIT": "2m0s"},
		"serve":       {"CACHE_DIR": cache, "LOG_FORMAT": "json"},
		"substituter": {"UPSTREAM": upstream.URL, "KUBO_API": kubo, "NAR_SPOOL_DIR": filepath.Join(dir, "nars"), "NAR_SPOOL_MAX_BYTES": "1000000000", "LOG_FORMAT": "json"},
		"mirror":      {"NATS_URL": n.URL, "KUBO_API": kubo, "NAME": "b", "CONCURRENCY": "4", "ACK_WAIT": "2m0s", "LOG_FORMAT": "json"},
		"replay":      {"NATS_URL": n.URL, "KUBO_API": kubo, "MIRROR": "b"},
		"backfill":    {"KUBO_API": kubo, "CACHE": cache, "MIRROR": "b", "NATS_URL": n.URL},
		"gc":          {"NATS_URL": n.URL, "KUBO_API": kubo, "MIN_MIRRORS": "1"},
		"prune":       {"NATS_URL": n.URL, "KUBO_API": kubo, "CACHE_DIR": cache, "KEEP_FOR": "720h0m0s", "HOST": "host-a"},
		"pin":         {"NATS_URL": n.URL, "CACHE_DIR": cache, "CACHE_URL": upstream.URL},
		"status":      {"NATS_URL": n.URL, "STATUS_TIMEOUT": "30s", "MIRRORS": "2"},
		"wait":        {"NATS_URL": n.URL, "MIRRORS": "2", "POLL": "1s"},
		"up":          {"NATS_URL": n.URL, "KUBO_API": kubo, "SECRET_KEY_FILE": key, "DATA_DIR": filepath.Join(dir, "up"), "CACHE_DIR": cache, "CACHE_URL": upstream.URL, "STORE_DIR": "/nix/store", "CONCURRENCY": "4", "ACK_WAIT": "2m0s", "LOG_FORMAT": "json"},
		"version":     {},
		"latest": {"UPSTREAM": upstream.URL, "STATE_DIR": filepath.Join(dir, "latest"),
			"TRUSTED_PUBLIC_KEYS": "cache.example.org-1:" + base64.StdEncoding.EncodeToString(pub)},
	}
	perArgs := map[string][]string{"replay": {"--all"}, "pin": {"list"}, "latest": {"proj:main:hello"}, "wait": {"--closure", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}}
	sets := settingSets()
	for cmd := range sets {
		if _, ok := envs[cmd]; !ok {
			t.Errorf("command %q has no environment in this test: add what it is given on a host", cmd)
		}
	}

	union := map[string]string{}
	from := map[string]string{}
	for cmd, env := range envs {
		for k, v := range env {
			k = config.EnvPrefix + k
			if old, ok := union[k]; ok && old != v {
				t.Fatalf("%s is %q for %s and %q for %s: one host cannot give both", k, old, from[k], v, cmd)
			}
			union[k], from[k] = v, cmd
		}
	}
	getenv := func(extra map[string]string) func(string) string {
		return func(k string) string {
			if v, ok := extra[k]; ok {
				return v
			}
			return union[k]
		}
	}

	// Every command takes its own values and accepts the rest.
	for cmd, env := range envs {
		var out, errb bytes.Buffer
		var code int
		if cmd == hookCommand {
			code = hook.Main(context.Background(), []string{"config-check"}, getenv(nil), &out, &errb)
		} else {
			code = Main(context.Background(), append([]string{cmd, "--config-check"}, perArgs[cmd]...), getenv(nil), &out, &errb)
		}
		if code != 0 {
			t.Errorf("%s --config-check with the union environment: exit %d\n%s", cmd, code, errb.String())
			continue
		}
		for k, v := range env {
			name := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
			if !strings.Contains(out.String(), fmt.Sprintf("\n%s = %s\t# env %s%s\n", name, v, config.EnvPrefix, k)) &&
				!strings.HasPrefix(out.String(), fmt.Sprintf("%s = %s\t", name, v)) && !config.IsSecret(name) {
				t.Errorf("%s does not take %s%s=%s as --%s:\n%s", cmd, config.EnvPrefix, k, v, name, out.String())
			}
		}
	}

	ctx := context.Background()
	runHook := func(args []string, extra map[string]string) string {
		var out, errb bytes.Buffer
		if code := hook.Main(ctx, args, getenv(extra), &out, &errb); code != 0 {
			t.Errorf("%s %v: exit %d", hookCommand, args, code)
		}
		return out.String() + errb.String()
	}
	// The hook as Nix runs it: published, not spooled.
	if out := runHook(nil, map[string]string{"OUT_PATHS": "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"}); out != "" {
		t.Errorf("hook run said %q; want silence (published)", out)
	}
	hydraJSON := filepath.Join("..", "hydra", "testdata", "successful.json")
	if out := runHook([]string{"hydra"}, map[string]string{"HYDRA_JSON": hydraJSON}); !strings.Contains(out, "published") {
		t.Errorf("hook hydra said %q", out)
	}
	if out := runHook([]string{"flush"}, nil); !strings.Contains(out, "flushed 0") {
		t.Errorf("hook flush said %q", out)
	}
	var out, errb bytes.Buffer
	if code := Main(ctx, []string{"status"}, getenv(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "nixipfs.built") {
		t.Errorf("status: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// The servers: each on its own --listen, answering from the cache.
	for _, cmd := range []string{"serve", "substituter"} {
		addr := freeAddr(t)
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan int, 1)
		var sout, serr bytes.Buffer
		go func() { done <- Main(sctx, []string{cmd, "--listen", addr}, getenv(nil), &sout, &serr) }()
		ok := false
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(50 * time.Millisecond) {
			select {
			case code := <-done:
				t.Fatalf("%s exited %d at start:\n%s", cmd, code, serr.String())
			default:
			}
			resp, err := http.Get("http://" + addr + "/nix-cache-info")
			if err == nil {
				ok = resp.StatusCode == 200
				resp.Body.Close()
			}
		}
		cancel()
		if code := <-done; !ok || code != 0 {
			t.Errorf("%s with the union environment: served nix-cache-info %v, exit %d\n%s", cmd, ok, code, serr.String())
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "nars")); err != nil || !st.IsDir() {
		t.Errorf("the substituter did not create its NAR spool directory: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
