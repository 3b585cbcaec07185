package fence

import (
	"sync/atomic"
	"unsafe"

	"github.com/petermattis/goid"
)

// A waiter is a goroutine's entry for sleeping in Wait: a callback queued on the
// fence, whose function wakes the goroutine, as dma_fence_default_wait() queues a
// struct default_wait_cb naming the task. The kernel's entry lives on the waiting
// task's stack; Go cannot park a goroutine without a channel, so each goroutine
// keeps one waiter, with a channel it made itself, and reuses it for every Wait:
// waiting allocates nothing after the first time.
//
// Invariants: only the goroutine gid uses the waiter, so it is queued on at most
// one fence at a time; once that fence is marked signalled the signal owns the
// entry and sends exactly one wake-up; wake holds no token while the goroutine is
// not inside Wait. The entry's Callback has no fence
// pointer (RemoveCallback cannot reach it), so a goroutine blocked in Wait does
// not keep the fence reachable and LeakCheck still sees a fence dropped with a
// sleeper.
type waiter struct {
	cb   Callback
	wake chan struct{} // buffered, one: the signal's wake-up
	gid  int64
}

// waiters caches each goroutine's waiter by goroutine id: ids are never reused,
// so an entry is only ever found by its own goroutine, and one made inside a
// testing/synctest bubble (its channel belongs to the bubble) never serves a
// goroutine outside it. A goroutine whose entry was taken by another with the
// same index makes a new one; dead goroutines' entries are overwritten in time,
// so the cache holds at most len(waiters) of them.
var waiters [1024]atomic.Pointer[waiter]

// goroutineWaiter returns the calling goroutine's waiter.
func goroutineWaiter() *waiter {
	id := goid.Get()
	slot := &waiters[uint64(id)%uint64(len(waiters))]
	if w := slot.Load(); w != nil && w.gid == id {
		return w
	}
	w := &waiter{wake: make(chan struct{}, 1), gid: id}
	w.cb.fn = wakeWaiter // for good: resetting an entry keeps its function
	slot.Store(w)
	return w
}

// wakeWaiter is a waiter's callback.
func wakeWaiter(_ *Fence, cb *Callback) {
	w := (*waiter)(unsafe.Pointer(cb)) // cb is the waiter's first field
	select {
	case w.wake <- struct{}{}:
	default: // cannot happen: the token of an earlier wait was drained
	}
}
