package schedtest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a ring's
// scheduler that was not closed, or a client goroutine that never finished.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
