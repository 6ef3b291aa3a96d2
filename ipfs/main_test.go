package ipfs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every goroutine the package starts (Import's CAR
// writer) has ended when the tests do.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
