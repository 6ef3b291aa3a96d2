package integration

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nix-ipfs/nix-ipfs/events"
	"github.com/nix-ipfs/nix-ipfs/internal/testenv"
)

// keyMaterial returns the encodings in which a Nix secret key file's secret
// could leak: the file's text, its base64 part, and the 32-byte seed in
// standard, raw and URL base64 and in hex.
func keyMaterial(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(b))
	_, b64, ok := strings.Cut(line, ":")
	if !ok {
		t.Fatalf("%s is not name:base64", file)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 64 {
		t.Fatalf("%s: %d bytes, %v", file, len(raw), err)
	}
	seed := raw[:32]
	out := []string{line, b64, base64.StdEncoding.EncodeToString(seed), base64.RawStdEncoding.EncodeToString(seed),
		base64.URLEncoding.EncodeToString(seed), hex.EncodeToString(seed)}
	// Long enough prefixes catch a truncated leak too.
	return append(out, b64[:24], hex.EncodeToString(seed)[:24])
}

// rawStream returns every message body on the stream, undecoded.
func rawStream(t *testing.T, js jetstream.JetStream) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out [][]byte
	if err := events.Scan(ctx, js, events.DefaultStream, events.ScanOptions{}, func(m jetstream.Msg) error {
		out = append(out, m.Data())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSecuritySigningKey: the real publisher binary refuses a secret key
// that group or others can read, with a clear message, a non-zero exit, and
// no key bytes in its output; a key file that is not a key is refused
// without quoting it. Then a publish at --log-level debug (and the mirror,
// if it has landed, and --config-check) never shows the key in a log, and no
// event on the stream carries it.
func TestSecuritySigningKey(t *testing.T) {
	a := newHostA(t, testenv.KuboOffline())
	a.nix.Env = append(a.nix.Env, "NIX_IPFS_TIMEOUT=10s")
	nixIPFS := filepath.Join(a.bin, "nix-ipfs")
	secrets := keyMaterial(t, a.nix.SecretKey)
	leaks := func(what, s string) int {
		n := 0
		for _, k := range secrets {
			if strings.Contains(s, k) {
				n++
				t.Errorf("%s shows key material (%d characters of it)", what, len(k))
			}
		}
		return n
	}

	refused, leaked := 0, 0
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o666} {
		key := filepath.Join(t.TempDir(), "key")
		data, _ := os.ReadFile(a.nix.SecretKey)
		os.WriteFile(key, data, 0o600)
		os.Chmod(key, mode)
		out, err := runBin(nixIPFS, []string{"publisher"}, append(a.publisherEnv(), "NIX_IPFS_SECRET_KEY_FILE="+key)...)
		if err == nil {
			t.Errorf("mode %04o: the publisher started with a readable key", mode)
			continue
		}
		if !strings.Contains(out, "chmod 600") || !strings.Contains(out, key) {
			t.Errorf("mode %04o: the message does not say what is wrong and how to fix it:\n%s", mode, out)
		}
		refused++
		leaked += leaks("the refusal's output", out)
	}
	// Not a key at all, with something secret-looking in it.
	bogus := filepath.Join(t.TempDir(), "bogus")
	os.WriteFile(bogus, []byte("not-a-key:"+secrets[1][:20]+"-"+testenv.Nonce()), 0o600)
	out, err := runBin(nixIPFS, []string{"publisher"}, append(a.publisherEnv(), "NIX_IPFS_SECRET_KEY_FILE="+bogus)...)
	if err == nil || !strings.Contains(out, "not a Nix binary cache secret key") || strings.Contains(out, "not-a-key:") {
		t.Errorf("a file that is not a key: %v\n%s", err, out)
	} else {
		refused++
	}
	leaked += leaks("the bogus key's refusal", out)

	// --config-check names the key file, never its contents.
	out, _ = runBin(nixIPFS, []string{"publisher", "--config-check"}, a.publisherEnv()...)
	if !strings.Contains(out, a.nix.SecretKey) || !strings.Contains(out, "log-level = debug") {
		t.Errorf("--config-check does not show the key file setting and debug logging:\n%s", out)
	}
	leaked += leaks("--config-check", out)

	// A real publish at debug level.
	a.startPublisher(t)
	extra, script := multiOutputs(3, 64)
	outs := a.nix.Build(t, batchExpr("key-"+testenv.Nonce(), 2, script, extra))
	paths := allOutputs(t, a.nix, outs)
	flushSpool(t, a.builder)
	a.waitPublished(t, paths, 2*time.Minute)
	_, js := a.nats.Connect(t)
	logs := []string{readFile(t, a.pub.Log)}
	if hasCommand(t, a.bin, "mirror") {
		m := testenv.StartProc(t, nixIPFS, []string{"mirror", "--name", "k"}, "NIX_IPFS_NATS_URL="+a.nats.URL,
			"NIX_IPFS_KUBO_API="+a.kubo.API, "NIX_IPFS_LOG_FORMAT=console", "NIX_IPFS_LOG_LEVEL=debug")
		testenv.Eventually(t, time.Minute, "the mirror's pins", func() bool {
			return len(streamEvents(t, js, events.SubjectPinned("k"))) == len(paths)
		})
		logs = append(logs, readFile(t, m.Log))
	}
	for _, l := range logs {
		leaked += leaks("a worker's debug log", l)
	}
	msgs := rawStream(t, js)
	for _, m := range msgs {
		leaked += leaks("an event on the stream", string(m))
	}
	narinfos, _ := filepath.Glob(filepath.Join(a.cache, "*.narinfo"))
	for _, f := range narinfos {
		leaked += leaks("a narinfo", readFile(t, f))
	}
	reliability(t, "signing-key", "runs", refused+len(logs)+1, "readable_or_bogus_refused", refused,
		"logs_checked", len(logs)+refused+1, "events_checked", len(msgs), "narinfos_checked", len(narinfos), "leaks", leaked, "lost", 0)
}
