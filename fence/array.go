package fence

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// An Array is a fence that signals when all of its fences have signalled, or with
// SignalOnAny when the first one has. Models struct dma_fence_array.
//
// The first error seen among the fences becomes the array's error, "first" being
// index order for fences already signalled when signalling is enabled (or when the
// array is polled, where the kernel copies no error: a difference, so that an
// array's error does not depend on who looked first) and then the order in which
// callbacks fire. The array signals in the goroutine that signalled
// its last (or first) fence; the kernel defers that to irq_work, so that the array's
// lock is never taken under a fence's lock while enabling holds the array's lock
// and takes the fences'. Here a fence that completes the array while signalling is
// being enabled leaves the signal to the enabling side instead. Arrays must be flat: an array or chain among the fences is
// not refused but defeats Unwrap and Merge, as the kernel warns.
type Array struct {
	Fence // must be first: AsArray converts a *Fence back

	fences   []*Fence // one reference each, dropped on release
	anyOne   bool     // signal on any: the first fence completes the array
	pending  atomic.Int32
	enabling atomic.Bool           // enableSignaling is queueing callbacks, holding the array's lock
	firstErr atomic.Pointer[error] // the first error seen; &noError once settled without one
	cbs      []Callback
}

// arrayOps is shared by every array: the hooks find theirs with AsArray.
var arrayOps = &Ops{
	EnableSignaling: func(f *Fence) bool { return AsArray(f).enableSignaling() },
	Signaled:        func(f *Fence) bool { return AsArray(f).signaledPoll() },
	SetDeadline: func(f *Fence, t time.Time) {
		for _, e := range AsArray(f).fences {
			e.SetDeadline(t)
		}
	},
	// dma_fence_array_release(): the array's references to its fences go with it.
	Release: func(f *Fence) {
		for _, e := range AsArray(f).fences {
			e.Put()
		}
	},
}

// noError marks an array that completed with no error (see settle).
var noError error

// NewArray returns an array fence over fences, on context ctx with the given seqno
// (use AllocContexts(1) and 1 when the array has no timeline of its own). The array
// keeps the slice, and takes over the caller's reference to each fence: its release
// (the last Put) puts each, as dma_fence_array_create() takes ownership of the
// fences. A caller that goes on using a fence gets a reference of its own first
// (pass f.Get()). While a callback of the array is queued on a fence, it holds a
// reference to the array, as the kernel's does. Models dma_fence_array_create().
func NewArray(fences []*Fence, ctx uint64, seqno uint64, signalOnAny bool) *Array {
	a := &Array{fences: fences, anyOne: signalOnAny, cbs: make([]Callback, len(fences))}
	n := int32(len(fences))
	if signalOnAny {
		n = 1
	}
	a.pending.Store(n)
	// Timestamps: the kernel stamps every signal, and arrays are not a hot path.
	fc := &Context{id: ctx, driver: "dma_fence_array", timeline: "unbound", checker: checkerOf(fences),
		ops: arrayOps, stamps: true}
	a.Fence.ctx, a.Fence.seqno = fc, seqno
	a.Fence.flags.Store(flagArray | flagPoll)
	if len(fences) == 0 {
		// Nothing to wait for: the kernel warns; an empty array is complete.
		a.Fence.flags.Or(flagEnableSignal)
		_ = a.Fence.signalLocked(a.Fence.ctx.now())
	}
	return a
}

// AsArray returns the Array f is, or nil. Models to_dma_fence_array().
func AsArray(f *Fence) *Array {
	if f == nil || f.flags.Load()&flagArray == 0 {
		return nil
	}
	return (*Array)(unsafe.Pointer(f))
}

// Fences returns the array's fences. The slice must not be modified. Models
// dma_fence_array's fences and num_fences.
func (a *Array) Fences() []*Fence { return a.fences }

// enableSignaling runs with a.Fence's lock held: it queues a callback on every fence,
// counting those already signalled, and stops once the array is complete, as
// dma_fence_array_enable_signaling() returns when its count reaches zero: a
// callback queued after that would be dead, and would make an innocent fence look
// leaked when dropped (and LeakCheck count it as waited on). The kernel stops only
// on its own decrement; here also when a callback already queued completed the
// array meanwhile, for the same reason. Returning false signals the array at once.
// Each queued callback holds a reference to the array, as in
// dma_fence_array_enable_signaling().
func (a *Array) enableSignaling() bool {
	a.enabling.Store(true)
	for i, f := range a.fences {
		a.Fence.Get()
		if err := f.addCallback(&a.cbs[i], a.entrySignalled); err != nil {
			a.Fence.Put() // not the last: the caller of the hook holds one
			a.recordError(f.Error())
			a.pending.Add(-1)
		}
		if a.pending.Load() <= 0 {
			break // <= 0: with signal-on-any, callbacks go on counting below zero
		}
	}
	// Whoever sees the count at zero after this store signals: a callback that
	// reached zero while we were enabling left it to us (Go's atomics are
	// sequentially consistent, so one of us sees the other).
	a.enabling.Store(false)
	if a.pending.Load() > 0 {
		return true
	}
	if err := a.settle(); err != nil {
		a.Fence.err = err // a.Fence's lock is held; the core signals on false
	}
	a.dropCallbacks()
	return false
}

// entrySignalled runs in the goroutine that signalled one of the fences, with that
// fence's lock held. It drops the reference its callback held, as
// dma_fence_array_cb_func() does (or, having completed the array, its irq_work).
func (a *Array) entrySignalled(f *Fence, _ *Callback) {
	defer a.Fence.Put()
	a.recordError(f.Error())
	if a.pending.Add(-1) != 0 || a.enabling.Load() {
		return // not complete, or enableSignaling signals (it holds our lock)
	}
	if err := a.settle(); err != nil {
		_ = a.Fence.SetError(err)
	}
	_ = a.Fence.Signal()
	a.dropCallbacks()
}

// dropCallbacks takes a completed signal-on-any array's callbacks off the fences
// that have not signalled, dropping the references they held. The kernel leaves
// them queued until those fences signal, each holding a reference to the array,
// which holds one to each fence, so no fence is released under them. Here a
// fence's Put and LeakCheck count a queued callback as someone waiting on it: an
// innocent fence dropped unsignalled would be reported and signalled with
// ErrDeadlock for a callback that can change nothing. It runs with a.Fence's
// lock held (enabling) or with a signalling fence's (entrySignalled): see
// removeCallbackUnder.
func (a *Array) dropCallbacks() {
	if !a.anyOne {
		return // complete only once every fence has signalled: nothing is queued
	}
	for i, f := range a.fences {
		if f.removeCallbackUnder(&a.cbs[i]) {
			a.Fence.Put() // not the last: the caller still holds its own
		}
	}
}

// recordError keeps the first error, as the kernel's cmpxchg(error, PENDING_ERROR,
// err) does. It runs under a.Fence's lock (enable) or from an entry callback (without
// it), so it only records: the array's own error is written under its lock, by
// whoever completes it, from settle.
func (a *Array) recordError(err error) {
	if err != nil {
		a.firstErr.CompareAndSwap(nil, &err)
	}
}

// settle closes error recording when the array completes, as the kernel's
// cmpxchg(error, PENDING_ERROR, 0) does, so that a fence signalling with an error
// after a signal-on-any array completed does not change the array's error. It
// returns the first error, or nil.
func (a *Array) settle() error {
	a.firstErr.CompareAndSwap(nil, &noError)
	return *a.firstErr.Load()
}

// signaledPoll is the array's Signaled hook: with signalling enabled it trusts the
// count; otherwise it counts signalled fences itself. As dma_fence_array_signaled()
// does, it reads the count once, before the enable flag: enabling sets the flag
// before it counts the fences already signalled, so a count read after the flag
// was seen clear may already include a fence the loop below counts again, and the
// array would signal with a fence still pending. A count read first is either
// untouched by enabling or read with the flag set.
func (a *Array) signaledPoll() bool {
	pending := a.pending.Load()
	if a.Fence.flags.Load()&flagEnableSignal != 0 {
		if pending > 0 {
			return false
		}
		// Completed, and the callback that completed it may not have signalled
		// yet: signal with the error it recorded (the hook runs without the lock).
		if err := a.settle(); err != nil {
			_ = a.Fence.SetError(err)
		}
		return true
	}
	// Not enabled: count the signalled fences. The kernel's poll path does not
	// copy their errors, so an array polled complete signals without the first
	// error; here it records them in index order, as enabling would, because an
	// array that completes must carry its fences' first error.
	need := int(pending)
	for _, f := range a.fences {
		if f.IsSignaled() {
			a.recordError(f.Error())
			need--
			if need <= 0 {
				if err := a.settle(); err != nil {
					_ = a.Fence.SetError(err)
				}
				return true
			}
		}
	}
	return false
}
