package status

import (
	"testing"

	"go.uber.org/goleak"
)

// A Collector starts no goroutine; what its readers leave behind would
// show here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
