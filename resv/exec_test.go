package resv_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
)

// The scenarios of the kernel's drivers/gpu/drm/tests/drm_exec_test.c (KUnit suite
// drm_exec), then the Exec contract beyond them: contention, slot reservation,
// errors and Fini.

func newObjects(chk *lockdep.Checker, n int) []*resv.Object {
	objs := make([]*resv.Object, n)
	for i := range objs {
		objs[i] = resv.NewObject(chk)
	}
	return objs
}

// requireLockedBy fails unless every object is locked in e's acquire context.
func requireLockedBy(t *testing.T, e *resv.Exec, objs ...*resv.Object) {
	t.Helper()
	for i, o := range objs {
		require.True(t, o.IsLocked(), "object %d not locked", i)
		require.Same(t, e.Ticket(), o.LockingCtx(), "object %d locked in another context", i)
	}
}

func requireUnlocked(t *testing.T, objs ...*resv.Object) {
	t.Helper()
	for i, o := range objs {
		require.False(t, o.IsLocked(), "object %d still locked", i)
	}
}

// sanitycheck: an Exec made and finished without ever running.
func TestDRMExecSanitycheck(t *testing.T) {
	e := resv.NewExec(0, lockdeptest.New(t))
	require.Nil(t, e.Ticket())
	require.Empty(t, e.Objects())
	e.Fini()
}

// test_lock: locking one object in the loop succeeds.
func TestDRMExecLock(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error { return e.Lock(ctx, o) }))
	requireLockedBy(t, e, o)
	requireSameSlice(t, []*resv.Object{o}, e.Objects())
	e.Fini()
	requireUnlocked(t, o)
}

// test_lock_unlock: lock, Unlock, and lock again inside the loop: both locks
// succeed.
func TestDRMExecLockUnlock(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error {
		if err := e.Lock(ctx, o); err != nil {
			return err
		}
		e.Unlock(o)
		if o.IsLocked() || len(e.Objects()) != 0 {
			return errors.New("Unlock left the object locked or tracked")
		}
		return e.Lock(ctx, o)
	}))
	requireLockedBy(t, e, o)
	e.Fini()
	requireUnlocked(t, o)
}

// test_duplicates: with IgnoreDuplicates, locking an object twice succeeds both
// times and tracks it once; without, the second lock returns ErrAlready.
func TestDRMExecDuplicates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags resv.ExecFlags
		want  error
	}{
		{"IgnoreDuplicates", resv.IgnoreDuplicates, nil},
		{"none", 0, resv.ErrAlready},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			chk := lockdeptest.New(t)
			o := resv.NewObject(chk)
			e := resv.NewExec(tc.flags, chk)
			var second error
			require.NoError(t, e.Run(ctx, func(ctx context.Context) error {
				if err := e.Lock(ctx, o); err != nil {
					return err
				}
				second = e.Lock(ctx, o)
				return nil
			}))
			if tc.want == nil {
				require.NoError(t, second)
			} else {
				require.ErrorIs(t, second, tc.want)
			}
			requireSameSlice(t, []*resv.Object{o}, e.Objects(), "tracked once")
			requireLockedBy(t, e, o)
			e.Unlock(o)
			requireUnlocked(t, o)
			e.Fini()
		})
	}
}

// test_prepare: Prepare locks the object and reserves a slot in it.
func TestDRMExecPrepare(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	defer e.Fini()
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error { return e.Prepare(ctx, o, 1) }))
	requireLockedBy(t, e, o)
	require.NoError(t, o.AddFence(newTimeline(chk).Next(), resv.Write), "the slot is reserved")
}

// test_prepare_array: PrepareAll of two objects with one slot each.
func TestDRMExecPrepareArray(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	objs := newObjects(chk, 2)
	e := resv.NewExec(0, chk)
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error { return e.PrepareAll(ctx, objs, 1) }))
	requireLockedBy(t, e, objs...)
	requireSameSlice(t, objs, e.Objects())
	f := newTimeline(chk).Next()
	for _, o := range objs {
		require.NoError(t, o.AddFence(f, resv.Read))
	}
	e.Fini()
	requireUnlocked(t, objs...)
}

// test_multiple_loops: one Exec runs, leaving its loop at once, and finishes,
// twice.
func TestDRMExecMultipleLoops(t *testing.T) {
	ctx := context.Background()
	e := resv.NewExec(0, lockdeptest.New(t))
	for range 2 {
		require.NoError(t, e.Run(ctx, func(context.Context) error { return nil }))
		require.NotNil(t, e.Ticket())
		e.Fini()
		require.Nil(t, e.Ticket())
	}
}

// execOpposite runs an Exec with flags that locks order, and returns its retry
// count. If
// meet is set, on the first pass it signals mine after its first lock and waits for
// theirs: both sides then hold one object the other needs, which forces a back-off.
// check runs on each pass after the first lock.
func execOpposite(ctx context.Context, chk *lockdep.Checker, flags resv.ExecFlags, order []*resv.Object,
	meet bool, mine, theirs chan struct{}, check func(e *resv.Exec, pass int) error) (int, error) {
	e := resv.NewExec(flags, chk)
	defer e.Fini()
	pass := 0
	err := e.Run(ctx, func(ctx context.Context) error {
		pass++
		for j, o := range order {
			if err := e.Lock(ctx, o); err != nil {
				return err
			}
			if j > 0 {
				continue
			}
			if check != nil {
				if err := check(e, pass); err != nil {
					return err
				}
			}
			if meet && pass == 1 {
				close(mine)
				<-theirs
			}
		}
		if len(e.Objects()) != len(order) {
			return errors.New("not every object is tracked")
		}
		return nil
	})
	return e.Retries(), err
}

// Two Execs lock overlapping sets in opposite orders. Forced to meet half-way,
// the younger backs off once (wait-die: Retries is exactly 1 for it, 0 for the
// older) and both finish; then left to run freely, round after round, both always
// finish.
func TestExecContention(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	objs := newObjects(chk, 4)
	backward := slices.Clone(objs)
	slices.Reverse(backward)

	var retries [2]int
	var errs [2]error
	a, b := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { retries[1], errs[1] = execOpposite(ctx, chk, 0, backward, true, b, a, nil) })
	retries[0], errs[0] = execOpposite(ctx, chk, 0, objs, true, a, b, nil)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.ElementsMatch(t, []int{0, 1}, retries[:], "the younger backs off once, the older never")
	requireUnlocked(t, objs...)

	const rounds = 100
	total := 0
	for range rounds {
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			retries[1], errs[1] = execOpposite(ctx, chk, 0, backward[1:], false, nil, nil, nil)
		})
		close(start)
		retries[0], errs[0] = execOpposite(ctx, chk, 0, objs[1:], false, nil, nil, nil)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		total += retries[0] + retries[1]
	}
	requireUnlocked(t, objs...)
	t.Logf("%d free-running rounds: %d back-offs", rounds, total)
}

// After a back-off Run hands fn the contended object already locked; if fn unlocks
// it before asking for it, asking again locks it for real. (IgnoreDuplicates, as
// fn then asks for it once more in its loop.)
func TestExecUnlockPrelocked(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	objs := newObjects(chk, 2)
	backward := []*resv.Object{objs[1], objs[0]}
	check := func(e *resv.Exec, pass int) error {
		if pass != 2 {
			return nil
		}
		// Run locked the contended object (the second in order) before this
		// pass, and fn has not asked for it yet: drop it and lock it again.
		c := e.Objects()[0]
		e.Unlock(c)
		if c.IsLocked() {
			return errors.New("Unlock left the prelocked object locked")
		}
		if err := e.Lock(ctx, c); err != nil {
			return err
		}
		if c.LockingCtx() != e.Ticket() {
			return errors.New("Lock of the prelocked object after Unlock did not lock it")
		}
		return nil
	}
	var errs [2]error
	a, b := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[1] = execOpposite(ctx, chk, resv.IgnoreDuplicates, backward, true, b, a, check) })
	_, errs[0] = execOpposite(ctx, chk, resv.IgnoreDuplicates, objs, true, a, b, check)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	requireUnlocked(t, objs...)
}

// Prepare reserves slots: the fences added within them succeed; one more append,
// or an append to an object only locked, fails with ErrNoSlot and changes nothing.
func TestExecSlotReservation(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	reserved, plain := resv.NewObject(chk), resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	defer e.Fini()
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error {
		if err := e.Prepare(ctx, reserved, 2); err != nil {
			return err
		}
		return e.Lock(ctx, plain)
	}))
	f1, f2, f3 := newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next()
	require.NoError(t, reserved.AddFence(f1, resv.Write))
	require.NoError(t, reserved.AddFence(f2, resv.Read))
	require.ErrorIs(t, reserved.AddFence(f3, resv.Read), resv.ErrNoSlot)
	requireSameSlice(t, []entry{{f1, resv.Write}, {f2, resv.Read}}, lockedEntries(reserved))

	require.ErrorIs(t, plain.AddFence(f1, resv.Write), resv.ErrNoSlot)
	require.Empty(t, lockedEntries(plain))
	require.True(t, plain.TestSignaled(resv.Bookkeep))
}

// Prepare with zero slots fails (ErrInvalid, as dma_resv_reserve_fences warns)
// and leaves the object unlocked and untracked.
func TestExecPrepareZero(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	ok, bad := resv.NewObject(chk), resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	err := e.Run(ctx, func(ctx context.Context) error {
		if err := e.Prepare(ctx, ok, 1); err != nil {
			return err
		}
		return e.Prepare(ctx, bad, 0)
	})
	require.ErrorIs(t, err, resv.ErrInvalid)
	requireUnlocked(t, bad)
	requireSameSlice(t, []*resv.Object{ok}, e.Objects())
	requireLockedBy(t, e, ok)
	e.Fini()
	requireUnlocked(t, ok)
}

// Fini after Run failed unlocks everything fn had locked: after fn's own error,
// and after a wait that gave up.
func TestExecFiniAfterError(t *testing.T) {
	t.Run("fn error", func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		objs := newObjects(chk, 3)
		boom := errors.New("boom")
		e := resv.NewExec(0, chk)
		err := e.Run(ctx, func(ctx context.Context) error {
			for _, o := range objs[:2] {
				if err := e.Lock(ctx, o); err != nil {
					return err
				}
			}
			return boom
		})
		require.ErrorIs(t, err, boom)
		requireLockedBy(t, e, objs[:2]...)
		e.Fini()
		requireUnlocked(t, objs...)
		require.Nil(t, e.Ticket())
	})
	t.Run("cancelled wait", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			chk := lockdeptest.New(t)
			mine, busy := resv.NewObject(chk), resv.NewObject(chk)
			release := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { // someone else holds busy
				assert.NoError(t, busy.Lock(context.Background(), nil))
				<-release
				busy.Unlock()
			})
			synctest.Wait()
			ctx, cancel := context.WithCancel(context.Background())
			e := resv.NewExec(0, chk)
			var err error
			wg.Go(func() {
				err = e.Run(ctx, func(ctx context.Context) error {
					if err := e.Lock(ctx, mine); err != nil {
						return err
					}
					return e.Lock(ctx, busy)
				})
				if err != nil && mine.LockingCtx() != e.Ticket() {
					t.Error("the object locked before the wait is no longer held")
				}
				e.Fini()
			})
			synctest.Wait() // asleep on busy
			cancel()
			synctest.Wait()
			close(release)
			wg.Wait()
			require.ErrorIs(t, err, context.Canceled)
			requireUnlocked(t, mine, busy)
		})
	})
}

// Lock outside Run is refused: before the first Run and after a Run that
// finished (its acquire context is done).
func TestExecLockOutsideRun(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o1, o2 := resv.NewObject(chk), resv.NewObject(chk)
	e := resv.NewExec(0, chk)
	require.ErrorIs(t, e.Lock(ctx, o1), resv.ErrInvalid)
	require.NoError(t, e.Run(ctx, func(ctx context.Context) error { return e.Lock(ctx, o1) }))
	require.ErrorIs(t, e.Lock(ctx, o2), resv.ErrInvalid)
	requireUnlocked(t, o2)
	requireSameSlice(t, []*resv.Object{o1}, e.Objects())
	e.Fini()
	requireUnlocked(t, o1)
}

// A pass in which a lock hit contention is retried even if fn ignores the
// ErrDeadlock and returns nil (drm_exec_cleanup ends the loop only when nothing is
// contended): Run backs off, takes the contended object first, and returns nil
// only once fn has everything locked.
func TestExecRetriesContendedPassWhenFnIgnoresDeadlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		a, b := resv.NewObject(chk), resv.NewObject(chk)
		release := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			older := resv.NewAcquireCtx(resv.ReservationClass, chk) // older than the Exec's ticket
			assert.NoError(t, b.Lock(ctx, older))
			<-release
			b.Unlock()
			assert.NoError(t, older.Fini())
		})
		synctest.Wait() // b is held by the older context
		e := resv.NewExec(0, chk)
		var passes int
		var firstB error
		err := e.Run(ctx, func(ctx context.Context) error {
			passes++
			if err := e.Lock(ctx, a); err != nil {
				return err
			}
			err := e.Lock(ctx, b)
			if passes == 1 {
				firstB = err
				close(release) // b comes free while Run backs off
			}
			return nil // ignores the error
		})
		wg.Wait()
		require.NoError(t, err)
		require.ErrorIs(t, firstB, resv.ErrDeadlock)
		require.Equal(t, 2, passes)
		require.Equal(t, 1, e.Retries())
		require.False(t, e.IsContended())
		requireLockedBy(t, e, a, b)
		requireSameSlice(t, []*resv.Object{b, a}, e.Objects(), "the contended object first")
		e.Fini()
		requireUnlocked(t, a, b)
	})
}
