package resv_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
)

// The scenarios of the kernel's kernel/locking/test-ww_mutex.c, each run for a
// wound-wait class and for a wait-die class as the kernel runs its whole suite
// twice, and then the rest of the ww mutex contract.

// The ww classes of these tests: made once, as the kernel's DEFINE_WW_CLASS and
// DEFINE_WD_CLASS are static.
var (
	testWWClass = resv.NewWWClass("test_ww_class", resv.WoundWait)
	testWDClass = resv.NewWWClass("test_wd_class", resv.WaitDie)
)

// perClass runs fn for the wound-wait class and for the wait-die class.
func perClass(t *testing.T, fn func(t *testing.T, c *resv.WWClass)) {
	for _, c := range []*resv.WWClass{testWWClass, testWDClass} {
		t.Run(c.Algorithm().String(), func(t *testing.T) { fn(t, c) })
	}
}

func newMutexes(c *resv.WWClass, chk *lockdep.Checker, n int) []*resv.WWMutex {
	ms := make([]*resv.WWMutex, n)
	for i := range ms {
		ms[i] = resv.NewWWMutex(c, chk)
	}
	return ms
}

// unlockAll unlocks held, innermost first.
func unlockAll(held []*resv.WWMutex) {
	for i := len(held) - 1; i >= 0; i-- {
		held[i].Unlock()
	}
}

// wwLock takes rest in the acquire context a, which already holds held, with the
// kernel's back-off protocol: on ErrDeadlock unlock everything, LockSlow the
// contended mutex, and take the others again, at most maxBackoffs times (< 0: no
// limit). It returns what a holds at the end: held plus rest on success.
func wwLock(ctx context.Context, a *resv.AcquireCtx, held, rest []*resv.WWMutex, maxBackoffs int) ([]*resv.WWMutex, error) {
	want := append(slices.Clone(held), rest...)
	held = slices.Clone(held)
	for backoffs := 0; ; backoffs++ {
		var err error
		var contended *resv.WWMutex
		for _, m := range rest {
			if err = m.Lock(ctx, a); err != nil {
				contended = m
				break
			}
			held = append(held, m)
		}
		if err == nil {
			return held, nil
		}
		if !errors.Is(err, resv.ErrDeadlock) || backoffs == maxBackoffs {
			return held, err
		}
		unlockAll(held)
		held = held[:0]
		if err := contended.LockSlow(ctx, a); err != nil {
			return held, err
		}
		held = append(held, contended)
		rest = slices.DeleteFunc(slices.Clone(want), func(m *resv.WWMutex) bool { return m == contended })
	}
}

// test_mutex: while the test holds the mutex (with or without an acquire context),
// a worker cannot take it, neither with Lock nor with TryLock. The kernel's three
// flags make 8 combinations: spin (the holder polls for the worker instead of
// sleeping), trylock (the worker spins on TryLock) and ctx. The kernel gives the
// worker a sixteenth of a second; here a synctest bubble tells exactly when a
// blocking worker is asleep in Lock, and a spinning one reports each failed TryLock.
func TestWWMutexMutex(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		for flags := range 8 {
			spin, try, withCtx := flags&1 != 0, flags&2 != 0, flags&4 != 0
			name := fmt.Sprintf("spin=%t,trylock=%t,ctx=%t", spin, try, withCtx)
			t.Run(name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { testMutex(t, c, spin, try, withCtx) })
			})
		}
	})
}

func testMutex(t *testing.T, c *resv.WWClass, spin, try, withCtx bool) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	m := resv.NewWWMutex(c, chk)
	ready, start, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	tried := make(chan struct{}) // a failed TryLock of the worker
	var wg sync.WaitGroup
	wg.Go(func() {
		close(ready)
		<-start
		if try {
			for !m.TryLock(nil) {
				tried <- struct{}{}
			}
		} else if err := m.Lock(ctx, nil); err != nil {
			t.Error(err)
			return
		}
		close(done)
		m.Unlock()
	})
	<-ready
	var a *resv.AcquireCtx
	if withCtx {
		a = resv.NewAcquireCtx(c, chk)
	}
	require.NoError(t, m.Lock(ctx, a))
	close(start)

	// Let the worker try, and check it did not get in. tryFailed waits for a
	// failed TryLock of the worker, blocking or (spin) polling, and reports false
	// if the worker got in instead.
	excluded := true
	tryFailed := func() bool {
		for {
			select {
			case <-tried:
				return true
			case <-done:
				return false
			default:
			}
			if !spin {
				select {
				case <-tried:
					return true
				case <-done:
					return false
				}
			}
			runtime.Gosched()
		}
	}
	if try {
		for range 3 {
			excluded = excluded && tryFailed()
		}
	} else {
		for i := 0; spin && i < 100; i++ {
			select {
			case <-done:
				excluded = false
			default:
				runtime.Gosched()
			}
		}
		synctest.Wait() // the worker is asleep in Lock
	}
	select {
	case <-done:
		excluded = false
	default:
	}
	assert.True(t, excluded, "mutual exclusion failure")

	m.Unlock()
	for waiting := try; waiting; {
		select {
		case <-tried:
		case <-done:
			waiting = false
		}
	}
	wg.Wait()
	if a != nil {
		require.NoError(t, a.Fini())
	}
	require.False(t, m.IsLocked())
}

// test_aa: a mutex held in an acquire context cannot be taken again: TryLock
// without and with the context fails, and Lock in the context returns ErrAlready.
func TestWWMutexAA(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		for _, try := range []bool{false, true} {
			t.Run(map[bool]string{false: "lock", true: "trylock"}[try], func(t *testing.T) {
				ctx := context.Background()
				chk := lockdeptest.New(t)
				m := resv.NewWWMutex(c, chk)
				a := resv.NewAcquireCtx(c, chk)
				if try {
					require.True(t, m.TryLock(a), "initial trylock failed")
				} else {
					require.NoError(t, m.Lock(ctx, a), "initial lock failed")
				}
				require.Same(t, a, m.Owner())
				require.Equal(t, 1, a.Acquired())

				require.False(t, m.TryLock(nil), "trylocked itself without context")
				require.False(t, m.TryLock(a), "trylocked itself with context")
				require.ErrorIs(t, m.Lock(ctx, a), resv.ErrAlready, "missed deadlock for recursing")
				require.Equal(t, 1, a.Acquired(), "a failed lock changes nothing")
				require.Zero(t, a.Retries(), "ErrAlready is not a back-off")

				m.Unlock()
				require.NoError(t, a.Fini())
			})
		}
	})
}

// test_abba: two contexts take A and B in opposite orders. Without resolving, at
// least one of them is told to back off; resolving (unlock, LockSlow, relock), both
// succeed. The kernel's four variants take the first lock with TryLock or Lock.
func TestWWMutexABBA(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		for _, try := range []bool{false, true} {
			for _, resolve := range []bool{false, true} {
				t.Run(fmt.Sprintf("trylock=%t,resolve=%t", try, resolve), func(t *testing.T) {
					testABBA(t, c, try, resolve)
				})
			}
		}
	})
}

func testABBA(t *testing.T, c *resv.WWClass, try, resolve bool) {
	chk := lockdeptest.New(t)
	ma, mb := resv.NewWWMutex(c, chk), resv.NewWWMutex(c, chk)
	aReady, bReady := make(chan struct{}), make(chan struct{})
	var workerErr error
	var wg sync.WaitGroup
	wg.Go(func() { workerErr = abbaSide(t, c, chk, mb, ma, try, resolve, bReady, aReady) })
	err := abbaSide(t, c, chk, ma, mb, try, resolve, aReady, bReady)
	wg.Wait()

	if resolve {
		require.NoError(t, err, "failed to resolve ABBA deadlock (A side)")
		require.NoError(t, workerErr, "failed to resolve ABBA deadlock (B side)")
	} else {
		require.True(t, errors.Is(err, resv.ErrDeadlock) || errors.Is(workerErr, resv.ErrDeadlock),
			"missed ABBA deadlock: A err=%v, B err=%v", err, workerErr)
		for _, e := range []error{err, workerErr} {
			if e != nil {
				require.ErrorIs(t, e, resv.ErrDeadlock)
			}
		}
	}
	require.False(t, ma.IsLocked())
	require.False(t, mb.IsLocked())
}

// abbaSide takes first, waits for the other side to take its first, then takes
// second, resolving an ErrDeadlock if asked. It drops everything before returning.
func abbaSide(t *testing.T, c *resv.WWClass, chk *lockdep.Checker, first, second *resv.WWMutex,
	try, resolve bool, mine, theirs chan struct{}) error {
	ctx := context.Background()
	a := resv.NewAcquireCtx(c, chk)
	var held []*resv.WWMutex
	defer func() {
		unlockAll(held)
		assert.NoError(t, a.Fini())
	}()
	if try {
		if !first.TryLock(a) {
			close(mine)
			return errors.New("trylock of an unlocked mutex failed")
		}
	} else if err := first.Lock(ctx, a); err != nil {
		close(mine)
		return err
	}
	held = append(held, first)
	assert.Same(t, a, first.Owner(), "the holder's Owner is its context")
	close(mine)
	<-theirs

	err := second.Lock(ctx, a)
	if err == nil {
		held = append(held, second)
	}
	if resolve && errors.Is(err, resv.ErrDeadlock) {
		first.Unlock()
		held = nil
		if err = second.LockSlow(ctx, a); err != nil {
			return err
		}
		held = append(held, second)
		if err = first.Lock(ctx, a); err == nil {
			held = append(held, first)
		}
	}
	return err
}

// test_cycle: n goroutines each hold their own mutex and take the next one's, a
// ring; every ErrDeadlock is resolved by backing off, and all succeed.
func TestWWMutexCycle(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		for n := 2; n <= 5; n++ {
			t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
				ctx := context.Background()
				chk := lockdeptest.New(t)
				locks := newMutexes(c, chk, n)
				locked := make([]chan struct{}, n)
				for i := range locked {
					locked[i] = make(chan struct{})
				}
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						a := resv.NewAcquireCtx(c, chk)
						mine, next := locks[i], locks[(i+1)%n]
						if err := mine.Lock(ctx, a); err != nil {
							errs[i] = err
							close(locked[i])
							return
						}
						close(locked[i])
						<-locked[(i+1)%n]
						held, err := wwLock(ctx, a, []*resv.WWMutex{mine}, []*resv.WWMutex{next}, 5)
						errs[i] = err
						unlockAll(held)
						assert.NoError(t, a.Fini())
					})
				}
				wg.Wait()
				for i, err := range errs {
					require.NoError(t, err, "cyclic deadlock not resolved, goroutine %d", i)
				}
				for i, m := range locks {
					require.False(t, m.IsLocked(), "mutex %d", i)
				}
			})
		}
	})
}

// The stress tests of test-ww_mutex.c, bounded by iterations instead of the
// kernel's two seconds: every worker must finish its iterations without an error.
// hangGuard bounds every wait, so that a deadlock fails the test instead of hanging
// it; it is never reached by a correct run.
const hangGuard = 2 * time.Minute

// A stressWork is one kind of stress worker: it runs iters transactions on locks.
type stressWork func(ctx context.Context, c *resv.WWClass, chk *lockdep.Checker,
	locks []*resv.WWMutex, rng *rand.Rand, iters int) error

// stressInorder takes every lock, in a random order fixed for the worker, in a new
// acquire context per transaction, backing off with LockSlow and retaking the rest
// (the kernel's stress_inorder_work).
func stressInorder(ctx context.Context, c *resv.WWClass, chk *lockdep.Checker,
	locks []*resv.WWMutex, rng *rand.Rand, iters int) error {
	order := slices.Clone(locks)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for range iters {
		a := resv.NewAcquireCtx(c, chk)
		held, err := wwLock(ctx, a, nil, order, -1)
		unlockAll(held)
		if ferr := a.Fini(); err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// stressReorder takes every lock in list order; on ErrDeadlock it drops what it
// holds, LockSlows the contended lock, moves it to the front of its list and goes
// on after it (the kernel's stress_reorder_work). It unlocks in list order.
func stressReorder(ctx context.Context, c *resv.WWClass, chk *lockdep.Checker,
	locks []*resv.WWMutex, rng *rand.Rand, iters int) error {
	ll := slices.Clone(locks)
	rng.Shuffle(len(ll), func(i, j int) { ll[i], ll[j] = ll[j], ll[i] })
	for range iters {
		a := resv.NewAcquireCtx(c, chk)
		for i := 0; i < len(ll); i++ {
			err := ll[i].Lock(ctx, a)
			if err == nil {
				continue
			}
			unlockAll(ll[:i])
			if errors.Is(err, resv.ErrDeadlock) {
				err = ll[i].LockSlow(ctx, a)
			}
			if err != nil {
				_ = a.Fini()
				return err
			}
			m := ll[i]
			copy(ll[1:i+1], ll[:i])
			ll[0], i = m, 0
		}
		for _, m := range ll {
			m.Unlock()
		}
		if err := a.Fini(); err != nil {
			return err
		}
	}
	return nil
}

// stressOne locks one lock of the set without an acquire context, again and again
// (the kernel's stress_one_work).
func stressOne(ctx context.Context, _ *resv.WWClass, _ *lockdep.Checker,
	locks []*resv.WWMutex, rng *rand.Rand, iters int) error {
	m := locks[rng.IntN(len(locks))]
	for range iters {
		if err := m.Lock(ctx, nil); err != nil {
			return err
		}
		m.Unlock()
	}
	return nil
}

// stress runs one goroutine per worker on nlocks mutexes of class c.
func stress(t *testing.T, c *resv.WWClass, nlocks int, workers []stressWork, iters []int) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	chk := lockdeptest.New(t)
	locks := newMutexes(c, chk, nlocks)
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, work := range workers {
		wg.Go(func() {
			errs[i] = work(ctx, c, chk, locks, rand.New(rand.NewPCG(uint64(nlocks), uint64(i))), iters[i])
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "stress worker %d", i)
	}
	for i, m := range locks {
		require.False(t, m.IsLocked(), "mutex %d left locked", i)
	}
}

// stressThreads is the kernel's 2*ncpus, kept within 4..8.
func stressThreads() int { return min(8, max(4, 2*runtime.GOMAXPROCS(0))) }

func repeatWork(w stressWork, n, iters int) ([]stressWork, []int) {
	return slices.Repeat([]stressWork{w}, n), slices.Repeat([]int{iters}, n)
}

// stress(INORDER): 16 locks, 2*ncpus workers.
func TestWWMutexStressInorder(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		w, it := repeatWork(stressInorder, stressThreads(), 200)
		stress(t, c, 16, w, it)
	})
}

// stress(REORDER): 16 locks, 2*ncpus workers.
func TestWWMutexStressReorder(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		w, it := repeatWork(stressReorder, stressThreads(), 200)
		stress(t, c, 16, w, it)
	})
}

// stress(ALL): inorder, reorder and context-less single-lock workers together, on
// 256 locks (the kernel's 2046, scaled down for CI); the transactions take every
// lock, so they run fewer iterations.
func TestWWMutexStressAll(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		var workers []stressWork
		var iters []int
		for range 2 {
			workers = append(workers, stressInorder, stressReorder, stressOne)
			iters = append(iters, 20, 20, 300)
		}
		stress(t, c, 256, workers, iters)
	})
}

// A wait that gives up (its context.Context ends) returns ctx.Err() and leaves
// nothing held: the acquire context holds nothing more, and the mutex stays with
// its holder and is lockable once that lets go.
func TestWWMutexLockCancelled(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		for _, deadline := range []bool{false, true} {
			t.Run(map[bool]string{false: "cancel", true: "deadline"}[deadline], func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					chk := lockdeptest.New(t)
					m := resv.NewWWMutex(c, chk)
					require.NoError(t, m.Lock(context.Background(), nil))
					ctx, cancel := context.WithCancel(context.Background())
					want := context.Canceled
					if deadline {
						ctx, cancel = context.WithTimeout(context.Background(), time.Second)
						want = context.DeadlineExceeded
					}
					defer cancel()
					var err error
					var acquired int
					start := time.Now()
					var wg sync.WaitGroup
					wg.Go(func() {
						a := resv.NewAcquireCtx(c, chk)
						err = m.Lock(ctx, a)
						acquired = a.Acquired()
						assert.NoError(t, a.Fini())
					})
					synctest.Wait() // the waiter is asleep in Lock
					if !deadline {
						cancel()
					}
					wg.Wait()
					require.ErrorIs(t, err, want)
					require.Zero(t, acquired, "a wait that gave up holds nothing")
					if deadline {
						require.Equal(t, time.Second, time.Since(start), "gave up at the deadline")
					}
					require.Nil(t, m.Owner())
					m.Unlock()
					require.True(t, m.TryLock(nil), "the mutex is free again")
					m.Unlock()
				})
			})
		}
	})
}

// hookCtx is a context.Context whose Done reports that the waiter has reached its
// wait (entered is closed), then blocks until gate is closed (if gate is not nil):
// so a test can hand the mutex over and cancel while the waiter sits between the
// two, and both are ready when it selects.
type hookCtx struct {
	context.Context
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
	done    chan struct{} // nil: never done
}

func newHookCtx(gated, cancellable bool) *hookCtx {
	h := &hookCtx{Context: context.Background(), entered: make(chan struct{})}
	if gated {
		h.gate = make(chan struct{})
	}
	if cancellable {
		h.done = make(chan struct{})
	}
	return h
}

func (h *hookCtx) Done() <-chan struct{} {
	h.once.Do(func() { close(h.entered) })
	if h.gate != nil {
		<-h.gate
	}
	return h.done
}

func (h *hookCtx) Err() error {
	if h.done == nil {
		return nil
	}
	select {
	case <-h.done:
		return context.Canceled
	default:
		return nil
	}
}

// A cancel that races with the hand-off of the mutex to the waiter: whichever the
// waiter sees, nothing is lost. If it takes the mutex it has it; if it gives up,
// it passes the mutex on to the next waiter, so the lock is not stranded. Each
// round makes both ready at once; the select picks one at random, so over 64
// rounds both outcomes occur (the chance that one never does is 2^-63).
func TestWWMutexCancelRacingHandOff(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		chk := lockdeptest.New(t)
		outcomes := map[bool]int{}
		for range 64 {
			m := resv.NewWWMutex(c, chk)
			require.NoError(t, m.Lock(context.Background(), nil))

			wctx := newHookCtx(true, true)
			var werr error
			var acquired int
			var wg sync.WaitGroup
			wg.Go(func() {
				a := resv.NewAcquireCtx(c, chk)
				werr = m.Lock(wctx, a)
				acquired = a.Acquired()
				if werr == nil {
					m.Unlock()
				}
				assert.NoError(t, a.Fini())
			})
			<-wctx.entered // queued, about to wait

			nctx := newHookCtx(false, false)
			var nerr error
			wg.Go(func() {
				nerr = m.Lock(nctx, nil)
				if nerr == nil {
					m.Unlock()
				}
			})
			<-nctx.entered // queued behind it

			m.Unlock()       // hands the mutex to the first waiter...
			close(wctx.done) // ...which is cancelled at the same time
			close(wctx.gate) // and now sees both
			wg.Wait()

			if werr != nil {
				require.ErrorIs(t, werr, context.Canceled)
				require.Zero(t, acquired, "gave up: holds nothing")
			} else {
				require.Equal(t, 1, acquired, "took the mutex")
			}
			outcomes[werr == nil]++
			require.NoError(t, nerr, "the next waiter gets the mutex either way")
			require.False(t, m.IsLocked())
		}
		t.Logf("hand-off taken %d times, passed on %d times", outcomes[true], outcomes[false])
		require.Positive(t, outcomes[false], "the cancel never won the race")
	})
}

// LockSlow is for after a back-off: with other locks held in the context, or
// without an ErrDeadlock to resolve (ww_mutex_lock_slow's debug check of
// contending_lock), it is refused, and nothing changes.
func TestWWMutexLockSlowWithoutBackOff(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		m1, m2 := resv.NewWWMutex(c, chk), resv.NewWWMutex(c, chk)
		a := resv.NewAcquireCtx(c, chk)
		require.NoError(t, m1.Lock(ctx, a))
		require.ErrorIs(t, m2.LockSlow(ctx, a), resv.ErrInvalid)
		require.False(t, m2.IsLocked())
		require.Equal(t, 1, a.Acquired())
		m1.Unlock()
		require.ErrorIs(t, m2.LockSlow(ctx, a), resv.ErrInvalid, "no ErrDeadlock to resolve")
		require.False(t, m2.IsLocked())
		require.Zero(t, a.Acquired())
		require.NoError(t, m2.Lock(ctx, a), "the context is still usable")
		m2.Unlock()
		require.NoError(t, a.Fini())
	})
}

// After an ErrDeadlock the context's next lock must be the contended mutex, with
// everything else unlocked first (ww_mutex_lock_acquired's DEBUG_WW_MUTEXES
// checks of contending_lock and acquired): locking another mutex, by Lock,
// LockSlow or TryLock, or the contended one with a lock still held, is refused and
// changes nothing. Once the contended mutex is taken the context is free again.
func TestWWMutexAfterDeadlockOnlyContendedMutex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		a, b, other := resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk)
		release := make(chan struct{})
		var wg sync.WaitGroup
		startCtx(t, &wg, testWDClass, chk, func(old *resv.AcquireCtx) {
			assert.NoError(t, b.Lock(ctx, old))
			<-release
			b.Unlock()
		})
		synctest.Wait() // the older context holds b
		young := resv.NewAcquireCtx(testWDClass, chk)
		require.NoError(t, a.Lock(ctx, young))
		require.ErrorIs(t, b.Lock(ctx, young), resv.ErrDeadlock)

		requireRefused := func(msg string) {
			t.Helper()
			held := young.Acquired()
			require.ErrorIs(t, other.Lock(ctx, young), resv.ErrInvalid, msg)
			require.ErrorIs(t, other.LockSlow(ctx, young), resv.ErrInvalid, msg)
			require.False(t, other.TryLock(young), msg)
			require.False(t, other.IsLocked(), msg)
			require.Equal(t, held, young.Acquired(), msg)
		}
		requireRefused("another mutex, a still held")
		require.ErrorIs(t, b.Lock(ctx, young), resv.ErrInvalid, "the contended mutex, a still held")
		require.False(t, b.TryLock(young))
		require.Same(t, young, a.Owner())
		require.NotSame(t, young, b.Owner())
		a.Unlock()
		requireRefused("another mutex, nothing held")

		close(release)
		require.NoError(t, b.LockSlow(ctx, young))
		require.NoError(t, other.Lock(ctx, young), "resolved: any mutex again")
		require.NoError(t, a.Lock(ctx, young))
		unlockAll([]*resv.WWMutex{a, other, b})
		require.NoError(t, young.Fini())
		wg.Wait()
	})
}

// Fini with locks held is refused and leaves the context as it was, still usable;
// a second Fini is refused too.
func TestAcquireCtxFiniWithLocksHeld(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		m1, m2 := resv.NewWWMutex(c, chk), resv.NewWWMutex(c, chk)
		a := resv.NewAcquireCtx(c, chk)
		require.NoError(t, m1.Lock(ctx, a))
		require.ErrorIs(t, a.Fini(), resv.ErrInvalid)
		require.Equal(t, 1, a.Acquired())
		require.Same(t, a, m1.Owner())
		require.NoError(t, m2.Lock(ctx, a), "the context is still usable")
		m2.Unlock()
		m1.Unlock()
		require.NoError(t, a.Fini())
		require.ErrorIs(t, a.Fini(), resv.ErrInvalid, "double Fini")
		require.ErrorIs(t, m1.Lock(ctx, a), resv.ErrInvalid, "Lock after Fini")
		require.False(t, m1.TryLock(a), "TryLock after Fini")
		require.False(t, m1.IsLocked())
	})
}

// A mutex refuses an acquire context of another ww class.
func TestWWMutexLockOtherClass(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	m := resv.NewWWMutex(testWWClass, chk)
	a := resv.NewAcquireCtx(testWDClass, chk)
	require.ErrorIs(t, m.Lock(ctx, a), resv.ErrInvalid)
	require.ErrorIs(t, m.LockSlow(ctx, a), resv.ErrInvalid)
	require.False(t, m.TryLock(a))
	require.False(t, m.IsLocked())
	require.Zero(t, a.Acquired())
	require.NoError(t, a.Fini())
}

// AcquireDone ends the locking phase: later locks in the context are refused.
func TestAcquireCtxLockAfterAcquireDone(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		m1, m2 := resv.NewWWMutex(c, chk), resv.NewWWMutex(c, chk)
		a := resv.NewAcquireCtx(c, chk)
		require.NoError(t, m1.Lock(ctx, a))
		a.AcquireDone()
		require.ErrorIs(t, m2.Lock(ctx, a), resv.ErrInvalid)
		require.False(t, m2.TryLock(a))
		require.False(t, m2.IsLocked())
		m1.Unlock()
		require.NoError(t, a.Fini())
	})
}

// Unlocking an unlocked mutex panics, and lockdep reports the bad unlock first.
func TestWWMutexUnlockUnlockedPanics(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	m := resv.NewWWMutex(testWDClass, chk)
	require.Panics(t, m.Unlock)
	lockdeptest.RequireKinds(t, col, lockdep.KindBadUnlock)
}

// Correct ww usage is clean for lockdep: many mutexes of one class held at once
// under one acquire context, in any order, in transaction after transaction.
func TestWWMutexLockdepManyUnderOneCtx(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		ctx := context.Background()
		chk, col := lockdeptest.Collect(t)
		locks := newMutexes(c, chk, 32)
		rng := rand.New(rand.NewPCG(1, 2))
		for range 3 {
			a := resv.NewAcquireCtx(c, chk)
			order := slices.Clone(locks)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for i, m := range order {
				if i%4 == 3 {
					require.True(t, m.TryLock(a))
				} else {
					require.NoError(t, m.Lock(ctx, a))
				}
			}
			require.Equal(t, len(locks), a.Acquired())
			a.AcquireDone()
			unlockAll(order)
			require.NoError(t, a.Fini())
		}
		lockdeptest.RequireClean(t, col)
	})
}

// Two reservation objects locked without an acquire context by one goroutine:
// nothing orders them, so lockdep reports recursive locking of the class. Locking
// two different objects does not block, so the test only annotates.
func TestWWMutexLockdepCtxlessRecursive(t *testing.T) {
	ctx := context.Background()
	chk, col := lockdeptest.Collect(t)
	o1, o2 := resv.NewObject(chk), resv.NewObject(chk)
	require.NoError(t, o1.Lock(ctx, nil))
	require.NoError(t, o2.Lock(ctx, nil))
	o2.Unlock()
	o1.Unlock()
	lockdeptest.RequireKinds(t, col, lockdep.KindRecursive)
}

// startCtx makes an acquire context in a new goroutine, which then runs fn with it
// and finishes it; it returns once the context exists, so that contexts made
// afterwards are younger.
func startCtx(t *testing.T, wg *sync.WaitGroup, c *resv.WWClass, chk *lockdep.Checker, fn func(a *resv.AcquireCtx)) *resv.AcquireCtx {
	made := make(chan *resv.AcquireCtx)
	wg.Go(func() {
		a := resv.NewAcquireCtx(c, chk)
		made <- a
		fn(a)
		assert.NoError(t, a.Fini())
	})
	return <-made
}

// Wait-die: a younger context that holds a lock and asks for one an older context
// holds dies at once (ErrDeadlock, counted in Retries); an older one waits for a
// younger holder instead.
func TestWaitDie(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		x, y, z := resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk)
		var wg sync.WaitGroup
		release := make(chan struct{})
		var oldErr error
		old := startCtx(t, &wg, testWDClass, chk, func(o *resv.AcquireCtx) {
			assert.NoError(t, x.Lock(ctx, o))
			<-release
			oldErr = y.Lock(ctx, o) // held by the younger context: wait
			if oldErr == nil {
				y.Unlock()
			}
			x.Unlock()
		})
		synctest.Wait()

		young := resv.NewAcquireCtx(testWDClass, chk)
		require.Greater(t, young.Stamp(), old.Stamp())
		require.NoError(t, y.Lock(ctx, young))
		require.NoError(t, z.Lock(ctx, young))
		close(release)
		synctest.Wait() // the older context waits for y
		require.Same(t, young, y.Owner())
		require.Zero(t, old.Retries(), "the older context waits, it does not die")

		require.ErrorIs(t, x.Lock(ctx, young), resv.ErrDeadlock, "the younger context dies")
		require.EqualValues(t, 1, young.Retries())

		// Back off: drop everything, sleep on x, take the rest again.
		unlockAll([]*resv.WWMutex{y, z})
		require.NoError(t, x.LockSlow(ctx, young))
		held, err := wwLock(ctx, young, []*resv.WWMutex{x}, []*resv.WWMutex{y, z}, 0)
		require.NoError(t, err)
		unlockAll(held)
		require.NoError(t, young.Fini())
		wg.Wait()
		require.NoError(t, oldErr)
		require.Zero(t, old.Retries())
		require.EqualValues(t, 1, young.Retries())
	})
}

// Wound-wait: an older context that holds a lock and waits for one a younger
// context holds wounds it; the younger backs off at its next contended lock
// (ErrDeadlock, counted in Retries), while a younger context waiting for an older
// holder just waits.
func TestWoundWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		x, z := resv.NewWWMutex(testWWClass, chk), resv.NewWWMutex(testWWClass, chk)
		var wg sync.WaitGroup
		takeX := make(chan struct{})
		var oldErr error
		old := startCtx(t, &wg, testWWClass, chk, func(o *resv.AcquireCtx) {
			assert.NoError(t, z.Lock(ctx, o))
			<-takeX
			oldErr = x.Lock(ctx, o) // held by the younger context: wound it, wait
			if oldErr == nil {
				x.Unlock()
			}
			z.Unlock()
		})
		synctest.Wait()

		young := resv.NewAcquireCtx(testWWClass, chk)
		require.Greater(t, young.Stamp(), old.Stamp())
		require.NoError(t, x.Lock(ctx, young), "uncontended")
		close(takeX)
		synctest.Wait() // the older context is asleep on x, having wounded us
		require.Same(t, young, x.Owner(), "a wound takes nothing away")

		require.ErrorIs(t, z.Lock(ctx, young), resv.ErrDeadlock, "the wounded context backs off when contended")
		require.EqualValues(t, 1, young.Retries())
		x.Unlock()
		require.NoError(t, z.LockSlow(ctx, young))
		held, err := wwLock(ctx, young, []*resv.WWMutex{z}, []*resv.WWMutex{x}, 0)
		require.NoError(t, err)
		unlockAll(held)
		require.NoError(t, young.Fini())
		wg.Wait()
		require.NoError(t, oldErr)
		require.Zero(t, old.Retries(), "the older context never backs off")
		require.EqualValues(t, 1, young.Retries())
	})
}

// Wound-wait: a younger context waiting for a lock an older context holds is not
// told to back off; it waits, and gets the lock when the older lets go.
func TestWoundWaitYoungerWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		x, z := resv.NewWWMutex(testWWClass, chk), resv.NewWWMutex(testWWClass, chk)
		var wg sync.WaitGroup
		release := make(chan struct{})
		startCtx(t, &wg, testWWClass, chk, func(o *resv.AcquireCtx) {
			assert.NoError(t, z.Lock(ctx, o))
			<-release
			z.Unlock()
		})
		synctest.Wait()
		var youngErr error
		young := startCtx(t, &wg, testWWClass, chk, func(y *resv.AcquireCtx) {
			assert.NoError(t, x.Lock(ctx, y))
			youngErr = z.Lock(ctx, y)
			if youngErr == nil {
				z.Unlock()
			}
			x.Unlock()
		})
		synctest.Wait() // the younger context is asleep on z
		require.True(t, x.IsLocked())
		close(release)
		wg.Wait()
		require.NoError(t, youngErr)
		require.Zero(t, young.Retries())
	})
}

// Wound-wait wounds only for an older context that holds a lock: one that holds
// nothing (a fresh or backed-off transaction) cannot be part of a deadlock, so it
// waits without wounding the younger holder (__ww_mutex_wound checks the waiter's
// acquired count).
func TestWoundWaitNoWoundFromEmptyCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		x, w := resv.NewWWMutex(testWWClass, chk), resv.NewWWMutex(testWWClass, chk)
		var wg sync.WaitGroup
		takeX, yHasX, lockW, tHasW, releaseW := make(chan struct{}), make(chan struct{}),
			make(chan struct{}), make(chan struct{}), make(chan struct{})
		var oldErr, youngErr error
		startCtx(t, &wg, testWWClass, chk, func(o *resv.AcquireCtx) {
			<-takeX
			oldErr = x.Lock(ctx, o) // holds nothing: waits, wounds nobody
			if oldErr == nil {
				x.Unlock()
			}
		})
		young := startCtx(t, &wg, testWWClass, chk, func(y *resv.AcquireCtx) {
			assert.NoError(t, x.Lock(ctx, y))
			close(yHasX)
			<-lockW
			youngErr = w.Lock(ctx, y) // contended: dies only if wounded
			if youngErr == nil {
				w.Unlock()
			}
			x.Unlock()
		})
		wg.Go(func() { // a third party holds w for a while
			assert.NoError(t, w.Lock(ctx, nil))
			close(tHasW)
			<-releaseW
			w.Unlock()
		})
		<-yHasX
		<-tHasW
		close(takeX)
		synctest.Wait() // the older context is asleep on x
		close(lockW)
		synctest.Wait() // the younger context is asleep on w (or was told to back off)
		close(releaseW)
		wg.Wait()
		require.NoError(t, youngErr, "not wounded: waited for w")
		require.Zero(t, young.Retries())
		require.NoError(t, oldErr)
	})
}

// Wait-die: an older context queues ahead of a younger context waiter even when a
// context-less waiter sits between them (__ww_mutex_add_waiter skips waiters
// without a context), and the younger one, now behind an older context waiter,
// dies (__ww_mutex_die wakes it, __ww_mutex_check_kill returns -EDEADLK). The
// context-less waiter keeps its place behind them.
func TestWaitDieOlderPassesCtxlessWaiterAndYoungerDies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		l, m1, m2 := resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk), resv.NewWWMutex(testWDClass, chk)
		var wg sync.WaitGroup
		goO, goY, goC, releaseL := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
		var oldErr, youngErr, cErr error
		var order []string // who got l, in order (appended under l)

		wg.Go(func() { // the holder of l, without a context
			assert.NoError(t, l.Lock(ctx, nil))
			<-releaseL
			l.Unlock()
		})
		side := func(name string, own *resv.WWMutex, start chan struct{}, err *error) func(a *resv.AcquireCtx) {
			return func(a *resv.AcquireCtx) {
				assert.NoError(t, own.Lock(ctx, a))
				<-start
				if *err = l.Lock(ctx, a); *err == nil {
					order = append(order, name)
					l.Unlock()
				}
				own.Unlock()
			}
		}
		old := startCtx(t, &wg, testWDClass, chk, side("old", m2, goO, &oldErr))
		young := startCtx(t, &wg, testWDClass, chk, side("young", m1, goY, &youngErr))
		wg.Go(func() {
			<-goC
			if cErr = l.Lock(ctx, nil); cErr == nil {
				order = append(order, "ctxless")
				l.Unlock()
			}
		})
		synctest.Wait()
		close(goY)
		synctest.Wait() // the younger context waits for l (its holder has no context)
		close(goC)
		synctest.Wait() // the context-less waiter queues behind it
		close(goO)
		synctest.Wait() // the older context queues ahead of both; the younger dies
		assert.Equal(t, int64(1), young.Retries(), "the younger context is behind an older waiter")
		close(releaseL)
		wg.Wait()
		require.ErrorIs(t, youngErr, resv.ErrDeadlock)
		require.NoError(t, cErr)
		require.NoError(t, oldErr)
		require.Zero(t, old.Retries())
		require.Equal(t, []string{"old", "ctxless"}, order)
	})
}
