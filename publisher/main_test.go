package publisher

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: the
// publisher's own (a lease's refresher, kubo adds, the mirror list and MFS
// followers) must all have ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
