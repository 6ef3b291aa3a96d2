package upstream

import (
	"testing"

	"go.uber.org/goleak"
)

// Every probe a Set starts must have ended once it is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
