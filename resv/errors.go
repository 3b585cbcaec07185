package resv

import (
	"errors"
	"fmt"
)

var (
	// ErrDeadlock is a ww lock attempt that must back off (the kernel's -EDEADLK):
	// unlock every lock held in the acquire context, then LockSlow the contended one
	// and take the rest again with the same context. Models ww_mutex_lock()'s
	// -EDEADLK.
	ErrDeadlock = errors.New("resv: deadlock, back off")
	// ErrAlready is a ww lock attempt on a lock this acquire context already holds
	// (the kernel's -EALREADY). Models ww_mutex_lock()'s -EALREADY.
	ErrAlready = errors.New("resv: already locked in this acquire context")
	// ErrInvalid is a call the kernel would refuse with -EINVAL or warn about, such
	// as reserving zero fence slots. Nothing changed. Models -EINVAL and the
	// kernel's WARN_ONs.
	ErrInvalid = errors.New("resv: invalid argument")
	// ErrNoSlot is an AddFence that appends without a slot reserved in this
	// critical section. The object is unchanged. Models the BUG_ON in
	// dma_resv_add_fence(), stricter: the kernel only crashes once the list's
	// capacity, which may exceed the reservation, is used up (see Object.Reserve).
	ErrNoSlot = errors.New("resv: no fence slot reserved")
	// ErrNotLocked is an operation that needs the reservation lock, called without it.
	// Models dma_resv_assert_held() (a lockdep warning in the kernel).
	ErrNotLocked = errors.New("resv: reservation object not locked")
	// ErrLongRunning is AddFence or ReplaceFences of a long-running fence, which a
	// reservation object never holds. It is also reported to lockdep. It has no
	// kernel counterpart: the kernel has no long-running fences.
	ErrLongRunning = errors.New("resv: long-running fence refused")
	// ErrContainer is AddFence of an array or chain fence: add its leaves instead.
	// Models the WARN_ON(dma_fence_is_container()) in dma_resv_add_fence().
	ErrContainer = fmt.Errorf("%w: container fence (array or chain) added to a reservation", ErrInvalid)

	errSlowHeld       = fmt.Errorf("%w: LockSlow with other locks held in the acquire context", ErrInvalid)
	errSlowNoDeadlock = fmt.Errorf("%w: LockSlow without an ErrDeadlock to resolve in the acquire context", ErrInvalid)
	errContendedOther = fmt.Errorf("%w: lock of another ww mutex before the contended one, after ErrDeadlock", ErrInvalid)
	errContendedHeld  = fmt.Errorf("%w: lock of the contended ww mutex with other locks still held, after ErrDeadlock", ErrInvalid)
	errCtxDone        = fmt.Errorf("%w: acquire context used after Fini", ErrInvalid)
	errCtxAcquireDone = fmt.Errorf("%w: lock in an acquire context after AcquireDone", ErrInvalid)
	errCtxClass       = fmt.Errorf("%w: acquire context of another ww class", ErrInvalid)
)
