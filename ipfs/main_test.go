package ipfs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests (nardag.Import's
// CAR writer, run against a real kubo in TestImport, among them).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
