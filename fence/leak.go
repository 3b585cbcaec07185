package fence

import (
	"runtime"
	"sync/atomic"

	"github.com/gpusync/gpusync/lockdep"
)

// leakState is what a fence's cleanup needs, kept apart from the fence so that the
// cleanup does not keep the fence reachable.
// It lives in the fence's data field, which keeps the fence small for the
// contexts that do not check (all of them, by default); the driver's data moves
// into it.
type leakState struct {
	pending atomic.Int32 // blocked Waits, a handed-out Done channel, queued callbacks; 0 once signalled
	desc    string
	checker *lockdep.Checker
	data    any // the driver's, from NewWithData
}

// watchLeaks sets f up for leak checks. It runs before f is published.
func (f *Fence) watchLeaks() {
	st := &leakState{desc: f.Describe(), checker: f.ctx.Checker(), data: f.data}
	f.data = st
	f.flags.Or(flagLeak)
	runtime.AddCleanup(f, checkLeak, st)
}

// leaks returns f's leak state, or nil if its context does not check for leaks.
func (f *Fence) leaks() *leakState {
	if f.flags.Load()&flagLeak == 0 {
		return nil
	}
	return f.data.(*leakState)
}

func checkLeak(s *leakState) {
	if s.pending.Load() > 0 {
		s.checker.FenceLeaked(s.desc + ": garbage collected unsignalled with waiters or callbacks")
	}
}
