// Package perm explains permission errors on the files an operator
// provides (a cache directory, a key file): which uid was refused and
// whose the file is, so the fix (a chown) is in the message.
package perm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Hint adds to a permission error what an operator needs to fix it: which
// uid this process is and who owns path. Under Compose the publisher runs
// as uid 65532, and a key file or a cache volume left from a root-run stack
// is root's (docs/OPERATIONS.md, Compose). Other errors pass unchanged.
func Hint(path, what string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	owner := ""
	if fi, serr := os.Stat(path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf(", which is uid %d's, mode %04o", st.Uid, fi.Mode().Perm())
		}
	}
	return fmt.Errorf("%w (uid %d may not %s %s%s: chown it to uid %d)", err, os.Geteuid(), what, path, owner, os.Geteuid())
}
