package lockdep

import (
	"sync/atomic"

	"github.com/petermattis/goid"
)

// A task is one goroutine's lockdep state: the locks it holds, in order. Models the
// lockdep fields of struct task_struct (held_locks, lockdep_depth).
//
// Only the owning goroutine reads or writes held, reclaim and sigNest. The state
// field is the one point of contact with the sweeper, which may retire a task only
// while it is idle (holds nothing), with a compare-and-swap the owner also races for.
type task struct {
	state atomic.Uint32 // taskActive, taskIdle or taskDead
	id    int64         // goroutine id
	gen   uint64        // checker generation the held stack belongs to

	held    []held // innermost last
	reclaim int    // depth of reclaim sections: PF_MEMALLOC, allocations do not recurse
	sigNest int    // nested BeginSignalling calls inside the outermost section
}

const (
	taskActive uint32 = iota
	taskIdle
	taskDead
)

// held is one acquisition on a task's stack. Models struct held_lock.
type held struct {
	m      *Map
	class  *Class
	key    uint64 // chain key of the stack up to and including this entry
	nest   *Map   // nest lock named at acquisition, or nil
	mode   Mode
	try    bool
	merged bool   // same class as the entry below, under its nest lock: no chain of its own
	token  uint64 // BeginSignalling token, for the fence map
	site   sitePCs
}

// sweepFloor is the task count below which retired goroutines are not swept.
const sweepFloor = 1024

// task returns the calling goroutine's task, creating it on first use, and marks it
// active so that the sweeper leaves it alone until idle is called.
func (c *Checker) task() *task {
	id := goid.Get()
	gen := c.gen.Load()
	if v, ok := c.tasks.Load(id); ok {
		t := v.(*task)
		if t.state.Load() == taskActive || t.state.CompareAndSwap(taskIdle, taskActive) {
			if t.gen != gen {
				t.reset(gen)
			}
			return t
		}
		// Swept while idle: a fresh task replaces it.
	}
	t := &task{id: id, gen: gen, held: make([]held, 0, 8)}
	c.tasks.Store(id, t)
	if n := c.ntasks.Add(1); n > c.sweepAt.Load() {
		c.sweep()
	}
	return t
}

// idle marks t idle if it holds nothing, making it eligible for sweeping. The owner
// calls it at the end of every operation.
func (c *Checker) idle(t *task) {
	if len(t.held) == 0 && t.reclaim == 0 {
		t.state.Store(taskIdle)
	}
}

func (t *task) reset(gen uint64) {
	clear(t.held)
	t.held = t.held[:0]
	t.reclaim = 0
	t.sigNest = 0
	t.gen = gen
}

// sweep retires idle tasks. Goroutine ids are never reused, so without it every
// goroutine that ever took a lock would stay in the table.
func (c *Checker) sweep() {
	if !c.sweepMu.TryLock() {
		return
	}
	defer c.sweepMu.Unlock()
	c.tasks.Range(func(k, v any) bool {
		t := v.(*task)
		if t.state.CompareAndSwap(taskIdle, taskDead) && c.tasks.CompareAndDelete(k, v) {
			c.ntasks.Add(-1)
		}
		return true
	})
	c.sweepAt.Store(max(sweepFloor, 2*c.ntasks.Load()))
}

// find returns the index of the innermost entry for m, or -1.
func (t *task) find(m *Map) int {
	for i := len(t.held) - 1; i >= 0; i-- {
		if t.held[i].m == m {
			return i
		}
	}
	return -1
}
