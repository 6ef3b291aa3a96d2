package peering

import (
	"testing"

	"go.uber.org/goleak"
)

// Every round, dial and probe a test starts must have ended with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
