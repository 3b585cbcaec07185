package fence

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/internal/monotime"
)

// A Fence is a one-shot completion event for work on a timeline: it is created
// unsignalled, signals exactly once, optionally with an error, and then stays
// signalled. Models struct dma_fence.
//
// Invariants: the signalled flag is set exactly once, by a compare-and-swap that
// takes the lock with it, or finds the lock free and no callback queued (see
// signal). From then on only the signal changes the callback list, the Done
// channel or err, and err was final before: reading err after observing the flag
// needs no lock. A timestamp is written before flagStamped, which is set with or
// after the signalled flag. A callback is queued on at most one fence.
//
// Rules (dma-buf.rst): a fence must signal in bounded time (a driver backs every
// fence with a timeout that signals it with an error); the code between publishing a
// fence and signalling it is a signalling critical section, which must not wait on
// other fences with locks the waiters hold, nor allocate memory in a way that can
// enter reclaim. Signal annotates itself as such a section; longer paths should
// use lockdep.BeginSignalling around all of it.
//
// A Fence must not be copied.
type Fence struct {
	flags atomic.Uint32 // the flag bits below, among them the fence lock (lock.go)
	refs  atomic.Int32  // references minus one, so that the zero value is one
	ctx   *Context      // also holds the ops: the kernel's fence->ops
	seqno uint64

	err  error         // guarded by the lock until signalled, then immutable
	ts   int64         // guarded by the lock until flagStamped, then immutable
	cbs  cbList        // guarded by the lock; empty once signalled
	done chan struct{} // guarded by the lock; made by Done, closed on signal
	data any           // the driver's (NewWithData), or with flagLeak a *leakState holding it; immutable
}

// The layout above is 80 bytes, an allocation size class below a channel's 96:
// creating and signalling a fence is the unit the whole model is built of.

const (
	flagSignaled uint32 = 1 << iota
	flagEnableSignal
	flagArray
	flagChain
	flagDoneOut   // Done handed out a channel: its holder counts as a waiter (under the lock)
	flagPoll      // the context's ops have a Signaled hook; set at creation, never cleared
	flagStamped   // ts holds the signal's timestamp
	flagStampSoon // the signal holding the lock is recording a timestamp: flagStamped follows
	flagLocked    // the fence lock (lock.go)
	flagLeak      // the context checks for leaks: data is a *leakState; set at creation
	flagCallbacks // AddCallback queued a callback (it may have been removed since): Signal takes the lock
)

// noStamp stands for "no timestamp": a fence signalled by Signal on a context
// without WithTimestamps, or given the zero time.Time.
const noStamp = math.MinInt64

// stamp is the reading a fence stores for timestamp t. Timestamps are readings of
// the clock the scheduler shares (internal/monotime): one clock read where
// time.Now takes two, and Timestamp turns them back into a time.Time. A
// timestamp given to SignalTimestamp without a monotonic reading keeps its wall
// clock exactly.
func stamp(t time.Time) int64 {
	if t.IsZero() {
		return noStamp
	}
	return monotime.Reading(t)
}

// now is the timestamp Signal records: a clock reading if the context keeps
// timestamps, else none. The clock read is the single largest cost of signalling
// (about half a channel close on the machines we measured), which is why it is
// opt-in; see WithTimestamps.
func (c *Context) now() int64 {
	if c.stamps {
		return monotime.Now()
	}
	return noStamp
}

func (f *Fence) ops() *Ops { return f.ctx.ops }

// Context returns the fence's context. Models dma_fence.context with the
// driver's and timeline's names (the kernel keeps only the id in the fence).
func (f *Fence) Context() *Context { return f.ctx }

// Seqno returns the fence's sequence number on its context. Models dma_fence.seqno.
func (f *Fence) Seqno() uint64 { return f.seqno }

// Data returns the value given to Context.NewWithData, or nil. Models container_of()
// from a struct dma_fence to the driver's fence.
func (f *Fence) Data() any {
	if st := f.leaks(); st != nil {
		return st.data
	}
	return f.data
}

// IsLongRunning reports whether f is a long-running fence (see LongRunning). It
// has no kernel counterpart.
func (f *Fence) IsLongRunning() bool { return f.ctx.lr }

// signaled is the lock-free check every fast path starts with.
func (f *Fence) signaled() bool { return f.flags.Load()&flagSignaled != 0 }

// Signal signals f: waiters wake, then the callbacks run, in the order they were
// added, in the calling goroutine. If f's context keeps timestamps
// (WithTimestamps), the current time is recorded as f's timestamp. Signalling a
// fence twice returns an error wrapping ErrInvalid and changes nothing. Models
// dma_fence_signal(), including its signalling-section annotation.
func (f *Fence) Signal() error {
	if f == nil {
		return ErrInvalid
	}
	return f.signalAt(f.ctx.now())
}

// SignalTimestamp signals f with the given timestamp. Models
// dma_fence_signal_timestamp().
func (f *Fence) SignalTimestamp(ts time.Time) error {
	if f == nil {
		return ErrInvalid
	}
	return f.signalAt(stamp(ts))
}

func (f *Fence) signalAt(ts int64) error {
	chk := f.ctx.Checker()
	if !chk.Enabled() { // the production path: no annotation calls at all
		return f.signal(ts)
	}
	cookie := chk.BeginSignalling()
	err := f.signal(ts)
	chk.EndSignalling(cookie)
	return err
}

// signal signals f. Without a timestamp to record it is one or two atomic
// operations: with no callback queued (sleeping waiters aside), marking f
// signalled while the lock is free freezes the list, since everything that
// changes it takes the lock and then finds f signalled, so the waiters are woken
// without the lock; otherwise taking the lock and marking f signalled are one
// operation (lock.go), and the callbacks run under the lock, as the kernel's do.
func (f *Fence) signal(ts int64) error {
	if ts == noStamp {
		for fl := f.flags.Load(); fl&(flagSignaled|flagLocked|flagCallbacks) == 0; fl = f.flags.Load() {
			if f.flags.CompareAndSwap(fl, fl|flagSignaled) {
				f.complete()
				return nil
			}
		}
		if !f.lockToSignal(0) {
			return errSignalTwice
		}
		f.complete()
		f.unlock()
		return nil
	}
	// With a timestamp: mark f signalled with the stamp to follow, record it, and,
	// if nothing is queued, publish it as the lock is dropped. Between the two,
	// Timestamp waits, as dma_fence_timestamp() spins on the timestamp bit; no
	// foreign code runs there, so it waits for a few instructions.
	if !f.lockToSignal(flagStampSoon) {
		return errSignalTwice
	}
	f.ts = ts
	if f.cbs.empty() && f.done == nil && f.flags.Load()&flagLeak == 0 {
		f.unlockSet(flagStamped)
		return nil
	}
	f.flags.Or(flagStamped) // before the callbacks, which may read it
	f.complete()
	f.unlock()
	return nil
}

// signalLocked is dma_fence_signal_timestamp_locked(), for a caller that holds f's
// lock. Like the kernel, it marks f signalled before it records the timestamp, and
// readers of the timestamp look for the flag that follows it (the kernel's
// DMA_FENCE_FLAG_TIMESTAMP_BIT).
func (f *Fence) signalLocked(ts int64) error {
	if f.signaled() {
		return errSignalTwice
	}
	if ts == noStamp {
		f.flags.Or(flagSignaled)
	} else {
		f.ts = ts
		f.flags.Or(flagSignaled | flagStamped)
	}
	f.complete()
	return nil
}

// complete finishes a signal, with f marked signalled, and locked unless no
// callback is queued: sleeping waiters wake, then the callbacks run, in the
// calling goroutine, with f's lock held, as the kernel runs them under the fence
// lock. A callback must therefore not call RemoveCallback, SetError,
// EnableSignaling or SetDeadline on the same fence. Once f is marked signalled
// nothing but this changes its list, Done channel or error.
func (f *Fence) complete() {
	list := f.cbs.take()
	if f.done != nil {
		close(f.done) // Done's holders, then the list: waiters at its head, then callbacks
	}
	if st := f.leaks(); st != nil {
		st.pending.Store(0)
	}
	for cb := list; cb != nil; {
		next := cb.next
		fn := cb.fn
		cb.reset()
		fn(f, cb)
		cb = next
	}
}

// SetErrorLocked is SetError for a driver hook that runs with f's lock held:
// EnableSignaling, when it returns false because the work already failed. Models
// dma_fence_set_error() called under the fence lock.
func (f *Fence) SetErrorLocked(err error) error {
	if err == nil {
		return errNilError
	}
	if f.signaled() {
		return errLateError
	}
	f.err = err
	return nil
}

// SetError records the error f will signal with. It must be called before Signal
// (after it, an error wrapping ErrInvalid is returned and nothing changes); err must
// not be nil. Models dma_fence_set_error().
func (f *Fence) SetError(err error) error {
	if err == nil {
		return errNilError
	}
	f.lock()
	defer f.unlock()
	if f.signaled() {
		return errLateError
	}
	f.err = err
	return nil
}

// Error returns the error recorded with SetError, or nil. Like the kernel's
// fence->error field it can be read before the fence signals: a scheduler sets
// ErrCanceled on a job it will not run, and the driver's RunJob checks it to skip
// the hardware. After signalling it is final. Models reading dma_fence.error.
func (f *Fence) Error() error {
	if f.signaled() {
		return f.err
	}
	f.lock()
	defer f.unlock()
	return f.err
}

// Status reports whether f has signalled, and with which error. Models
// dma_fence_get_status(): 0 is (false, nil), 1 is (true, nil), a negative errno is
// (true, err).
func (f *Fence) Status() (signaled bool, err error) {
	if !f.IsSignaled() {
		return false, nil
	}
	return true, f.err
}

// Timestamp returns when f signalled, and false if it has not, or if no time was
// recorded: f's context was made without WithTimestamps and f was signalled by
// Signal, not SignalTimestamp. Models dma_fence_timestamp(), which warns and
// returns the current time for an unsignalled fence.
func (f *Fence) Timestamp() (time.Time, bool) {
	fl := f.flags.Load()
	for fl&(flagStamped|flagStampSoon) == flagStampSoon {
		runtime.Gosched() // being recorded (see signal)
		fl = f.flags.Load()
	}
	if fl&flagStamped == 0 {
		return time.Time{}, false
	}
	return monotime.Time(f.ts), true
}

// IsSignaled reports whether f has signalled, first polling the driver's Signaled
// hook, and signalling f if it says so. It never enables signalling. Models
// dma_fence_is_signaled().
func (f *Fence) IsSignaled() bool {
	// One load of f's own flags decides the common case, a pending fence without a
	// poll hook, and the check inlines: reservation walks make it for every fence.
	return f.flags.Load()&(flagSignaled|flagPoll) != 0 && f.signaledOrPolled()
}

// signaledOrPolled is IsSignaled past its inlined check: f has signalled, or its
// driver's Signaled hook is asked, and f is signalled if the hook says so.
func (f *Fence) signaledOrPolled() bool {
	if f.signaled() {
		return true
	}
	if !f.ctx.ops.Signaled(f) {
		return false
	}
	_ = f.Signal() // a concurrent signal may win; either way it is signalled
	return true
}

// EnableSignaling asks f to signal on its own: it calls the driver's
// EnableSignaling hook once, and returns once the hook has run, also when
// another goroutine's call runs it. Models dma_fence_enable_sw_signaling().
func (f *Fence) EnableSignaling() {
	// The enable flag is set before the hook runs, under the lock: seen with the
	// lock free, the hook has finished; with the lock taken, it may be running,
	// and the kernel's caller waits for fence->lock.
	if fl := f.flags.Load(); fl&flagSignaled != 0 || fl&(flagEnableSignal|flagLocked) == flagEnableSignal {
		return
	}
	f.lock()
	f.enableLocked()
	f.unlockSet(flagEnableSignal)
}

// enableLocked is __dma_fence_enable_signaling(): it reports false if f is signalled
// (or the hook said it already completed, and f was signalled here). The caller
// drops the lock with unlockSet(flagEnableSignal): for a fence without an
// EnableSignaling hook the flag is only a record, and setting it as the lock is
// dropped saves an atomic operation; with a hook, it is set here, before the hook
// runs, so that the hook runs once.
func (f *Fence) enableLocked() bool {
	ops := f.ops()
	if ops == nil || ops.EnableSignaling == nil {
		return !f.signaled()
	}
	was := f.flags.Or(flagEnableSignal)
	if was&flagSignaled != 0 {
		return false
	}
	if was&flagEnableSignal == 0 {
		if !ops.EnableSignaling(f) {
			_ = f.signalLocked(f.ctx.now())
			return false
		}
	}
	return true
}

// SetDeadline passes the hint that f is wanted by t to the driver, if it has the
// hook and f is still pending. Models dma_fence_set_deadline().
func (f *Fence) SetDeadline(t time.Time) {
	if ops := f.ops(); ops != nil && ops.SetDeadline != nil && !f.IsSignaled() {
		ops.SetDeadline(f, t)
	}
}

// Done returns a channel that is closed when f signals, for select. The channel is
// made on first use. Unlike Wait, Done does not annotate a wait for lockdep:
// prefer Wait, or call lockdep's MightWaitFence where a select stands for it. It
// has no kernel counterpart: it exists for Go's select (the kernel's nearest is
// the poll support of a sync_file).
func (f *Fence) Done() <-chan struct{} {
	if f.signaled() {
		return closedChan
	}
	f.lock()
	defer f.unlockSet(flagEnableSignal)
	if !f.enableLocked() {
		return closedChan
	}
	if f.flags.Load()&flagDoneOut == 0 {
		f.flags.Or(flagDoneOut)
		if st := f.leaks(); st != nil {
			st.pending.Add(1)
		}
	}
	if f.done == nil {
		f.done = make(chan struct{})
	}
	return f.done
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Wait blocks until f signals or ctx is done, and returns nil or ctx.Err(). It
// returns nil for a fence that signalled with an error: read that with Error.
// Giving up changes nothing; if f signals as ctx gives up, Wait returns nil.
// Models dma_fence_wait(): it is annotated for lockdep (a dma fence wait, or for a
// long-running fence an LR wait) and enables signalling.
func (f *Fence) Wait(ctx context.Context) error {
	f.annotateWait()
	if f.IsSignaled() {
		return nil
	}
	w := goroutineWaiter()
	if !f.addWaiter(w) {
		return nil
	}
	d := ctx.Done()
	if d == nil { // context.Background: a plain receive, cheaper than a select
		<-w.wake
		return nil
	}
	select {
	case <-w.wake:
		return nil
	case <-d:
		if !f.removeWaiter(w) {
			<-w.wake // the signal owns the entry: its wake-up is sent or on its way
			return nil
		}
		return ctx.Err()
	}
}

// addWaiter queues w at the head of f's callback list, where the kernel's
// dma_fence_default_wait() puts its waiter, so sleeping waiters wake before the
// callbacks run. It reports false if f has signalled (enabling signalling may do
// it). Like that waiter, a queued one makes a release of the last reference a
// release with pending signals.
func (f *Fence) addWaiter(w *waiter) bool {
	f.lock()
	defer f.unlockSet(flagEnableSignal)
	if !f.enableLocked() {
		return false
	}
	f.cbs.pushFront(&w.cb)
	if st := f.leaks(); st != nil {
		st.pending.Add(1)
	}
	return true
}

// removeWaiter takes w off f's list for a Wait that gives up, as the kernel removes
// its waiter on a timeout, so that giving up changes nothing: neither Put nor
// LeakCheck will count a waiter that has gone. It reports false if f has
// signalled: the signal owns w then, and sends its wake-up.
func (f *Fence) removeWaiter(w *waiter) bool {
	f.lock()
	defer f.unlock()
	if f.signaled() {
		return false
	}
	f.unqueueLocked(&w.cb)
	return true
}

func (f *Fence) annotateWait() {
	chk := f.ctx.Checker()
	if !chk.Enabled() {
		return
	}
	if f.ctx.lr {
		chk.MightWaitLongRunning(f.Describe())
		return
	}
	chk.MightWaitFence()
}

// Describe returns "<driver> <timeline> seq <n> signalled|unsignalled". Models
// dma_fence_describe() in the format kernels printed before 6.x; the newest print
// "<context>:<seqno> <timeline> <driver> [un]signalled", and their name helpers
// (dma_fence_driver_name, dma_fence_timeline_name) stop asking the driver once
// the fence has signalled, since its data may be gone by then. Here the names
// stay readable after signalling, as a Context outlives its fences, and lockdep's
// and resv's reports keep this one format.
func (f *Fence) Describe() string {
	state := "unsignalled"
	if f.signaled() {
		state = "signalled"
	}
	return fmt.Sprintf("%s %s seq %d %s", f.ctx.driver, f.ctx.timeline, f.seqno, state)
}

// String returns Describe's text. It has no kernel counterpart: it is Go's
// fmt.Stringer, for dma_fence_describe() (Describe).
func (f *Fence) String() string { return f.Describe() }

// Get takes a reference to f and returns f. References matter only for the
// Release hook and the kernel's release-with-pending-callbacks rule; the garbage
// collector frees a fence whatever its count. Models dma_fence_get().
func (f *Fence) Get() *Fence {
	f.refs.Add(1)
	return f
}

// TryGet takes a reference to f unless f has been released (its last reference
// dropped), and reports whether it did. Models dma_fence_get_rcu(): a released
// fence is not brought back, so that its Release hook runs once. Code that finds
// a fence through a structure holding no reference of its own (a walk, a
// reservation object) takes its reference this way.
func (f *Fence) TryGet() bool { return f.tryGet() }

// tryGet is TryGet.
func (f *Fence) tryGet() bool {
	for {
		r := f.refs.Load()
		if r < 0 {
			return false
		}
		if f.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// Put drops a reference. The last one runs the Release hook; if f is then still
// unsignalled with callbacks queued or waiters (a goroutine blocked in Wait, a
// channel handed out by Done), it is first reported to lockdep
// (KindFenceLeak), given ErrDeadlock and signalled, as the kernel's
// dma_fence_release() does. Models dma_fence_put().
//
// A container (Array, Chain) holds references to its fences and drops them when
// it is released; the kernel drops a container's own last reference from
// irq_work, here it may be dropped by the container's callback, in the goroutine
// signalling one of its fences and with that fence's lock held. A signalled
// fence's Put does not take its lock, so such a release may drop that fence's
// last reference too, and its Release hook then runs with its lock held.
func (f *Fence) Put() {
	if f.refs.Add(-1) != -1 {
		return // references are stored minus one
	}
	f.releasePending()
	if ops := f.ops(); ops != nil && ops.Release != nil {
		ops.Release(f)
	}
}

// releasePending is the release-with-pending rule of Put: a fence released
// unsignalled with callbacks queued or waiters is reported, given ErrDeadlock and
// signalled. A signalled fence has nothing pending, and is not locked.
func (f *Fence) releasePending() {
	if f.signaled() {
		return
	}
	f.lock()
	pending := !f.signaled() && (!f.cbs.empty() || f.flags.Load()&flagDoneOut != 0)
	f.unlock()
	if pending {
		f.ctx.Checker().FenceLeaked(f.Describe() + ": released with pending signals")
		_ = f.SetError(ErrDeadlock)
		_ = f.Signal()
	}
}
