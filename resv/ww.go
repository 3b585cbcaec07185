package resv

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gpusync/gpusync/lockdep"
)

// Algorithm is how a ww class resolves a conflict between two acquire contexts.
// Models struct ww_class's is_wait_die.
type Algorithm uint8

const (
	// WaitDie: a younger context that would wait on an older one dies (backs off) at
	// once. Fewer wake-ups; reservation_ww_class uses it. Models DEFINE_WD_CLASS.
	WaitDie Algorithm = iota
	// WoundWait: an older context that would wait on a younger one wounds it; the
	// younger backs off at its next contended lock. Fewer back-offs. Models
	// DEFINE_WW_CLASS.
	WoundWait
)

// String returns "wait-die" or "wound-wait". It has no kernel counterpart.
func (a Algorithm) String() string {
	if a == WoundWait {
		return "wound-wait"
	}
	return "wait-die"
}

// A WWClass is a class of wound/wait mutexes: they are locked together in acquire
// contexts of the same class, which carry stamps from the class's counter. Models
// struct ww_class (DEFINE_WD_CLASS / DEFINE_WW_CLASS), with its two lockdep classes.
type WWClass struct {
	name    string
	alg     Algorithm
	stamp   atomic.Uint64
	acquire *lockdep.Class // "<name>_acquire"
	mutex   *lockdep.Class // "<name>_mutex"
}

// NewWWClass returns a ww class using alg. flags go to the mutex lockdep class (mark
// buffer-object locks lockdep.MM). Models DEFINE_WD_CLASS (WaitDie) and
// DEFINE_WW_CLASS (WoundWait).
func NewWWClass(name string, alg Algorithm, flags ...lockdep.ClassFlag) *WWClass {
	return &WWClass{
		name: name, alg: alg,
		acquire: lockdep.NewClass(name + "_acquire"),
		mutex:   lockdep.NewClass(name+"_mutex", flags...),
	}
}

// ReservationClass is reservation_ww_class, the class of every reservation
// object's lock: wait-die, with lockdep's Reservation classes, which Prime orders.
// Models reservation_ww_class (DEFINE_WD_CLASS in dma-resv.c).
var ReservationClass = &WWClass{
	name: "reservation_ww_class", alg: WaitDie,
	acquire: lockdep.ReservationAcquire,
	mutex:   lockdep.Reservation,
}

// Name returns the class name. Models the name DEFINE_WW_CLASS derives its
// acquire_name and mutex_name from.
func (c *WWClass) Name() string { return c.name }

// Algorithm returns the class's algorithm. Models ww_class.is_wait_die.
func (c *WWClass) Algorithm() Algorithm { return c.alg }

// An AcquireCtx is one locking transaction over many ww mutexes of a class. Its stamp
// (smaller is older) decides who backs off; it keeps the stamp across back-offs, so
// a retried transaction ages and eventually wins. Models struct ww_acquire_ctx.
//
// An AcquireCtx belongs to the goroutine that made it: lockdep holds it as a lock of
// that goroutine from NewAcquireCtx to Fini. It must not be copied.
type AcquireCtx struct {
	class *WWClass
	stamp uint64
	dep   lockdep.Map
	wound chan struct{} // buffered(1): a wound or a wait-die "die" nudge
	// acquired counts the locks held in this context. Only the context's own
	// goroutine changes it, except that a hand-off (releaseLocked) counts the lock
	// for a waiter under the mutex's mu while that waiter is blocked; the waiter
	// reads it after the grant channel closes. Others read it only for waiters, under
	// the mutex they wait on. So it needs no atomics, and the fast path has none.
	acquired int32
	wounded  atomic.Bool
	done     bool // AcquireDone called
	finished bool // Fini called
	// contending is the mutex the last ErrDeadlock was for, until the context
	// acquires it (the kernel's debug field contending_lock). Only the context's
	// goroutine uses it.
	contending *WWMutex
	retries    atomic.Int64
	holders    [2]holder // WWMutex.state values for locks this context holds
}

// NewAcquireCtx begins a transaction on class c, reporting to checker (nil: the
// default). Models ww_acquire_init().
func NewAcquireCtx(c *WWClass, checker *lockdep.Checker) *AcquireCtx {
	a := &AcquireCtx{class: c, stamp: c.stamp.Add(1), wound: make(chan struct{}, 1)}
	a.holders = [2]holder{{ctx: a}, {ctx: a, contended: true}}
	a.dep = lockdep.Map{Class: c.acquire, Checker: checker}
	a.dep.Acquire(lockdep.Exclusive)
	return a
}

// Stamp returns the context's ticket: smaller is older and wins conflicts. Models
// ww_acquire_ctx.stamp.
func (a *AcquireCtx) Stamp() uint64 { return a.stamp }

// Acquired returns how many locks the context holds. Call it from the context's
// goroutine. Models ww_acquire_ctx.acquired.
func (a *AcquireCtx) Acquired() int { return int(a.acquired) }

// Retries returns how many times a lock in this context returned ErrDeadlock. It
// has no kernel counterpart: a statistic for tests and benchmarks.
func (a *AcquireCtx) Retries() int64 { return a.retries.Load() }

// AcquireDone marks the end of the locking phase: no more locks will be taken.
// Models ww_acquire_done(); it documents intent, and later Lock and LockSlow calls
// in the context return an error wrapping ErrInvalid (TryLock fails), where the
// kernel's debug build warns.
func (a *AcquireCtx) AcquireDone() { a.done = true }

// Fini ends the transaction. Every lock must have been unlocked first; if not, Fini
// returns an error wrapping ErrInvalid and leaves the context as it was. Models
// ww_acquire_fini().
func (a *AcquireCtx) Fini() error {
	if a.finished {
		return errCtxDone
	}
	if a.acquired != 0 {
		return ErrInvalid
	}
	a.finished = true
	a.dep.Release()
	return nil
}

// youngerThan reports whether a is younger than b (__ww_ctx_less).
func (a *AcquireCtx) youngerThan(b *AcquireCtx) bool { return int64(a.stamp-b.stamp) > 0 }

// nudge wakes a's goroutine if it is waiting for a lock, so that it re-checks
// whether it must back off.
func (a *AcquireCtx) nudge() {
	select {
	case a.wound <- struct{}{}:
	default:
	}
}

// A WWMutex is a wound/wait mutex: a mutex that many can lock in any order inside
// acquire contexts, because a conflict makes one of them back off instead of
// deadlocking. Models struct ww_mutex. Use NewWWMutex; it must not be copied.
//
// Invariants: state is nil when m is free, else the holder: its context (nil for a
// context-less lock) and whether anyone waits. An uncontended lock or unlock is one
// compare-and-swap on state, as the kernel's mutex fast path is. Waiters queue under
// mu: context waiters in stamp order, oldest first; a context-less waiter joins at
// the tail. A new context waiter goes just ahead of the context waiters younger
// than it, so it also passes the context-less waiters queued behind the first of
// them, as in the kernel. While waiters exist the state is a contended holder, so
// no fast path changes it and Unlock hands m to the first waiter under mu; state
// is never nil while someone waits.
type WWMutex struct {
	class *WWClass
	dep   lockdep.Map
	state atomic.Pointer[holder]

	mu      sync.Mutex
	waiters []*wwWaiter // guarded by mu
}

// holder is an immutable value of WWMutex.state. Each acquire context owns its
// two (see AcquireCtx.holders), so taking a lock publishes its owner without
// allocating.
type holder struct {
	ctx       *AcquireCtx
	contended bool
}

// ctxless are the holders of a lock taken without an acquire context.
var ctxless = [2]holder{{}, {contended: true}}

func holderOf(a *AcquireCtx, contended bool) *holder {
	i := 0
	if contended {
		i = 1
	}
	if a == nil {
		return &ctxless[i]
	}
	return &a.holders[i]
}

type wwWaiter struct {
	ctx     *AcquireCtx   // nil for a context-less waiter
	grant   chan struct{} // closed when the lock is handed over
	nudge   chan struct{} // buffered(1): re-check whether to die
	granted bool          // under mu
}

// NewWWMutex returns an unlocked ww mutex of class c that reports to checker (nil: the
// default). Models ww_mutex_init().
func NewWWMutex(c *WWClass, checker *lockdep.Checker) *WWMutex {
	return &WWMutex{class: c, dep: lockdep.Map{Class: c.mutex, Checker: checker}}
}

// Class returns the mutex's ww class. Models ww_mutex.ww_class (a debug-build
// field in the kernel).
func (m *WWMutex) Class() *WWClass { return m.class }

// IsLocked reports whether anyone holds m. Models ww_mutex_is_locked().
func (m *WWMutex) IsLocked() bool { return m.state.Load() != nil }

// Owner returns the acquire context holding m, or nil (unlocked, or held without
// a context). Models the ww_mutex ctx field / dma_resv_locking_ctx().
func (m *WWMutex) Owner() *AcquireCtx {
	if h := m.state.Load(); h != nil {
		return h.ctx
	}
	return nil
}

// Lock locks m in the acquire context a, blocking until it is free, and returns:
// nil; ErrAlready if a already holds m; ErrDeadlock if a must back off (see
// LockSlow); or ctx.Err() if ctx ends first. A nil a locks m as a plain mutex,
// without deadlock avoidance. On any error nothing is held. Models
// ww_mutex_lock_interruptible() (ww_mutex_lock with context.Background()).
//
// After an ErrDeadlock, the next lock a takes must be that contended mutex, with
// every other lock of a unlocked first (LockSlow, or Lock, or TryLock). Locking
// another mutex, or the contended one with other locks still held, returns an
// error wrapping ErrInvalid and changes nothing (TryLock fails), where the
// kernel's DEBUG_WW_MUTEXES build warns in ww_mutex_lock_acquired() ("After
// -EDEADLK you tried to acquire a different ww_mutex? Bad!").
func (m *WWMutex) Lock(ctx context.Context, a *AcquireCtx) error {
	return m.lock(ctx, a, false)
}

// LockSlow locks m after a back-off: a holds no other lock, so it cannot be told to
// back off and simply waits its turn (or ctx ends). m must be the mutex of a's
// last ErrDeadlock. With other locks held in a, or without an ErrDeadlock to
// resolve, it returns an error wrapping ErrInvalid and changes nothing, where the
// kernel's DEBUG_WW_MUTEXES build warns (ww_mutex_lock_acquired() and
// ww_mutex_lock_slow_interruptible()'s check of contending_lock). Models
// ww_mutex_lock_slow_interruptible().
func (m *WWMutex) LockSlow(ctx context.Context, a *AcquireCtx) error {
	if a != nil && a.acquired != 0 {
		return errSlowHeld
	}
	return m.lock(ctx, a, true)
}

// checkContending applies the DEBUG_WW_MUTEXES rules for what a may lock after
// an ErrDeadlock (ww_mutex_lock_acquired(), ww_mutex_lock_slow()).
func (a *AcquireCtx) checkContending(m *WWMutex, slow bool) error {
	switch {
	case a.contending == nil:
		if slow {
			return errSlowNoDeadlock
		}
	case a.contending != m:
		return errContendedOther
	case a.acquired > 0:
		return errContendedHeld
	}
	return nil
}

func (m *WWMutex) lock(ctx context.Context, a *AcquireCtx, slow bool) error {
	if a != nil {
		switch {
		case a.finished:
			return errCtxDone
		case a.done:
			return errCtxAcquireDone
		case a.class != m.class:
			return errCtxClass
		}
	}
	// Only a's own goroutine makes m's holder a, so this read needs no lock (the
	// kernel reads ww->ctx with READ_ONCE for the same check).
	if h := m.state.Load(); a != nil && h != nil && h.ctx == a {
		return ErrAlready
	}
	if a != nil {
		if err := a.checkContending(m, slow); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Annotate before blocking, so lockdep reports an inversion instead of hanging.
	if a != nil {
		m.dep.AcquireNest(lockdep.Exclusive, &a.dep)
	} else {
		m.dep.Acquire(lockdep.Exclusive)
	}
	if a != nil && a.acquired == 0 && a.wounded.Load() {
		a.wounded.Store(false) // a fresh or backed-off transaction forgets old wounds
	}
	if m.state.CompareAndSwap(nil, holderOf(a, false)) {
		if a != nil {
			a.acquired++
			a.contending = nil
		}
		return nil
	}
	if err := m.acquire(ctx, a, slow); err != nil {
		m.dep.Release()
		if err == ErrDeadlock {
			a.retries.Add(1)
			a.contending = m
		}
		return err
	}
	if a != nil {
		a.contending = nil
	}
	return nil
}

// acquire is the slow path behind Lock: take the lock if it came free, else mark
// the holder contended, queue and wait, re-checking the kill rules at every wake-up.
func (m *WWMutex) acquire(ctx context.Context, a *AcquireCtx, slow bool) error {
	m.mu.Lock()
	for {
		h := m.state.Load()
		if h == nil {
			// Free, hence (state is never nil with waiters) nobody waits.
			if m.state.CompareAndSwap(nil, holderOf(a, false)) {
				if a != nil {
					a.acquired++
				}
				m.mu.Unlock()
				return nil
			}
			continue
		}
		if h.contended || m.state.CompareAndSwap(h, holderOf(h.ctx, true)) {
			break // the holder's Unlock now hands over under mu
		}
	}
	w := &wwWaiter{ctx: a, grant: make(chan struct{}), nudge: make(chan struct{}, 1)}
	pos := m.enqueue(w)
	if !slow && m.mustBackOff(w, pos) {
		m.dequeue(w)
		m.mu.Unlock()
		return ErrDeadlock
	}
	m.afterEnqueue(w, pos)
	m.mu.Unlock()

	var wound chan struct{}
	if a != nil {
		wound = a.wound
	}
	for {
		select {
		case <-w.grant:
			return nil
		case <-w.nudge:
		case <-wound:
		case <-ctx.Done():
			m.mu.Lock()
			if w.granted {
				// Handed over as we gave up: pass it on, so giving up changes nothing.
				m.releaseLocked()
			} else {
				m.dequeue(w)
			}
			m.mu.Unlock()
			return ctx.Err()
		}
		m.mu.Lock()
		if w.granted {
			m.mu.Unlock()
			return nil
		}
		if !slow && m.mustBackOff(w, slices.Index(m.waiters, w)) {
			m.dequeue(w)
			m.mu.Unlock()
			return ErrDeadlock
		}
		m.mu.Unlock()
	}
}

// checkWaiters applies the class's rule after a acquired m while others wait: under
// wound-wait an older waiter that holds locks wounds a; under wait-die younger
// waiters that hold locks are nudged, so that they die. Models
// __ww_mutex_check_waiters().
func (m *WWMutex) checkWaiters(a *AcquireCtx) {
	for _, w := range m.waiters {
		if w.ctx == nil {
			continue
		}
		switch m.class.alg {
		case WoundWait:
			// The waiter must hold a lock (__ww_mutex_wound checks its
			// acquired count, not a's): one that holds nothing is in no cycle.
			if w.ctx.acquired > 0 && a.youngerThan(w.ctx) {
				a.wounded.Store(true)
				a.nudge()
				return
			}
		case WaitDie:
			if w.ctx.youngerThan(a) && w.ctx.acquired > 0 {
				w.poke()
			}
		}
	}
}

func (w *wwWaiter) poke() {
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

// enqueue inserts w and returns its position. A context-less waiter goes to the
// tail. A context waiter goes just ahead of the first context waiter younger than
// it that follows every older one, or to the tail if there is none: walking back
// from the tail, context-less waiters are skipped, so it may pass them, as
// __ww_mutex_add_waiter() does ("Waiters without a context are skipped to avoid
// starving them").
func (m *WWMutex) enqueue(w *wwWaiter) int {
	i := len(m.waiters)
	if w.ctx != nil {
		for j := len(m.waiters) - 1; j >= 0; j-- {
			p := m.waiters[j]
			if p.ctx == nil {
				continue
			}
			if w.ctx.youngerThan(p.ctx) {
				break // stop behind an older context waiter
			}
			i = j
		}
	}
	m.waiters = append(m.waiters, nil)
	copy(m.waiters[i+1:], m.waiters[i:])
	m.waiters[i] = w
	return i
}

// dequeue removes w; when the last waiter leaves, the holder is uncontended again,
// so its Unlock can take the fast path. Called with mu held.
func (m *WWMutex) dequeue(w *wwWaiter) {
	if i := slices.Index(m.waiters, w); i >= 0 {
		m.waiters = append(m.waiters[:i], m.waiters[i+1:]...)
	}
	if h := m.state.Load(); len(m.waiters) == 0 && h != nil && h.contended {
		// Safe as a plain store: no fast path changes a contended state.
		m.state.Store(holderOf(h.ctx, false))
	}
}

// owner is the holder's context, read under mu by the kill rules.
func (m *WWMutex) owner() *AcquireCtx {
	if h := m.state.Load(); h != nil {
		return h.ctx
	}
	return nil
}

// mustBackOff is __ww_mutex_check_kill: a context that holds nothing never backs
// off; under wound-wait one backs off once wounded; under wait-die one backs off if
// the holder is older or any context waiter is queued ahead (enqueue keeps context
// waiters in stamp order, so one ahead is older).
func (m *WWMutex) mustBackOff(w *wwWaiter, pos int) bool {
	a := w.ctx
	if a == nil || a.acquired == 0 {
		return false
	}
	if m.class.alg == WoundWait {
		return a.wounded.Load()
	}
	if o := m.owner(); o != nil && a.youngerThan(o) {
		return true
	}
	for _, p := range m.waiters[:pos] {
		if p.ctx != nil {
			return true
		}
	}
	return false
}

// afterEnqueue applies the rules for a new waiter: under wound-wait, if it holds a
// lock, it wounds a younger holder; under wait-die it nudges younger waiters behind
// it that hold locks. Models __ww_mutex_add_waiter()'s checks.
func (m *WWMutex) afterEnqueue(w *wwWaiter, pos int) {
	if w.ctx == nil {
		return
	}
	switch m.class.alg {
	case WoundWait:
		if o := m.owner(); o != nil && o.youngerThan(w.ctx) && w.ctx.acquired > 0 {
			o.wounded.Store(true)
			o.nudge()
		}
	case WaitDie:
		for _, p := range m.waiters[pos+1:] {
			if p.ctx != nil && p.ctx.acquired > 0 {
				p.poke()
			}
		}
	}
}

// TryLock locks m if it is free, without waiting, and reports whether it did. In an
// acquire context it never returns ErrAlready or ErrDeadlock: a lock the context
// already holds just fails, as does one that breaks the rules after an
// ErrDeadlock (see Lock). Models ww_mutex_trylock().
func (m *WWMutex) TryLock(a *AcquireCtx) bool {
	if a != nil && (a.finished || a.done || a.class != m.class || a.checkContending(m, false) != nil) {
		return false
	}
	if a != nil && a.acquired == 0 && a.wounded.Load() {
		a.wounded.Store(false)
	}
	if !m.state.CompareAndSwap(nil, holderOf(a, false)) {
		return false // held, or handed to a waiter
	}
	if a != nil {
		a.acquired++
		a.contending = nil
	}
	m.dep.TryAcquired(lockdep.Exclusive) // a trylock orders nothing, nest or not
	return true
}

// Unlock releases m and hands it to the first waiter. Unlocking an unlocked mutex
// panics, as sync.Mutex's does (lockdep reports it first). Models ww_mutex_unlock().
func (m *WWMutex) Unlock() {
	m.dep.Release()
	h := m.state.Load()
	if h == nil {
		panic("resv: unlock of unlocked ww mutex")
	}
	if !h.contended && m.state.CompareAndSwap(h, nil) {
		if h.ctx != nil {
			h.ctx.acquired--
		}
		return
	}
	m.mu.Lock() // someone waits (or just queued): hand over
	m.releaseLocked()
	m.mu.Unlock()
}

// releaseLocked drops the holder and hands the lock to the first waiter, which
// becomes the holder before it wakes. Called with mu held.
func (m *WWMutex) releaseLocked() {
	h := m.state.Load()
	if h.ctx != nil {
		h.ctx.acquired--
	}
	if len(m.waiters) == 0 {
		m.state.Store(nil)
		return
	}
	w := m.waiters[0]
	m.waiters = m.waiters[1:]
	w.granted = true
	m.state.Store(holderOf(w.ctx, len(m.waiters) > 0))
	if w.ctx != nil {
		w.ctx.acquired++
		m.checkWaiters(w.ctx)
	}
	close(w.grant)
}
