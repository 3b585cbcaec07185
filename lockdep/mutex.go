package lockdep

import "sync"

// A Mutex is a sync.Mutex whose every use lockdep checks: a driver's own locks,
// annotated with one line of setup. Models struct mutex built with
// CONFIG_DEBUG_LOCK_ALLOC: the lock plus its dep_map. Set Class (and Checker, or
// leave it nil for Default) before first use:
//
//	var ringClass = lockdep.NewClass("drv.ring.lock")
//	r.mu = lockdep.Mutex{Class: ringClass}
//
// The acquisition is checked before Lock blocks, so a lock-order inversion is
// reported instead of deadlocking the first time. With checking off, Lock and
// Unlock cost one atomic load more than sync.Mutex's.
//
// A Mutex must not be copied after first use.
type Mutex struct {
	Class   *Class
	Checker *Checker // nil means Default

	mu  sync.Mutex
	dep Map // identity only: Class and Checker above are the ones used
}

func (m *Mutex) checker() *Checker {
	if m.Checker != nil {
		return m.Checker
	}
	return Default
}

// Lock locks m. Models mutex_lock().
func (m *Mutex) Lock() {
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Exclusive, 0, nil)
	}
	m.mu.Lock()
}

// TryLock tries to lock m and reports whether it succeeded. Models
// mutex_trylock().
func (m *Mutex) TryLock() bool {
	if !m.mu.TryLock() {
		return false
	}
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Exclusive, flagTry, nil)
	}
	return true
}

// Unlock unlocks m. Unlocking a Mutex this goroutine did not lock is reported
// (KindBadUnlock); like sync.Mutex, unlocking an unlocked Mutex is a run-time error.
// Models mutex_unlock().
func (m *Mutex) Unlock() {
	if c := m.checker(); c.on.Load() {
		c.release(&m.dep, m.Class)
	}
	m.mu.Unlock()
}

// AssertHeld reports unless this goroutine holds m. Models lockdep_assert_held().
func (m *Mutex) AssertHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(&m.dep, m.Class, true)
	}
}

// AssertNotHeld reports if this goroutine holds m. Models
// lockdep_assert_not_held().
func (m *Mutex) AssertNotHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(&m.dep, m.Class, false)
	}
}

// An RWMutex is a sync.RWMutex checked by lockdep, set up as Mutex is. Models
// struct rw_semaphore with its dep_map. RLock is a
// non-recursive read (Shared): like the kernel's rwsem, a goroutine that read-locks
// twice can deadlock behind a waiting writer, and is reported.
//
// An RWMutex must not be copied after first use.
type RWMutex struct {
	Class   *Class
	Checker *Checker // nil means Default

	mu  sync.RWMutex
	dep Map // identity only: Class and Checker above are the ones used
}

func (m *RWMutex) checker() *Checker {
	if m.Checker != nil {
		return m.Checker
	}
	return Default
}

// Lock locks m for writing. Models down_write().
func (m *RWMutex) Lock() {
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Exclusive, 0, nil)
	}
	m.mu.Lock()
}

// Unlock unlocks m for writing. Models up_write().
func (m *RWMutex) Unlock() {
	if c := m.checker(); c.on.Load() {
		c.release(&m.dep, m.Class)
	}
	m.mu.Unlock()
}

// RLock locks m for reading. Models down_read().
func (m *RWMutex) RLock() {
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Shared, 0, nil)
	}
	m.mu.RLock()
}

// RUnlock undoes one RLock. Models up_read().
func (m *RWMutex) RUnlock() {
	if c := m.checker(); c.on.Load() {
		c.release(&m.dep, m.Class)
	}
	m.mu.RUnlock()
}

// TryLock tries to lock m for writing. Models down_write_trylock().
func (m *RWMutex) TryLock() bool {
	if !m.mu.TryLock() {
		return false
	}
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Exclusive, flagTry, nil)
	}
	return true
}

// TryRLock tries to lock m for reading. Models down_read_trylock().
func (m *RWMutex) TryRLock() bool {
	if !m.mu.TryRLock() {
		return false
	}
	if c := m.checker(); c.on.Load() {
		c.acquire(&m.dep, m.Class, Shared, flagTry, nil)
	}
	return true
}

// AssertHeld reports unless this goroutine holds m (in either mode). Models
// lockdep_assert_held().
func (m *RWMutex) AssertHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(&m.dep, m.Class, true)
	}
}

// AssertNotHeld reports if this goroutine holds m. Models
// lockdep_assert_not_held().
func (m *RWMutex) AssertNotHeld() {
	if c := m.checker(); c.on.Load() {
		c.assertHeld(&m.dep, m.Class, false)
	}
}
