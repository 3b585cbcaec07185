package fence

import (
	"runtime"
	"unsafe"
)

// A Callback is a queue entry for a function to run when a fence signals. The
// caller owns it (embed it in the object the callback is about, as drivers embed
// struct dma_fence_cb), so adding a callback allocates nothing. A Callback is queued
// on at most one fence at a time and may be reused once it has run or been removed.
// Models struct dma_fence_cb.
type Callback struct {
	prev, next *Callback
	fence      *Fence // the fence it is queued on; nil when not queued
	fn         CallbackFunc
}

// A CallbackFunc runs when the fence signals, in the signalling goroutine, with the
// fence's lock held (as in the kernel): it may signal other fences or add callbacks
// to them, but must not call RemoveCallback, SetError, EnableSignaling or
// SetDeadline on the fence that is calling it, and should be short. Models
// dma_fence_func_t.
type CallbackFunc func(f *Fence, cb *Callback)

// reset marks cb not queued. Every pointer store pays a write barrier while the
// collector marks, and a callback round trip is mostly such stores, so reset
// clears only what could keep another object alive: the fence, and links to
// other entries. fn stays until the next add replaces it, as the kernel leaves
// cb->func.
func (cb *Callback) reset() {
	cb.fence = nil
	if cb.next != nil {
		cb.next = nil
	}
	if cb.prev != cb {
		cb.prev = nil
	}
}

// sameFunc reports whether a and b are the same function value: the same
// closure object, or the same top-level function. A Callback is usually reused
// with the function it had, and skipping that store saves a write barrier while
// the collector marks; Go compares functions only with nil, so it compares the
// pointers underneath.
func sameFunc(a, b CallbackFunc) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&a)) == *(*unsafe.Pointer)(unsafe.Pointer(&b))
}

// cbList is a FIFO of callbacks, linked through the entries themselves: next runs
// head to tail and ends in nil; prev is circular, so head.prev is the tail and one
// pointer holds the list.
type cbList struct{ head *Callback }

func (l *cbList) empty() bool { return l.head == nil }

func (l *cbList) push(cb *Callback) {
	if cb.next != nil {
		cb.next = nil
	}
	if l.head == nil {
		if cb.prev != cb {
			cb.prev = cb
		}
		l.head = cb
		return
	}
	tail := l.head.prev
	cb.prev, tail.next, l.head.prev = tail, cb, cb
}

// pushFront queues cb at the head, where the kernel's default wait queues its
// waiter.
func (l *cbList) pushFront(cb *Callback) {
	if l.head == nil {
		l.push(cb)
		return
	}
	cb.prev, cb.next = l.head.prev, l.head
	l.head.prev, l.head = cb, cb
}

func (l *cbList) remove(cb *Callback) {
	if cb == l.head {
		l.head = cb.next
		if l.head != nil {
			l.head.prev = cb.prev
		}
		return
	}
	cb.prev.next = cb.next
	if cb.next != nil {
		cb.next.prev = cb.prev
	} else {
		l.head.prev = cb.prev // cb was the tail
	}
}

// take empties the list and returns its first entry; the rest follow through next.
func (l *cbList) take() *Callback {
	h := l.head
	l.head = nil
	return h
}

// AddCallback queues fn to run when f signals; callbacks run in the order they
// were added. If f has already signalled it returns ErrSignaled and fn is not run
// (the kernel's -ENOENT): the caller handles the completed case itself. A nil cb or
// fn, or a cb already queued, returns an error wrapping ErrInvalid; a long-running
// fence returns ErrLongRunning (see AddCallbackUnbounded). Adding a callback enables
// signalling. Models dma_fence_add_callback().
func (f *Fence) AddCallback(cb *Callback, fn CallbackFunc) error {
	if f != nil && f.ctx.lr {
		return ErrLongRunning
	}
	return f.addCallback(cb, fn)
}

// AddCallbackUnbounded is AddCallback for any fence, long-running ones included.
// Calling it is the caller's statement that fn may never run, because a long-running
// fence gives no bound on when, or whether, it signals; the code that waits for fn
// must not be on a path that memory management or a dma fence depends on. Models
// the explicit opt-in of the 2023 long-running fence RFC.
func (f *Fence) AddCallbackUnbounded(cb *Callback, fn CallbackFunc) error {
	return f.addCallback(cb, fn)
}

func (f *Fence) addCallback(cb *Callback, fn CallbackFunc) error {
	if f == nil || cb == nil || fn == nil {
		return ErrInvalid
	}
	if f.signaled() {
		return ErrSignaled
	}
	f.lock()
	if cb.fence != nil {
		f.unlock()
		return errCallbackUse
	}
	if !f.enableLocked() {
		f.unlockSet(flagEnableSignal)
		return ErrSignaled
	}
	cb.fence = f
	if !sameFunc(cb.fn, fn) {
		cb.fn = fn
	}
	f.cbs.push(cb)
	if st := f.leaks(); st != nil {
		st.pending.Add(1)
	}
	f.unlockSet(flagEnableSignal | flagCallbacks)
	return nil
}

// RemoveCallback dequeues cb from f. It returns true if cb was still queued (it
// will not run), false if it already ran, was never added, or f has signalled.
// Models dma_fence_remove_callback().
func (f *Fence) RemoveCallback(cb *Callback) bool {
	if cb == nil {
		return false
	}
	f.lock()
	defer f.unlock()
	if cb.fence != f || f.signaled() {
		return false
	}
	f.unqueueLocked(cb)
	return true
}

// unqueueLocked takes cb, queued on f, off f's list, with f locked and unsignalled:
// a callback removed, or a waiter that gave up.
func (f *Fence) unqueueLocked(cb *Callback) {
	f.cbs.remove(cb)
	cb.reset()
	if st := f.leaks(); st != nil {
		st.pending.Add(-1)
	}
}

// removeCallbackUnder is RemoveCallback for a caller that holds another fence's
// lock, as a container's callback does: it waits for f's lock only while f is
// unsignalled, and gives up once f has signalled, whose signal runs cb (or has
// run it). Waiting on a signalling fence's lock there could deadlock against a
// signaller doing the same the other way round (two signal-on-any arrays over the
// same two fences, signalled at once). It still waits on a fence whose lock is
// held by code that waits for the caller's fence's lock: a driver hook on f that
// removes a callback from, or sets the error of, the caller's fence.
func (f *Fence) removeCallbackUnder(cb *Callback) bool {
	for {
		if f.signaled() {
			return false
		}
		if f.tryLock() {
			removed := cb.fence == f && !f.signaled()
			if removed {
				f.unqueueLocked(cb)
			}
			f.unlock()
			return removed
		}
		runtime.Gosched()
	}
}
