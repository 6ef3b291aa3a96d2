package lease

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: a
// lease's refresher must end when the lease is released.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
