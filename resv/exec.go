package resv

import (
	"context"
	"errors"
	"slices"

	"github.com/gpusync/gpusync/lockdep"
)

// ExecFlags change how an Exec locks. Models the DRM_EXEC_* flags.
type ExecFlags uint8

const (
	// IgnoreDuplicates makes locking an object the Exec already holds succeed;
	// without it Lock returns ErrAlready. Models DRM_EXEC_IGNORE_DUPLICATES.
	IgnoreDuplicates ExecFlags = 1 << iota
)

// An Exec locks a growing set of reservation objects in one acquire context,
// backing off and retrying by itself on contention, and unlocks them all at the end.
// Models struct drm_exec.
//
// The Go shape is a callback instead of the kernel's drm_exec_until_all_locked loop:
// Run calls fn, which locks (Lock, Prepare) what it needs; when a lock returns
// ErrDeadlock, fn returns it, Run drops every lock, takes the contended object with
// LockSlow, and calls fn again, with the same ticket so the transaction ages and
// wins. fn must therefore be safe to run more than once. After Run returns nil the
// objects stay locked until Fini.
//
//	e := resv.NewExec(resv.IgnoreDuplicates, nil)
//	defer e.Fini()
//	err := e.Run(ctx, func(ctx context.Context) error {
//		for _, bo := range bos {
//			if err := e.Prepare(ctx, bo, 1); err != nil {
//				return err
//			}
//		}
//		return nil
//	})
//
// An Exec belongs to one goroutine. Use NewExec.
type Exec struct {
	flags   ExecFlags
	checker *lockdep.Checker

	ticket    *AcquireCtx
	objects   []*Object // locked, in locking order
	contended *Object   // the object to LockSlow before the next pass
	prelocked *Object   // taken by LockSlow in this pass, not yet asked for by fn
	retries   int
}

// NewExec returns an Exec with no objects, reporting to checker (nil: the default).
// Models drm_exec_init().
func NewExec(flags ExecFlags, checker *lockdep.Checker) *Exec {
	return &Exec{flags: flags, checker: checker}
}

// Run calls fn until a pass ends without contention: nil, with every object fn
// locked still held; or the first error that is not ErrDeadlock (the objects locked
// so far stay locked; Fini drops them). A pass in which a Lock returned ErrDeadlock
// is retried whether fn returned that error or ignored it and returned nil, as
// drm_exec_cleanup() keeps the loop going while an object is contended. ctx bounds
// every wait. Models drm_exec_until_all_locked() with
// drm_exec_retry_on_contention().
func (e *Exec) Run(ctx context.Context, fn func(ctx context.Context) error) error {
	if e.ticket == nil {
		e.ticket = NewAcquireCtx(ReservationClass, e.checker)
	}
	for {
		if c := e.contended; c != nil {
			e.contended = nil
			if err := c.LockSlow(ctx, e.ticket); err != nil {
				return err
			}
			e.objects = append(e.objects, c)
			e.prelocked = c
		}
		err := fn(ctx)
		if err == nil && e.contended == nil {
			e.prelocked = nil
			e.ticket.AcquireDone()
			return nil
		}
		// A pass that hit contention is retried even if fn went on and returned
		// nil: drm_exec_cleanup() ends the loop only when nothing is contended.
		if err != nil && (!errors.Is(err, ErrDeadlock) || e.contended == nil) {
			return err
		}
		e.retries++
		e.unlockAll()
	}
}

// Lock locks obj and tracks it. On contention it records obj for Run's back-off and
// returns ErrDeadlock, which fn must return: locking another object in the same
// pass is then an error wrapping ErrInvalid (the contended one must come first,
// with nothing held), where the kernel's drm_exec_lock_obj() would slow-lock the
// contended object with the others still held, which DEBUG_WW_MUTEXES warns
// about. Models drm_exec_lock_obj().
func (e *Exec) Lock(ctx context.Context, obj *Object) error {
	if e.ticket == nil {
		return ErrInvalid // outside Run
	}
	if obj == e.prelocked {
		e.prelocked = nil
		return nil
	}
	err := obj.Lock(ctx, e.ticket)
	switch {
	case err == nil:
		e.objects = append(e.objects, obj)
		return nil
	case errors.Is(err, ErrDeadlock):
		e.contended = obj
		return err
	case errors.Is(err, ErrAlready) && e.flags&IgnoreDuplicates != 0:
		return nil
	}
	return err
}

// Prepare locks obj and reserves n fence slots in it; if the reservation fails, obj
// is unlocked again. Models drm_exec_prepare_obj().
func (e *Exec) Prepare(ctx context.Context, obj *Object, n int) error {
	if err := e.Lock(ctx, obj); err != nil {
		return err
	}
	if err := obj.Reserve(n); err != nil {
		e.Unlock(obj)
		return err
	}
	return nil
}

// PrepareAll prepares each object in order and returns the first error. Models
// drm_exec_prepare_array().
func (e *Exec) PrepareAll(ctx context.Context, objs []*Object, n int) error {
	for _, o := range objs {
		if err := e.Prepare(ctx, o, n); err != nil {
			return err
		}
	}
	return nil
}

// Unlock unlocks obj early and stops tracking it; an object not tracked is left
// alone. Models drm_exec_unlock_obj().
func (e *Exec) Unlock(obj *Object) {
	for i := len(e.objects) - 1; i >= 0; i-- {
		if e.objects[i] == obj {
			e.objects = slices.Delete(e.objects, i, i+1)
			if obj == e.prelocked {
				e.prelocked = nil // no longer locked: a later Lock must lock it
			}
			obj.Unlock()
			return
		}
	}
}

// Objects returns the locked objects in locking order. The slice must not be
// modified. Models drm_exec_for_each_locked_object().
func (e *Exec) Objects() []*Object { return e.objects }

// IsContended reports whether a lock in the current pass hit contention. Models
// drm_exec_is_contended().
func (e *Exec) IsContended() bool { return e.contended != nil }

// Retries returns how many times Run has backed off since NewExec. It has no
// kernel counterpart: a statistic for tests and benchmarks.
func (e *Exec) Retries() int { return e.retries }

// Ticket returns the acquire context, or nil before Run. Models drm_exec.ticket.
func (e *Exec) Ticket() *AcquireCtx { return e.ticket }

func (e *Exec) unlockAll() {
	for i := len(e.objects) - 1; i >= 0; i-- {
		e.objects[i].Unlock()
	}
	clear(e.objects)
	e.objects = e.objects[:0]
	e.prelocked = nil
}

// Fini unlocks every object, in reverse locking order, and ends the acquire
// context. It is safe after an error from Run and leaves e ready for another Run.
// Models drm_exec_fini().
func (e *Exec) Fini() {
	e.unlockAll()
	e.contended = nil
	if e.ticket != nil {
		_ = e.ticket.Fini() // cannot fail: every lock was just dropped
		e.ticket = nil
	}
}
