package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newSet(t *testing.T, file string) (*Set, *NATS, *time.Duration) {
	s := NewSet("test", "test: a command", file)
	var n NATS
	n.Register(s)
	d := s.Duration("timeout", time.Second, "a timeout")
	return s, &n, d
}

func TestPrecedenceFlagEnvFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.conf")
	os.WriteFile(file, []byte(`# a comment
nats-url = nats://file:4222
nats_token = pass#word   # the # inside stays
timeout = 3s
stream = FROMFILE
`), 0o644)
	env := map[string]string{"NIX_IPFS_CONFIG": file, "NIX_IPFS_NATS_URL": "nats://env:4222", "NIX_IPFS_STREAM": "FROMENV"}
	s, n, d := newSet(t, "")
	if err := s.Parse([]string{"--stream", "FROMFLAG"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if n.Stream != "FROMFLAG" || n.URL != "nats://env:4222" || *d != 3*time.Second || n.Token != "pass#word" {
		t.Errorf("stream=%s url=%s timeout=%v token=%q", n.Stream, n.URL, *d, n.Token)
	}
	if s.Sources["stream"] != "flag" || s.Sources["nats-url"] != "env NIX_IPFS_NATS_URL" || !strings.HasPrefix(s.Sources["timeout"], "file ") || s.Sources["nats-creds"] != "default" {
		t.Errorf("sources %v", s.Sources)
	}
	var b bytes.Buffer
	s.Dump(&b)
	if strings.Contains(b.String(), "pass#word") || !strings.Contains(b.String(), "nats-token = (set, hidden)") {
		t.Errorf("dump shows the token:\n%s", b.String())
	}
	if o := n.StreamOptions(); o.Update {
		t.Error("stream limits marked explicit though none was set")
	}
}

func TestDefaultFileOptionalExplicitFileRequired(t *testing.T) {
	s, _, _ := newSet(t, "/nonexistent/default.conf")
	if err := s.Parse(nil, func(string) string { return "" }); err != nil {
		t.Errorf("a missing default file is an error: %v", err)
	}
	s, _, _ = newSet(t, "")
	if err := s.Parse([]string{"--config", "/nonexistent/x.conf"}, func(string) string { return "" }); err == nil {
		t.Error("a missing --config file is not an error")
	}
}

func TestErrorsNameTheirSource(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.conf")
	os.WriteFile(file, []byte("nats-url = x\nno-such-setting = 1\nbroken line\n"), 0o644)
	s, _, _ := newSet(t, "")
	err := s.Parse([]string{"--config", file}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), ":3:") {
		t.Errorf("err = %v, want the line of the broken line", err)
	}
	os.WriteFile(file, []byte("no-such-setting = 1\n"), 0o644)
	s, n, _ := newSet(t, "")
	err = s.Parse([]string{"--config", file}, func(k string) string {
		if k == "NIX_IPFS_TIMEOUT" {
			return "soon"
		}
		return ""
	})
	for _, want := range []string{"no-such-setting", "NIX_IPFS_TIMEOUT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to name %s", err, want)
		}
	}
	if n.URL != DefaultNATSURL {
		t.Errorf("a broken source changed other settings: %s", n.URL)
	}
}

func TestUsageListsEnvironmentNames(t *testing.T) {
	s, _, _ := newSet(t, "/etc/x.conf")
	var b bytes.Buffer
	s.PrintUsage(&b)
	for _, want := range []string{"--nats-url", "env NIX_IPFS_NATS_URL", "default nats://127.0.0.1:4222", "NIX_IPFS_CONFIG", "/etc/x.conf"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestStringsRepeatsAndSplits(t *testing.T) {
	s := NewSet("test", "test: a command", "")
	var a, b Strings
	s.StringsVar(&a, "peer", "a peer")
	s.StringsVar(&b, "other", "another")
	env := map[string]string{"NIX_IPFS_OTHER": "/ip4/1.2.3.4/tcp/1, /ip4/5.6.7.8/tcp/2\t/dns/x/tcp/3"}
	if err := s.Parse([]string{"--peer", "/ip4/1.1.1.1/tcp/1", "--peer", "/ip4/2.2.2.2/tcp/2"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || a[1] != "/ip4/2.2.2.2/tcp/2" {
		t.Errorf("flags: %q", a)
	}
	if len(b) != 3 || b[0] != "/ip4/1.2.3.4/tcp/1" || b[2] != "/dns/x/tcp/3" {
		t.Errorf("env: %q", b)
	}
	if b.String() != "/ip4/1.2.3.4/tcp/1,/ip4/5.6.7.8/tcp/2,/dns/x/tcp/3" {
		t.Errorf("String: %q", b.String())
	}
}
