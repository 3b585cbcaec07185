package fence

import (
	"runtime"
	"sync/atomic"

	"github.com/gpusync/gpusync/lockdep"
)

// leakState is what a fence's cleanup needs, kept apart from the fence so that the
// cleanup does not keep the fence reachable.
type leakState struct {
	pending atomic.Int32 // blocked Waits, a handed-out Done channel, queued callbacks; 0 once signalled
	desc    string
	checker *lockdep.Checker
}

func (f *Fence) watchLeaks() {
	f.leak = &leakState{desc: f.Describe(), checker: f.ctx.Checker()}
	runtime.AddCleanup(f, checkLeak, f.leak)
}

func checkLeak(s *leakState) {
	if s.pending.Load() > 0 {
		s.checker.FenceLeaked(s.desc + ": garbage collected unsignalled with waiters or callbacks")
	}
}
