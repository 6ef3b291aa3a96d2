package substituter

import (
	"testing"

	"go.uber.org/goleak"
)

// Every read, timer, probe and peering round a test's server starts must
// have ended once the server is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
