// Package chroot runs a program inside a root directory (a Debian system
// made by debootstrap, such as the Nix 2.26 root scripts/install-deps.sh
// makes) the way the tests and the demo need it: with /proc and /dev, and
// with some host directories visible at the same paths inside, so a path
// means the same thing on both sides.
//
// Every command gets a private mount namespace (util-linux unshare): the
// mounts it needs are made inside that namespace only and disappear with its
// last process. Nothing is ever mounted on the host, so a test that crashes,
// times out or is killed leaves no mount behind, no cleanup is needed, and
// concurrent commands on the same root do not stack mounts on each other.
// It needs root, as chroot and mount do.
package chroot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// script runs as `sh -euc script sh ROOT BIND... -- PROGRAM ARGS...` inside
// the new mount namespace. The new namespace starts as a private copy of the
// host's (unshare --propagation private), so nothing mounted here
// propagates back.
const script = `root="$1"; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
while [ "$1" != -- ]; do
	mkdir -p "$root$1"
	mount --rbind "$1" "$root$1"
	shift
done
shift
exec chroot "$root" /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"`

// Command returns a command that runs name with args inside root, with each
// directory of binds mounted at its own path inside. The program is looked
// up on the root's own PATH (/usr/sbin:/usr/bin:/sbin:/bin; the caller's
// names host directories); the process keeps the PID of the returned
// command (every step execs), so signals and process groups work as for a
// direct command. Env, Stdin, Stdout and Stderr are the caller's to set;
// the working directory inside is /.
func Command(root string, binds []string, name string, args ...string) *exec.Cmd {
	return exec.Command("unshare", unshareArgs(root, binds, name, args)...)
}

// CommandContext is Command with a context that kills the process, as
// exec.CommandContext.
func CommandContext(ctx context.Context, root string, binds []string, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "unshare", unshareArgs(root, binds, name, args)...)
}

func unshareArgs(root string, binds []string, name string, args []string) []string {
	full := []string{"--mount", "--propagation", "private", "sh", "-euc", script, "sh", root}
	full = append(full, binds...)
	full = append(full, "--", name)
	return append(full, args...)
}

// Check reports why root cannot be used: not root, no unshare, or no
// program named probe inside it.
func Check(root, probe string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root: chroot and mount need root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return fmt.Errorf("unshare (util-linux): %w", err)
	}
	for _, dir := range []string{"usr/bin", "bin"} {
		if fi, err := os.Stat(filepath.Join(root, dir, probe)); err == nil && fi.Mode()&0o111 != 0 {
			return nil
		}
	}
	return fmt.Errorf("no %s in %s (scripts/install-deps.sh makes it)", probe, root)
}

// Binds returns dirs made absolute, without duplicates and without any
// directory below another of the list (a recursive bind of the parent
// brings it along).
func Binds(dirs ...string) []string {
	var abs []string
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if a, err := filepath.Abs(d); err == nil {
			abs = append(abs, filepath.Clean(a))
		}
	}
	var out []string
	for i, d := range abs {
		covered := false
		for j, o := range abs {
			if i != j && (isUnder(d, o) || (d == o && j < i)) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, d)
		}
	}
	return out
}

func isUnder(p, dir string) bool {
	return dir != p && strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
