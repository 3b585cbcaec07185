package resv_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a waiter that
// never got its lock, or a worker a test forgot to join.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
