package lr

import (
	"sync"

	"github.com/gpusync/gpusync/fence"
)

// A PreemptFence stands in for an LR queue inside reservation objects. It is an
// ordinary dma fence that signals once the queue is off the hardware, so memory
// management may wait for it like any other fence. Nobody waits for it until they
// must (eviction): enabling signalling is what starts the preemption. Models Xe's
// struct xe_preempt_fence.
//
// States: armed (installed, queue running) -> triggered (someone waits: Suspend
// called) -> signalled (queue suspended), or signalled with an error (the
// suspension failed). A signalled preempt fence is replaced by a fresh one when
// the queue resumes. An error does not stop that, except ErrTimedOut: then the
// VM is killed and none of its queues resumes (see VM).
type PreemptFence struct {
	*fence.Fence
	q  *Queue
	vm *VM

	mu         sync.Mutex
	triggered  bool
	suspendErr error
}

// preemptOps is shared by every preempt fence: the hooks find their PreemptFence
// through the fence's data.
var preemptOps = &fence.Ops{
	EnableSignaling: func(f *fence.Fence) bool {
		f.Data().(*PreemptFence).trigger()
		return true
	},
}

// newPreemptFence arms a preempt fence for q on vm's preempt context for q. Models
// xe_preempt_fence_create() (alloc + arm).
func (vm *VM) newPreemptFence(q *Queue) *PreemptFence {
	st := vm.queueState(q)
	st.seq++
	pf := &PreemptFence{q: q, vm: vm}
	pf.Fence = st.ctx.NewWithData(st.seq, pf)
	return pf
}

// trigger runs from EnableSignaling, with the fence's lock held: it starts the
// suspension and hands the wait to the VM's ordered preempt worker, never blocking
// here. Models preempt_fence_enable_signaling().
func (pf *PreemptFence) trigger() {
	var err error
	if s := pf.q.cfg.Ops.Suspend; s != nil {
		err = s(pf.q)
	}
	pf.mu.Lock()
	pf.triggered = true
	pf.suspendErr = err
	pf.mu.Unlock()
	pf.vm.queuePreempt(pf)
}

// Triggered reports whether someone asked the fence to signal (a preemption was
// started).
func (pf *PreemptFence) Triggered() bool {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	return pf.triggered
}

// Queue returns the LR queue the fence stands for.
func (pf *PreemptFence) Queue() *Queue { return pf.q }
