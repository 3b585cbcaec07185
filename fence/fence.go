package fence

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// A Fence is a one-shot completion event for work on a timeline: it is created
// unsignalled, signals exactly once, optionally with an error, and then stays
// signalled. Models struct dma_fence.
//
// Invariants: the signalled flag is set exactly once, under mu, after err and ts
// are final and the callback list has been taken; so reading err or ts after
// observing the flag needs no lock. A callback is queued on at most one fence.
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
	flags atomic.Uint32
	refs  atomic.Int32
	ctx   *Context
	ops   *Ops
	seqno uint64

	mu   sync.Mutex
	err  error         // guarded by mu until signalled, then immutable
	ts   time.Time     // guarded by mu until signalled, then immutable
	cbs  cbList        // guarded by mu; empty once signalled
	done chan struct{} // guarded by mu; made by the first waiter, closed on signal
	leak *leakState    // set at creation when the context checks for leaks
	data any           // the driver's, from NewWithData; immutable

	// waiters and doneOut are what Put and LeakCheck count as waiting besides
	// callbacks: goroutines blocked in Wait, and a channel Done handed out (its
	// holder may wait on it for as long as f is pending). Guarded by mu.
	waiters int
	doneOut bool
}

const (
	flagSignaled uint32 = 1 << iota
	flagEnableSignal
	flagArray
	flagChain
)

// Context returns the fence's context.
func (f *Fence) Context() *Context { return f.ctx }

// Seqno returns the fence's sequence number on its context.
func (f *Fence) Seqno() uint64 { return f.seqno }

// Data returns the value given to Context.NewWithData, or nil.
func (f *Fence) Data() any { return f.data }

// IsLongRunning reports whether f is a long-running fence (see LongRunning).
func (f *Fence) IsLongRunning() bool { return f.ctx.lr }

// signaled is the lock-free check every fast path starts with.
func (f *Fence) signaled() bool { return f.flags.Load()&flagSignaled != 0 }

// Signal signals f with the current time as its timestamp: waiters wake, then the
// callbacks run, in the order they were added, in the calling goroutine. Signalling
// a fence twice returns an error wrapping ErrInvalid and changes nothing. Models
// dma_fence_signal(), including its signalling-section annotation.
func (f *Fence) Signal() error { return f.SignalTimestamp(time.Now()) }

// SignalTimestamp signals f with the given timestamp. Models
// dma_fence_signal_timestamp().
func (f *Fence) SignalTimestamp(ts time.Time) error {
	if f == nil {
		return ErrInvalid
	}
	if f.signaled() {
		return errSignalTwice
	}
	chk := f.ctx.Checker()
	cookie := chk.BeginSignalling()
	f.mu.Lock()
	err := f.signalLocked(ts)
	f.mu.Unlock()
	chk.EndSignalling(cookie)
	return err
}

// signalLocked is dma_fence_signal_timestamp_locked(): callbacks run with f.mu held,
// as the kernel runs them under the fence lock. A callback must therefore not call
// RemoveCallback, SetError, EnableSignaling or SetDeadline on the same fence.
func (f *Fence) signalLocked(ts time.Time) error {
	if f.signaled() {
		return errSignalTwice
	}
	f.ts = ts
	list := f.cbs.take()
	f.flags.Or(flagSignaled)
	if f.done != nil {
		close(f.done) // sleeping waiters first, as the kernel queues them at the head
	}
	if f.leak != nil {
		f.leak.pending.Store(0)
	}
	for cb := list; cb != nil; {
		next := cb.next
		fn := cb.fn
		cb.reset()
		fn(f, cb)
		cb = next
	}
	return nil
}

// SetError records the error f will signal with. It must be called before Signal
// (after it, an error wrapping ErrInvalid is returned and nothing changes); err must
// not be nil. Models dma_fence_set_error().
func (f *Fence) SetError(err error) error {
	if err == nil {
		return errNilError
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signaled() {
		return errLateError
	}
	f.err = err
	return nil
}

// Error returns the error recorded with SetError, or nil. Like the kernel's
// fence->error field it can be read before the fence signals: a scheduler sets
// ErrCanceled on a job it will not run, and the driver's RunJob checks it to skip
// the hardware. After signalling it is final.
func (f *Fence) Error() error {
	if f.signaled() {
		return f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
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

// Timestamp returns when f signalled, and false if it has not. Models
// dma_fence_timestamp(), which warns and returns the current time for an
// unsignalled fence.
func (f *Fence) Timestamp() (time.Time, bool) {
	if !f.signaled() {
		return time.Time{}, false
	}
	return f.ts, true
}

// IsSignaled reports whether f has signalled, first polling the driver's Signaled
// hook, and signalling f if it says so. It never enables signalling. Models
// dma_fence_is_signaled().
func (f *Fence) IsSignaled() bool {
	if f.signaled() {
		return true
	}
	if f.ops != nil && f.ops.Signaled != nil && f.ops.Signaled(f) {
		_ = f.Signal() // a concurrent signal may win; either way it is signalled
		return true
	}
	return false
}

// EnableSignaling asks f to signal on its own: it calls the driver's
// EnableSignaling hook once. Models dma_fence_enable_sw_signaling().
func (f *Fence) EnableSignaling() {
	if f.flags.Load()&(flagSignaled|flagEnableSignal) != 0 {
		return
	}
	f.mu.Lock()
	f.enableLocked()
	f.mu.Unlock()
}

// enableLocked is __dma_fence_enable_signaling(): it reports false if f is signalled
// (or the hook said it already completed, and f was signalled here).
func (f *Fence) enableLocked() bool {
	was := f.flags.Or(flagEnableSignal)
	if was&flagSignaled != 0 {
		return false
	}
	if was&flagEnableSignal == 0 && f.ops != nil && f.ops.EnableSignaling != nil {
		if !f.ops.EnableSignaling(f) {
			_ = f.signalLocked(time.Now())
			return false
		}
	}
	return true
}

// SetDeadline passes the hint that f is wanted by t to the driver, if it has the
// hook and f is still pending. Models dma_fence_set_deadline().
func (f *Fence) SetDeadline(t time.Time) {
	if f.ops != nil && f.ops.SetDeadline != nil && !f.IsSignaled() {
		f.ops.SetDeadline(f, t)
	}
}

// Done returns a channel that is closed when f signals, for select. The channel is
// made on first use. Unlike Wait, Done does not annotate a wait for lockdep:
// prefer Wait, or call lockdep's MightWaitFence where a select stands for it.
func (f *Fence) Done() <-chan struct{} {
	if f.signaled() {
		return closedChan
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signaled() || !f.enableLocked() {
		return closedChan
	}
	if !f.doneOut {
		f.doneOut = true
		if f.leak != nil {
			f.leak.pending.Add(1)
		}
	}
	return f.doneLocked()
}

// doneLocked returns the waiters' channel, making it on first use.
func (f *Fence) doneLocked() chan struct{} {
	if f.done == nil {
		f.done = make(chan struct{})
	}
	return f.done
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Wait blocks until f signals or ctx is done, and returns nil or ctx.Err(). It
// returns nil for a fence that signalled with an error: read that with Error.
// Giving up changes nothing. Models dma_fence_wait(): it is annotated for lockdep
// (a dma fence wait, or for a long-running fence an LR wait) and enables signalling.
func (f *Fence) Wait(ctx context.Context) error {
	f.annotateWait()
	if f.IsSignaled() {
		return nil
	}
	done := f.addWaiter()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		f.removeWaiter()
		return ctx.Err()
	}
}

// addWaiter counts the calling goroutine as blocked in Wait and returns the
// channel to block on, or nil if f has signalled (enabling signalling may do it).
// Like the waiter dma_fence_default_wait() queues, it makes a release of the last
// reference a release with pending signals.
func (f *Fence) addWaiter() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signaled() || !f.enableLocked() {
		return nil
	}
	f.waiters++
	if f.leak != nil {
		f.leak.pending.Add(1)
	}
	return f.doneLocked()
}

// removeWaiter undoes addWaiter for a Wait that gives up, as the kernel removes
// its waiter on a timeout, so that giving up changes nothing: neither Put nor
// LeakCheck will count a waiter that has gone.
func (f *Fence) removeWaiter() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.signaled() {
		return // nothing is pending any more
	}
	f.waiters--
	if f.leak != nil {
		f.leak.pending.Add(-1)
	}
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
// dma_fence_describe().
func (f *Fence) Describe() string {
	state := "unsignalled"
	if f.signaled() {
		state = "signalled"
	}
	return fmt.Sprintf("%s %s seq %d %s", f.ctx.driver, f.ctx.timeline, f.seqno, state)
}

// String returns Describe's text.
func (f *Fence) String() string { return f.Describe() }

// Get takes a reference to f and returns f. References matter only for the
// Release hook and the kernel's release-with-pending-callbacks rule; the garbage
// collector frees a fence whatever its count. Models dma_fence_get().
func (f *Fence) Get() *Fence {
	f.refs.Add(1)
	return f
}

// Put drops a reference. The last one runs the Release hook; if f is then still
// unsignalled with callbacks queued or waiters (a goroutine blocked in Wait, a
// channel handed out by Done), it is first reported to lockdep
// (KindFenceLeak), given ErrDeadlock and signalled, as the kernel's
// dma_fence_release() does. Models dma_fence_put().
func (f *Fence) Put() {
	if f.refs.Add(-1) != 0 {
		return
	}
	f.mu.Lock()
	pending := !f.signaled() && (!f.cbs.empty() || f.waiters > 0 || f.doneOut)
	f.mu.Unlock()
	if pending {
		f.ctx.Checker().FenceLeaked(f.Describe() + ": released with pending signals")
		_ = f.SetError(ErrDeadlock)
		_ = f.Signal()
	}
	if f.ops != nil && f.ops.Release != nil {
		f.ops.Release(f)
	}
}
