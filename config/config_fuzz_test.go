package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzConfigFile: the config file is outside input (the hook reads
// /etc/nix-ipfs/hook.conf with Nix's daemon environment). Whatever it
// holds, Parse must not panic; and a password it sets is used, yet never
// printed by Dump (--config-check).
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("nats-url = nats://127.0.0.1:4222\nspool-dir = /var/lib/x # comment\n"))
	f.Add([]byte("# only a comment\n\n   \n"))
	f.Add([]byte("nats_url=nats://a#b\ntimeout = 5s\n"))
	f.Add([]byte("timeout = forever\nunknown = 1\n"))
	f.Add([]byte("no equals sign\n"))
	f.Add([]byte("nats-url = a\nnats-url = b\n"))
	f.Add([]byte("config = /etc/passwd\n"))
	f.Add([]byte("\x00\xff=\xfe\n=\n==\n"))
	f.Add([]byte(strings.Repeat("a = b\n", 1000)))
	const secret = "S3CRET-pw-not-to-print"
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "hook.conf")
		content := append(append([]byte{}, data...), []byte("\nnats-password = "+secret+"\n")...)
		if err := os.WriteFile(file, content, 0o600); err != nil {
			t.Fatal(err)
		}
		s := NewSet("fuzz", "fuzz", "")
		var n NATS
		n.Register(s)
		var timeout time.Duration
		s.DurationVar(&timeout, "timeout", time.Second, "")
		s.String("spool-dir", "", "")
		err := s.Parse([]string{"--config", file}, func(string) string { return "" })
		var out bytes.Buffer
		s.Dump(&out)
		if strings.Contains(out.String(), secret) {
			t.Fatalf("Dump prints the password:\n%s", out.String())
		}
		if err == nil && n.Password != secret && !bytes.Contains(data, []byte("password")) {
			t.Fatalf("the file's password was not taken: %q", n.Password)
		}
	})
}
