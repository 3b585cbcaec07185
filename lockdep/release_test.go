package lockdep_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// checkerHistories are the states a checker can be in when a lock is first used:
// each Reset, Enable and Disable moves it to a new generation.
// wasOff says whether the checker has been off: then a lock it never saw taken
// may have been taken while it was off, and its release is not reported.
var checkerHistories = []struct {
	name   string
	setup  func(c *lockdep.Checker)
	wasOff bool
}{
	{"fresh checker", func(c *lockdep.Checker) {}, false},
	{"after Reset", func(c *lockdep.Checker) { c.Reset() }, false},
	{"after Disable and Enable", func(c *lockdep.Checker) {
		c.Disable()
		c.Enable()
	}, true},
}

// A release of a lock never taken is reported whatever the checker's generation
// (a never-taken lock must not look taken in generation 0), unless the checker
// has been off: then the lock may have been taken unseen (see Enable).
func TestReleaseOfNeverTakenLockReportedInEveryGeneration(t *testing.T) {
	for _, tt := range checkerHistories {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			tt.setup(c)
			m := newTestMaps(c, "A")[0]
			m.Release()
			if tt.wasOff {
				lockdeptest.RequireClean(t, col)
			} else {
				lockdeptest.RequireKinds(t, col, lockdep.KindBadUnlock)
			}
			assert.Empty(t, c.Held())
		})
	}
}

// A lock taken while checking was off and released once it is back on is a
// correct program: no report, whether the checker was made off or turned off.
func TestReleaseOfLockTakenWhileOffNotReported(t *testing.T) {
	for _, madeOff := range []bool{true, false} {
		t.Run(map[bool]string{true: "made off", false: "disabled"}[madeOff], func(t *testing.T) {
			col := new(lockdep.Collector)
			opts := []lockdep.Option{lockdep.WithHandler(col.Handle)}
			if madeOff {
				opts = append(opts, lockdep.Off())
			}
			c := lockdep.NewChecker(opts...)
			c.Disable()
			m := &lockdep.Mutex{Class: lockdep.NewClass("obj.lock"), Checker: c}
			m.Lock()
			c.Enable()
			m.Unlock()
			lockdeptest.RequireClean(t, col)
		})
	}
}

// A second release of a lock taken in the current generation is reported too.
func TestDoubleReleaseReportedInEveryGeneration(t *testing.T) {
	for _, tt := range checkerHistories {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			tt.setup(c)
			m := newTestMaps(c, "A")[0]
			m.Acquire(lockdep.Exclusive)
			m.Release()
			m.Release()
			lockdeptest.RequireKinds(t, col, lockdep.KindBadUnlock)
		})
	}
}

// Unlocking a Mutex never locked reaches the handler before sync.Mutex's fatal
// "unlock of unlocked mutex", as ExamplePanic promises, in every generation.
func TestMutexUnlockOfNeverLockedPanicsWithReportInEveryGeneration(t *testing.T) {
	for _, tt := range checkerHistories {
		if tt.wasOff {
			continue // not reported: see TestReleaseOfNeverTakenLockReportedInEveryGeneration
		}
		t.Run(tt.name, func(t *testing.T) {
			c := lockdep.NewChecker(lockdep.WithHandler(lockdep.Panic))
			tt.setup(c)
			m := &lockdep.Mutex{Class: lockdep.NewClass("obj.lock"), Checker: c}
			var got any
			func() {
				defer func() { got = recover() }()
				m.Unlock()
			}()
			r, ok := got.(*lockdep.Report)
			require.True(t, ok, "Unlock of a never-locked Mutex did not panic with a *Report: %v", got)
			assert.Equal(t, lockdep.KindBadUnlock, r.Kind)
		})
	}
}

// A lock taken before a Reset, Disable or Enable was forgotten with the held
// stacks: releasing it afterwards is not reported.
func TestReleaseOfLockTakenInOlderGenerationNotReported(t *testing.T) {
	for _, tt := range checkerHistories[1:] {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			m := newTestMaps(c, "A")[0]
			m.Acquire(lockdep.Exclusive)
			tt.setup(c)
			m.Release()
			lockdeptest.RequireClean(t, col)
		})
	}
}
