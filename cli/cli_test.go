package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, func(string) string { return "" }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestEveryCommandHasHelpAndRejectsBadFlags(t *testing.T) {
	for name := range commands {
		code, out, _ := run(name, "--help")
		if code != 0 || !strings.Contains(out, "--config-check") || !strings.Contains(out, "env NIX_IPFS_") {
			t.Errorf("%s --help: exit %d\n%s", name, code, out)
		}
		if code, _, errOut := run(name, "--no-such-flag"); code != ExitUsage || errOut == "" {
			t.Errorf("%s --no-such-flag: exit %d, stderr %q", name, code, errOut)
		}
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := run(); code != ExitUsage || !strings.Contains(errOut, "Commands:") {
		t.Errorf("no command: exit %d", code)
	}
	if code, _, errOut := run("frobnicate"); code != ExitUsage || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d %s", code, errOut)
	}
	if code, out, _ := run("help"); code != 0 || !strings.Contains(out, "publisher") {
		t.Errorf("help: exit %d", code)
	}
}

func TestConfigCheckValidatesWithoutConnecting(t *testing.T) {
	// Missing required settings: exit 2 and a reason, even under --config-check.
	if code, _, errOut := run("publisher", "--config-check"); code != ExitUsage || !strings.Contains(errOut, "--cache-dir is required") {
		t.Errorf("publisher without settings: exit %d, %s", code, errOut)
	}
	// A kubo repository named by hand that cannot be read as one.
	if code, _, errOut := run("substituter", "--config-check", "--upstream", "http://127.0.0.1:1", "--kubo-blocks", t.TempDir()); code != ExitUsage || !strings.Contains(errOut, "--kubo-blocks") || !strings.Contains(errOut, "datastore_spec") {
		t.Errorf("substituter --kubo-blocks of an empty directory: exit %d, %s", code, errOut)
	}
	// Valid settings: the dump, exit 0, and no attempt to reach NATS or kubo.
	code, out, errOut := run("publisher", "--config-check", "--cache-dir", t.TempDir(), "--secret-key-file", "/nonexistent",
		"--nats-url", "nats://127.0.0.1:1", "--kubo-api", "http://127.0.0.1:1")
	if code != 0 || !strings.Contains(out, "cache-dir = ") || !strings.Contains(out, "# flag") {
		t.Errorf("publisher --config-check: exit %d\n%s\n%s", code, out, errOut)
	}
}
