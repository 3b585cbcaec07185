package sched_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a scheduler
// worker that Close did not join, or a waiter on a fence that never signalled.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
