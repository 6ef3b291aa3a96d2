package unixfs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: a File's
// prefetches, a CAR's response. The HTTP transports' idle connections
// are closed by the servers' Cleanup; their reader/writer loops may
// outlive a test by a moment, and belong to net/http.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
