package cachedir

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutine; its tests do (a publisher and a prune
// at once), and must leave none behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
