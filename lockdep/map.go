package lockdep

import "sync/atomic"

// Mode is how a lock is acquired. Models the read argument of lock_acquire(): the
// three modes follow it, and the dependency rules of lockdep-design.rst
// ("Recursive read locks") apply to them.
type Mode uint8

const (
	// Exclusive is a writer: mutex_lock, down_write, write_lock (read = 0).
	Exclusive Mode = iota
	// Shared is a non-recursive reader: down_read, RWMutex.RLock, and the
	// dma_fence_map held by signalling sections (a trylock there). A second Shared
	// acquisition of a class already read-held is reported, because a queued writer
	// would block it (read = 1).
	Shared
	// RecursiveRead is a reader that may nest: read_lock in the kernel (read = 2).
	RecursiveRead
)

// String returns the short name reports print for m: W, R or RR. No kernel
// counterpart.
func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "W"
	case Shared:
		return "R"
	case RecursiveRead:
		return "RR"
	}
	return "?"
}

func (m Mode) isRead() bool { return m != Exclusive }

// A Map is one lock instance as lockdep sees it: the annotation handle a primitive
// embeds. Call its methods around the primitive's own locking (Acquire before
// blocking, Release after unlocking) and lockdep checks every use.
//
// Models struct lockdep_map and the lock_acquire()/lock_release() family. A Map must
// not be copied after first use. Its zero value has no class: annotating it produces
// one KindBadClass report and is otherwise ignored, so set Class before first use.
type Map struct {
	// Class is the lock's class. Set it before the first annotation.
	Class *Class
	// Checker receives the annotations; nil means Default.
	Checker *Checker

	// gen is 1 + the checker generation of the last acquisition the checker saw,
	// or 0 if it saw none. A release of a lock not held is reported when gen is
	// current, or 0 (never taken) on a checker that was never off, and ignored
	// otherwise: a Disable, Enable or Reset since then forgot that acquisition,
	// or one was made while checking was off.
	// Storing the generation itself would make a never-taken lock look taken in
	// generation 0, and its release would go unreported after the first Reset.
	gen atomic.Uint64
}

func (m *Map) checker() *Checker {
	if m.Checker != nil {
		return m.Checker
	}
	return Default
}

// Acquire annotates an acquisition in the given mode, before the primitive blocks,
// so that a deadlock is reported before it happens. Models lock_acquire(map, 0,
// trylock=0, read, check=1, NULL, ip).
func (m *Map) Acquire(mode Mode) {
	if c := m.checker(); c.on.Load() {
		c.acquire(m, m.Class, mode, 0, nil)
	}
}

// TryAcquired annotates a successful trylock. A trylock cannot deadlock, so it adds
// no dependency on the locks already held, but locks taken while it is held depend
// on it. Call it only after the trylock succeeded. Models lock_acquire with trylock=1.
func (m *Map) TryAcquired(mode Mode) {
	if c := m.checker(); c.on.Load() {
		c.acquire(m, m.Class, mode, flagTry, nil)
	}
}

// AcquireNest annotates an acquisition nested under nest, a lock this goroutine
// holds that serialises every acquisition of m's class (a ww acquire context).
// Several locks of one class may then be held at once without a recursion report.
// Nesting under a lock not held is reported (KindNestNotHeld). Models
// mutex_acquire_nest() / lock_acquire with nest_lock.
func (m *Map) AcquireNest(mode Mode, nest *Map) {
	if c := m.checker(); c.on.Load() {
		c.acquire(m, m.Class, mode, 0, nest)
	}
}

// Release annotates the release of m by this goroutine. Releasing a lock this
// goroutine does not hold is reported (KindBadUnlock). Models lock_release().
func (m *Map) Release() {
	if c := m.checker(); c.on.Load() {
		c.release(m, m.Class)
	}
}

// AssertHeld reports (KindAssert) unless this goroutine holds m. Models
// lockdep_assert_held().
func (m *Map) AssertHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(m, m.Class, true)
	}
}

// AssertNotHeld reports (KindAssert) if this goroutine holds m. Models
// lockdep_assert_not_held().
func (m *Map) AssertNotHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(m, m.Class, false)
	}
}

// MightLock annotates that this code may take m in the given mode, without taking
// it: an acquisition and release, so the order is learned and checked on paths that
// rarely lock for real. Models might_lock() / might_lock_read().
func (m *Map) MightLock(mode Mode) {
	if c := m.checker(); c.on.Load() {
		c.acquire(m, m.Class, mode, 0, nil)
		c.release(m, m.Class)
	}
}
