package nardag_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that Import's CAR writer has ended when the tests do.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
