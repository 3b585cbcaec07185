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
	if t := c.tasks.Load().get(id); t != nil {
		if t.state.Load() == taskActive || t.state.CompareAndSwap(taskIdle, taskActive) {
			if t.gen != gen {
				t.reset(gen)
			}
			return t
		}
		// Swept while idle: a fresh task replaces it.
	}
	t := &task{id: id, gen: gen, held: make([]held, 0, 8)}
	c.tasksMu.Lock()
	defer c.tasksMu.Unlock()
	tbl := c.tasks.Load()
	if tbl.live+1 > c.sweepAt {
		tbl = c.sweep(tbl)
	}
	c.tasks.Store(tbl.put(id, t))
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

// sweep retires idle tasks and returns a table without them. Goroutine ids are
// never reused, so without it every goroutine that ever took a lock would stay in
// the table. Called with tasksMu held.
func (c *Checker) sweep(old *taskTable) *taskTable {
	var keep []*task
	for i := range old.vals {
		if t := old.vals[i].Load(); t != nil && !t.state.CompareAndSwap(taskIdle, taskDead) && t.state.Load() != taskDead {
			keep = append(keep, t)
		}
	}
	nt := newTaskTable(max(64, 4*len(keep)))
	for _, t := range keep {
		nt = nt.put(t.id, t)
	}
	c.sweepAt = max(sweepFloor, 2*len(keep))
	return nt
}

// taskTable maps goroutine ids to tasks. Readers probe it without a lock; writers
// hold tasksMu, write a value before its key, and publish a larger copy when it
// fills, as the chain cache does. A reader holding an old copy may find a task the
// sweeper retired; the task's state tells it so.
type taskTable struct {
	keys []atomic.Int64 // goroutine ids; 0 = empty (ids start at 1)
	vals []atomic.Pointer[task]
	mask uint64
	live int // entries, guarded by tasksMu
}

func newTaskTable(size int) *taskTable {
	n := 1
	for n < size {
		n <<= 1
	}
	return &taskTable{keys: make([]atomic.Int64, n), vals: make([]atomic.Pointer[task], n), mask: uint64(n - 1)}
}

func (t *taskTable) get(id int64) *task {
	for i := mix(uint64(id)) & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i].Load() {
		case id:
			return t.vals[i].Load()
		case 0:
			return nil
		}
	}
}

// put adds or replaces id's task and returns the table to publish.
func (t *taskTable) put(id int64, tk *task) *taskTable {
	if 2*(t.live+1) > len(t.keys) {
		g := newTaskTable(2 * len(t.keys))
		for i := range t.keys {
			if k := t.keys[i].Load(); k != 0 {
				g = g.put(k, t.vals[i].Load())
			}
		}
		t = g
	}
	for i := mix(uint64(id)) & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i].Load() {
		case id:
			t.vals[i].Store(tk)
			return t
		case 0:
			t.vals[i].Store(tk)
			t.keys[i].Store(id)
			t.live++
			return t
		}
	}
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
