// Package testenv starts the real parts that nix-ipfs's tests run against:
// an embedded NATS JetStream server, kubo daemons, and Nix configured for
// tests, in two versions (ForEachNix: the host's Nix 2.8.0 and Nix 2.26 in
// a Debian trixie chroot). It is imported only from tests.
//
// A test that needs an external program calls NeedProgram. On a developer's
// machine a missing program skips the test with the reason; under CI
// (CI=true) it fails it, because CI installs every prerequisite
// (.ci/run, scripts/install-deps.sh) and a skip there would hide a gap.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where skips are failures.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "0" && v != "false"
}

// Unavailable skips the test with reason, or fails it under CI.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing under CI: %s", reason)
	}
	t.Skipf("skipping: %s (run scripts/install-deps.sh to install it)", reason)
}

// NeedProgram returns the path of program on PATH, or skips/fails the test.
func NeedProgram(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Unavailable(t, program+" not found on PATH")
	}
	return p
}
