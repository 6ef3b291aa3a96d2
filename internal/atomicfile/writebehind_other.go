//go:build !linux

package atomicfile

import "os"

// startWriteback does nothing where sync_file_range(2) does not exist:
// Commit's fsync writes everything.
func startWriteback(*os.File, int64, int64) {}
