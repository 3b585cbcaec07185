package resv

import (
	"errors"
	"fmt"
)

var (
	// ErrDeadlock is a ww lock attempt that must back off (the kernel's -EDEADLK):
	// unlock every lock held in the acquire context, then LockSlow the contended one
	// and take the rest again with the same context.
	ErrDeadlock = errors.New("resv: deadlock, back off")
	// ErrAlready is a ww lock attempt on a lock this acquire context already holds
	// (the kernel's -EALREADY).
	ErrAlready = errors.New("resv: already locked in this acquire context")
	// ErrInvalid is a call the kernel would refuse with -EINVAL or warn about, such
	// as reserving zero fence slots. Nothing changed.
	ErrInvalid = errors.New("resv: invalid argument")
	// ErrNoSlot is AddFence without a reserved slot: the kernel's BUG_ON in
	// dma_resv_add_fence. The object is unchanged.
	ErrNoSlot = errors.New("resv: no fence slot reserved")
	// ErrNotLocked is an operation that needs the reservation lock, called without it.
	ErrNotLocked = errors.New("resv: reservation object not locked")
	// ErrLongRunning is AddFence or ReplaceFences of a long-running fence, which a
	// reservation object never holds. It is also reported to lockdep.
	ErrLongRunning = errors.New("resv: long-running fence refused")
	// ErrContainer is AddFence of an array or chain fence: add its leaves instead.
	ErrContainer = fmt.Errorf("%w: container fence (array or chain) added to a reservation", ErrInvalid)

	errSlowHeld       = fmt.Errorf("%w: LockSlow with other locks held in the acquire context", ErrInvalid)
	errCtxDone        = fmt.Errorf("%w: acquire context used after Fini", ErrInvalid)
	errCtxAcquireDone = fmt.Errorf("%w: lock in an acquire context after AcquireDone", ErrInvalid)
	errCtxClass       = fmt.Errorf("%w: acquire context of another ww class", ErrInvalid)
)
