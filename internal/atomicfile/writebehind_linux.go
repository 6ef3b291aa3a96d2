package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts the writeback of the file's dirty pages in
// [off, off+n) and returns (sync_file_range(2) with WRITE only: it waits
// for neither the data nor the metadata). A failure is ignored: Commit's
// fsync reports what matters.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
