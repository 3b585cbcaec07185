package fence_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// mockContext returns a fence context like the kernel selftests' mock fences
// ("mock" driver and timeline names), whose annotations go to an isolated lockdep
// checker that fails t on any report.
func mockContext(t testing.TB, opts ...fence.ContextOption) *fence.Context {
	t.Helper()
	return mockContextOn(lockdeptest.New(t), opts...)
}

// mockContextOn is mockContext reporting to chk, for tests that share one checker
// between several contexts or expect reports.
func mockContextOn(chk *lockdep.Checker, opts ...fence.ContextOption) *fence.Context {
	return fence.NewContext("mock", "mock", append([]fence.ContextOption{fence.WithChecker(chk)}, opts...)...)
}

// mockFence returns an unsignalled fence on a context of its own.
func mockFence(t testing.TB) *fence.Fence {
	t.Helper()
	return mockContext(t).Next()
}

// signalAll signals every fence, ignoring those already signalled.
func signalAll(fences ...*fence.Fence) {
	for _, f := range fences {
		_ = f.Signal()
	}
}

// unwrapAll collects what fence.Unwrap yields, in order.
func unwrapAll(f *fence.Fence) []*fence.Fence {
	var out []*fence.Fence
	for leaf := range fence.Unwrap(f) {
		out = append(out, leaf)
	}
	return out
}

func nopCallback(*fence.Fence, *fence.Callback) {}

// expired returns a context that is already past its deadline: a zero timeout.
func expired(t *testing.T) context.Context {
	ctx, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	t.Cleanup(cancel)
	return ctx
}

// onGoroutine runs f on a goroutine of its own and waits for it: lockdep keeps
// held locks per goroutine, so each half of a deadlock scenario runs on its own,
// one after the other, without the deadlock having to happen.
func onGoroutine(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// --- Signal and callbacks -------------------------------------------------------

// TestConcurrentSignalAndAddCallbackRunEachCallbackOnce races AddCallback from
// many goroutines against Signal from several: exactly one Signal succeeds, and
// every callback either was accepted and ran exactly once, or was refused with
// ErrSignaled and never ran.
func TestConcurrentSignalAndAddCallbackRunEachCallbackOnce(t *testing.T) {
	const (
		rounds     = 500
		adders     = 8
		perAdder   = 8
		signallers = 3
		n          = adders * perAdder
	)
	ctx := mockContext(t)
	for round := range rounds {
		f := ctx.Next()
		var (
			cbs        [n]fence.Callback
			runs       [n]atomic.Int32
			accepted   [n]atomic.Bool
			nAccepted  atomic.Int32
			nRefused   atomic.Int32
			nSignalled atomic.Int32
			wrongArgs  atomic.Int32
			start      = make(chan struct{})
			wg         sync.WaitGroup
		)
		for a := range adders {
			wg.Go(func() {
				<-start
				for k := range perAdder {
					i := a*perAdder + k
					err := f.AddCallback(&cbs[i], func(got *fence.Fence, cb *fence.Callback) {
						if got != f || cb != &cbs[i] {
							wrongArgs.Add(1)
						}
						runs[i].Add(1)
					})
					switch {
					case err == nil:
						accepted[i].Store(true)
						nAccepted.Add(1)
					case errors.Is(err, fence.ErrSignaled):
						nRefused.Add(1)
					default:
						t.Errorf("AddCallback: unexpected error %v", err)
					}
				}
			})
		}
		for range signallers {
			wg.Go(func() {
				<-start
				switch err := f.Signal(); {
				case err == nil:
					nSignalled.Add(1)
				case !errors.Is(err, fence.ErrInvalid):
					t.Errorf("Signal: unexpected error %v", err)
				}
			})
		}
		close(start)
		wg.Wait()

		require.EqualValues(t, 1, nSignalled.Load(), "round %d: exactly one Signal succeeds", round)
		require.EqualValues(t, n, nAccepted.Load()+nRefused.Load(), "round %d", round)
		require.Zero(t, wrongArgs.Load(), "callbacks get their fence and their Callback")
		for i := range n {
			want := int32(0)
			if accepted[i].Load() {
				want = 1
			}
			require.Equal(t, want, runs[i].Load(), "round %d: callback %d accepted=%v", round, i, accepted[i].Load())
		}
	}
}

func TestCallbacksRunInTheOrderAdded(t *testing.T) {
	f := mockFence(t)
	var order []int
	cbs := make([]fence.Callback, 6)
	for i := range cbs {
		require.NoError(t, f.AddCallback(&cbs[i], func(*fence.Fence, *fence.Callback) { order = append(order, i) }))
	}
	require.True(t, f.RemoveCallback(&cbs[2]))
	require.NoError(t, f.Signal())
	require.Equal(t, []int{0, 1, 3, 4, 5}, order)
}

// TestWaitersAreWokenBeforeCallbacksRun: the kernel queues its sleeping waiters at
// the head of the callback list; here the waiters' channel is closed before the
// first callback runs.
func TestWaitersAreWokenBeforeCallbacksRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := mockFence(t)
		waiterDone := make(chan error, 1)
		go func() { waiterDone <- f.Wait(t.Context()) }()
		synctest.Wait() // the waiter sleeps on the fence

		done := f.Done()
		var closedFirst bool
		var cb fence.Callback
		require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) {
			select {
			case <-done:
				closedFirst = true
			default:
			}
		}))
		require.NoError(t, f.Signal())
		require.True(t, closedFirst, "the waiters' channel must be closed before callbacks run")
		require.NoError(t, <-waiterDone)
	})
}

// TestCallbackMaySignalAndAddCallbacksToOtherFences: a callback signals a second
// fence (running its callbacks, nested, in the same goroutine) and adds a
// callback, reusing its own Callback, to a third; nothing deadlocks.
func TestCallbackMaySignalAndAddCallbacksToOtherFences(t *testing.T) {
	ctx := mockContext(t)
	f1, f2, f3 := ctx.Next(), ctx.Next(), ctx.Next()
	var ran []string
	var cb1, cb2 fence.Callback
	require.NoError(t, f2.AddCallback(&cb2, func(*fence.Fence, *fence.Callback) { ran = append(ran, "f2") }))
	require.NoError(t, f1.AddCallback(&cb1, func(f *fence.Fence, cb *fence.Callback) {
		ran = append(ran, "f1")
		assert.NoError(t, f2.Signal())
		// cb has run and may be reused: queue it on f3.
		assert.NoError(t, f3.AddCallback(cb, func(*fence.Fence, *fence.Callback) { ran = append(ran, "f3") }))
		var late fence.Callback
		assert.ErrorIs(t, f1.AddCallback(&late, nopCallback), fence.ErrSignaled, "f1 is signalled while its callbacks run")
	}))

	require.NoError(t, f1.Signal())
	require.Equal(t, []string{"f1", "f2"}, ran)
	require.True(t, f2.IsSignaled())
	require.False(t, f3.IsSignaled())

	require.NoError(t, f3.Signal())
	require.Equal(t, []string{"f1", "f2", "f3"}, ran)
}

func TestAddCallbackRejectsInvalidArguments(t *testing.T) {
	f := mockFence(t)
	var cb fence.Callback
	require.ErrorIs(t, f.AddCallback(nil, nopCallback), fence.ErrInvalid)
	require.ErrorIs(t, f.AddCallback(&cb, nil), fence.ErrInvalid)
	var nilFence *fence.Fence
	require.ErrorIs(t, nilFence.AddCallback(&cb, nopCallback), fence.ErrInvalid)
	require.ErrorIs(t, nilFence.Signal(), fence.ErrInvalid)

	runs := 0
	require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { runs++ }))
	err := f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { runs += 100 })
	require.ErrorIs(t, err, fence.ErrInvalid, "a Callback queued once cannot be queued again")
	require.NotErrorIs(t, err, fence.ErrSignaled)
	require.False(t, f.RemoveCallback(nil))

	require.NoError(t, f.Signal())
	require.Equal(t, 1, runs, "the first registration runs, once")
}

func TestRemoveCallbackFromAnotherFenceReturnsFalse(t *testing.T) {
	ctx := mockContext(t)
	f1, f2 := ctx.Next(), ctx.Next()
	var cb fence.Callback
	ran := false
	require.NoError(t, f1.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { ran = true }))
	require.False(t, f2.RemoveCallback(&cb), "cb is queued on f1, not f2")
	require.NoError(t, f1.Signal())
	require.True(t, ran)
	require.NoError(t, f2.Signal())
}

// --- Errors and status ----------------------------------------------------------

func TestSignalTwiceReturnsErrInvalidAndRunsNothing(t *testing.T) {
	f := mockFence(t)
	runs := 0
	var cb fence.Callback
	require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { runs++ }))
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	require.NoError(t, f.SignalTimestamp(ts))

	require.ErrorIs(t, f.Signal(), fence.ErrInvalid)
	require.ErrorIs(t, f.SignalTimestamp(ts.Add(time.Hour)), fence.ErrInvalid)
	require.Equal(t, 1, runs, "callbacks are not re-run")
	got, ok := f.Timestamp()
	require.True(t, ok)
	require.True(t, ts.Equal(got), "the timestamp of the first signal stays")
}

func TestSetErrorAfterSignalIsRejectedAndLeavesTheError(t *testing.T) {
	errFirst, errLate := errorString("first"), errorString("late")
	f := mockFence(t)
	require.NoError(t, f.SetError(errFirst))
	require.NoError(t, f.Signal())

	err := f.SetError(errLate)
	require.ErrorIs(t, err, fence.ErrInvalid)
	require.Equal(t, errFirst, f.Error())
	_, status := f.Status()
	require.Equal(t, errFirst, status)

	g := mockFence(t)
	require.NoError(t, g.Signal())
	require.ErrorIs(t, g.SetError(errLate), fence.ErrInvalid)
	require.NoError(t, g.Error(), "a fence that signalled without an error keeps none")
}

func TestSetErrorNilIsRejected(t *testing.T) {
	errSet := errorString("set")
	f := mockFence(t)
	require.ErrorIs(t, f.SetError(nil), fence.ErrInvalid)
	require.NoError(t, f.SetError(errSet))
	require.ErrorIs(t, f.SetError(nil), fence.ErrInvalid)
	require.NoError(t, f.Signal())
	require.Equal(t, errSet, f.Error(), "SetError(nil) changed nothing")
}

func TestSetErrorLastOneBeforeSignalWins(t *testing.T) {
	f := mockFence(t)
	require.NoError(t, f.SetError(errorString("one")))
	require.NoError(t, f.SetError(errorString("two")))
	require.NoError(t, f.Signal())
	require.Equal(t, errorString("two"), f.Error())
}

func TestTimestampIsSetBySignal(t *testing.T) {
	f := mockFence(t)
	_, ok := f.Timestamp()
	require.False(t, ok)
	ts := time.Date(2030, 5, 6, 7, 8, 9, 10, time.UTC)
	require.NoError(t, f.SignalTimestamp(ts))
	got, ok := f.Timestamp()
	require.True(t, ok)
	require.True(t, ts.Equal(got))
}

// A reused Callback runs the function of its latest AddCallback, whether that is
// the same function again or another one.
func TestReusedCallbackRunsItsLatestFunction(t *testing.T) {
	ctx := mockContext(t)
	var cb fence.Callback
	var got []string
	a := func(*fence.Fence, *fence.Callback) { got = append(got, "a") }
	b := func(*fence.Fence, *fence.Callback) { got = append(got, "b") }
	for _, fn := range []fence.CallbackFunc{a, a, b, a, b, b} {
		f := ctx.Next()
		require.NoError(t, f.AddCallback(&cb, fn))
		require.NoError(t, f.Signal())
	}
	require.Equal(t, []string{"a", "a", "b", "a", "b", "b"}, got)
}

// A fence is 80 bytes, a size class below a channel's: growing it makes every
// fence (and every job, which embeds two) a larger allocation. A change that needs
// more room should say so here.
func TestFenceSize(t *testing.T) {
	want := uintptr(80)
	if unsafe.Sizeof(uintptr(0)) == 4 {
		want = 52 // pointers, interfaces and channels are half the size
	}
	require.Equal(t, want, unsafe.Sizeof(fence.Fence{}))
}

// Signal reads the clock only on a context made WithTimestamps; elsewhere a fence
// has a timestamp only if SignalTimestamp gave it one.
func TestSignalRecordsATimestampOnlyWithTimestamps(t *testing.T) {
	chk := lockdeptest.New(t)
	plain := fence.NewContext("drv", "plain", fence.WithChecker(chk)).Next()
	require.NoError(t, plain.Signal())
	_, ok := plain.Timestamp()
	require.False(t, ok, "no clock read without WithTimestamps")

	stamped := fence.NewContext("drv", "stamped", fence.WithChecker(chk), fence.WithTimestamps()).Next()
	before := time.Now()
	require.NoError(t, stamped.Signal())
	after := time.Now()
	got, ok := stamped.Timestamp()
	require.True(t, ok)
	require.False(t, got.Before(before) || got.After(after), "timestamp %v outside [%v, %v]", got, before, after)
}

// Init makes an embedded zero Fence a fence of the context, once.
func TestInitEmbeddedFence(t *testing.T) {
	ctx := fence.NewContext("drv", "embedded", fence.WithChecker(lockdeptest.New(t)))
	var job struct {
		id       int
		finished fence.Fence
	}
	require.NoError(t, ctx.Init(&job.finished, 7))
	require.Equal(t, uint64(7), job.finished.Seqno())
	require.Same(t, ctx, job.finished.Context())
	require.False(t, job.finished.IsSignaled())

	require.ErrorIs(t, ctx.Init(&job.finished, 8), fence.ErrInvalid)
	require.Equal(t, uint64(7), job.finished.Seqno(), "a second Init changed nothing")
	require.ErrorIs(t, ctx.Init(nil, 1), fence.ErrInvalid)

	var cb fence.Callback
	ran := false
	require.NoError(t, job.finished.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { ran = true }))
	require.NoError(t, job.finished.Signal())
	require.True(t, ran)
}

func TestDescribe(t *testing.T) {
	ctx := fence.NewContext("mydrv", "gfx-ring", fence.WithChecker(lockdeptest.New(t)))
	f := ctx.New(42)
	require.Equal(t, "mydrv gfx-ring seq 42 unsignalled", f.Describe())
	require.Equal(t, f.Describe(), f.String())
	require.NoError(t, f.Signal())
	require.Equal(t, "mydrv gfx-ring seq 42 signalled", f.Describe())

	g := ctx.Next()
	c := fence.NewChain(nil, g, 7)
	require.Equal(t, "dma_fence_chain unbound seq 7 unsignalled", c.Describe())
	a := fence.NewArray([]*fence.Fence{g}, fence.AllocContexts(1), 3, false)
	require.Equal(t, "dma_fence_array unbound seq 3 unsignalled", a.Describe())
	require.Equal(t, "stub stub seq 0 signalled", fence.Stub().Describe())
	require.NoError(t, g.Signal())
}

func TestContextNamesAndIDs(t *testing.T) {
	c1 := fence.NewContext("drv", "ring0")
	c2 := fence.NewContext("drv", "ring1")
	require.NotZero(t, c1.ID(), "context 0 belongs to the stubs")
	require.Greater(t, c2.ID(), c1.ID())
	require.Equal(t, "drv", c1.Driver())
	require.Equal(t, "ring1", c2.Timeline())
	require.Same(t, lockdep.Default, c1.Checker(), "without WithChecker, annotations go to lockdep.Default")

	first := fence.AllocContexts(4)
	require.GreaterOrEqual(t, fence.AllocContexts(1), first+4, "a block of 4 ids is reserved")

	require.EqualValues(t, 1, c1.Next().Seqno())
	require.EqualValues(t, 2, c1.Next().Seqno())
	require.Same(t, c1, c1.New(9).Context())
}

// --- Waiting --------------------------------------------------------------------

// TestWaitThatGivesUpChangesNothing: a Wait that returns ctx.Err() leaves no trace,
// so dropping the last reference afterwards is not a release with pending waiters
// (no report, no forced ErrDeadlock signal).
func TestWaitThatGivesUpChangesNothing(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	f := mockContextOn(chk).Next()
	require.ErrorIs(t, f.Wait(expired(t)), context.DeadlineExceeded)
	_, err := fence.WaitAny(expired(t), f)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	f.Put()
	require.False(t, f.IsSignaled(), "nobody waits: Put leaves the fence alone")
	lockdeptest.RequireClean(t, col)
}

func TestWaitTimesOutOnVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := mockFence(t)
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		require.ErrorIs(t, f.Wait(ctx), context.DeadlineExceeded)
		require.Equal(t, time.Minute, time.Since(start))

		cctx, ccancel := context.WithCancel(t.Context())
		time.AfterFunc(time.Second, ccancel)
		require.ErrorIs(t, f.Wait(cctx), context.Canceled, "interruption is cancellation")

		time.AfterFunc(time.Second, func() { _ = f.Signal() })
		require.NoError(t, f.Wait(t.Context()))
	})
}

func TestWaitReturnsNilForAFenceSignalledWithAnError(t *testing.T) {
	f := mockFence(t)
	errHang := errorString("hang")
	require.NoError(t, f.SetError(errHang))
	require.NoError(t, f.Signal())
	require.NoError(t, f.Wait(t.Context()))
	require.Equal(t, errHang, f.Error())
}

func TestDoneIsMadeLazilyAndClosedOnSignal(t *testing.T) {
	var enables atomic.Int32
	ctx := mockContext(t, fence.WithOps(&fence.Ops{EnableSignaling: func(*fence.Fence) bool {
		enables.Add(1)
		return true
	}}))
	f := ctx.Next()
	require.Zero(t, enables.Load(), "nothing happens until someone asks")

	d1 := f.Done()
	require.EqualValues(t, 1, enables.Load(), "Done enables signalling")
	require.Equal(t, d1, f.Done(), "one channel per fence")
	select {
	case <-d1:
		t.Fatal("Done closed before Signal")
	default:
	}
	require.NoError(t, f.Signal())
	select {
	case <-d1:
	default:
		t.Fatal("Done not closed by Signal")
	}
	select {
	case <-mockFence(t).Done():
		t.Fatal("another fence's channel is closed")
	case <-f.Done():
	}
	require.EqualValues(t, 1, enables.Load())
}

func TestDoneInSelect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := mockContext(t)
		slow, fast := ctx.Next(), ctx.Next()
		time.AfterFunc(2*time.Second, func() { _ = slow.Signal() })
		time.AfterFunc(time.Second, func() { _ = fast.Signal() })
		start := time.Now()
		select {
		case <-slow.Done():
			t.Fatal("slow fence first")
		case <-fast.Done():
		}
		require.Equal(t, time.Second, time.Since(start))
		<-slow.Done()
		require.Equal(t, 2*time.Second, time.Since(start))
	})
}

// --- WaitAny --------------------------------------------------------------------

func TestWaitAnyReturnsLowestSignalledIndex(t *testing.T) {
	ctx := mockContext(t)
	fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next(), ctx.Next()}
	require.NoError(t, fs[3].Signal())
	require.NoError(t, fs[1].Signal())

	i, err := fence.WaitAny(t.Context(), fs...)
	require.NoError(t, err)
	require.Equal(t, 1, i)

	i, err = fence.WaitAny(expired(t), fs...)
	require.NoError(t, err, "a zero timeout with a signalled fence succeeds")
	require.Equal(t, 1, i)
	signalAll(fs...)
}

func TestWaitAnyWakesOnTheFirstSignal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := mockContext(t)
		fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
		type result struct {
			i   int
			err error
		}
		res := make(chan result, 1)
		go func() {
			i, err := fence.WaitAny(t.Context(), fs...)
			res <- result{i, err}
		}()
		synctest.Wait()
		require.NoError(t, fs[2].Signal())
		r := <-res
		require.NoError(t, r.err)
		require.Equal(t, 2, r.i)

		// Its callbacks are gone: dropping the pending fences reports nothing
		// (the checker fails the test on a leak report).
		fs[0].Put()
		fs[1].Put()
		require.False(t, fs[0].IsSignaled())
	})
}

// TestWaitAnyCancelRemovesItsCallbacks: a cancelled WaitAny returns ctx.Err() and
// leaves no callback behind: a later Signal runs none, the last Put reports no
// pending callback, and no goroutine is left (goleak).
func TestWaitAnyCancelRemovesItsCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk, col := lockdeptest.Collect(t)
		ctx := mockContextOn(chk)
		fs := []*fence.Fence{ctx.Next(), ctx.Next()}

		wctx, cancel := context.WithCancel(t.Context())
		type result struct {
			i   int
			err error
		}
		res := make(chan result, 1)
		go func() {
			i, err := fence.WaitAny(wctx, fs...)
			res <- result{i, err}
		}()
		synctest.Wait()
		cancel()
		r := <-res
		require.ErrorIs(t, r.err, context.Canceled)
		require.Equal(t, -1, r.i)

		fs[0].Put()
		require.False(t, fs[0].IsSignaled(), "no callback was pending, so Put did not force-signal")
		require.NoError(t, fs[1].Signal())
		lockdeptest.RequireClean(t, col)
	})
}

func TestWaitAnyTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := mockContext(t)
		wctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		i, err := fence.WaitAny(wctx, ctx.Next(), ctx.Next())
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, -1, i)
		require.Equal(t, 3*time.Second, time.Since(start))
	})
}

func TestWaitAnyRejectsNoFencesAndNil(t *testing.T) {
	_, err := fence.WaitAny(t.Context())
	require.ErrorIs(t, err, fence.ErrInvalid)
	_, err = fence.WaitAny(t.Context(), mockFence(t), nil)
	require.ErrorIs(t, err, fence.ErrInvalid)
}

// --- Seqno ordering -------------------------------------------------------------

func TestIsLaterWrapsAt32Bits(t *testing.T) {
	ctx := mockContext(t)
	max32, one := ctx.New(0xffffffff), ctx.New(1)
	require.True(t, fence.IsLater(one, max32), "1 is later than 0xffffffff on a 32-bit context")
	require.False(t, fence.IsLater(max32, one))
	require.False(t, fence.IsLater(one, one))
	require.True(t, fence.IsLaterOrSame(one, one))
	require.True(t, fence.IsLaterOrSame(one, max32))
	require.False(t, fence.IsLaterOrSame(max32, one))

	// Only the low 32 bits count.
	high := ctx.New(0x1_0000_0001)
	require.False(t, fence.IsLater(high, one))
	require.False(t, fence.IsLater(one, high))

	require.Same(t, one, fence.Later(max32, one))
	require.Same(t, one, fence.Later(one, max32))
	require.NoError(t, one.Signal())
	require.Nil(t, fence.Later(max32, one), "the later fence has signalled")
}

func TestIsLaterSeqno64ComparesPlainNumbers(t *testing.T) {
	ctx := mockContext(t, fence.Seqno64())
	max32, one, big := ctx.New(0xffffffff), ctx.New(1), ctx.New(0x1_0000_0001)
	require.True(t, fence.IsLater(max32, one))
	require.False(t, fence.IsLater(one, max32))
	require.True(t, fence.IsLater(big, max32))
	require.Same(t, big, fence.Later(one, big))
}

func TestFencesOnDifferentContextsAreUnordered(t *testing.T) {
	a, b := mockContext(t).New(2), mockContext(t).New(1)
	require.False(t, fence.IsLater(a, b))
	require.False(t, fence.IsLater(b, a))
	require.False(t, fence.IsLaterOrSame(a, b))
	require.Nil(t, fence.Later(a, b))
	require.False(t, fence.IsLater(fence.Stub(), a))
}

// --- Ops hooks ------------------------------------------------------------------

func TestEnableSignalingHookIsCalledOnce(t *testing.T) {
	var enables atomic.Int32
	ctx := mockContext(t, fence.WithOps(&fence.Ops{EnableSignaling: func(*fence.Fence) bool {
		enables.Add(1)
		return true
	}}))
	f := ctx.Next()
	require.False(t, f.IsSignaled())
	require.Zero(t, enables.Load(), "IsSignaled never enables signalling")

	const goroutines = 8
	cbs := make([]fence.Callback, goroutines*4)
	expiredCtx := expired(t)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for k := range 4 {
				assert.NoError(t, f.AddCallback(&cbs[g*4+k], nopCallback))
			}
			f.EnableSignaling()
			assert.ErrorIs(t, f.Wait(expiredCtx), context.DeadlineExceeded)
			_ = f.Done()
		})
	}
	wg.Wait()
	require.EqualValues(t, 1, enables.Load())
	require.NoError(t, f.Signal())
	f.EnableSignaling()
	require.EqualValues(t, 1, enables.Load())
}

// TestEnableSignalingHookFalseSignalsAtOnce: the hook answering "already
// complete" signals the fence, so the callback being added is refused.
func TestEnableSignalingHookFalseSignalsAtOnce(t *testing.T) {
	ctx := mockContext(t, fence.WithOps(&fence.Ops{EnableSignaling: func(*fence.Fence) bool { return false }}))

	f := ctx.Next()
	require.False(t, f.IsSignaled())
	var cb fence.Callback
	ran := false
	require.ErrorIs(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { ran = true }), fence.ErrSignaled)
	require.True(t, f.IsSignaled())
	require.False(t, ran)

	g := ctx.Next()
	require.NoError(t, g.Wait(t.Context()), "Wait enables signalling, which completes at once")

	h := ctx.Next()
	h.EnableSignaling()
	require.True(t, h.IsSignaled())
	<-ctx.Next().Done()
}

func TestSignaledHookIsPolledByIsSignaled(t *testing.T) {
	var done atomic.Bool
	var polls atomic.Int32
	errHW := errorString("hw error")
	ctx := mockContext(t, fence.WithOps(&fence.Ops{Signaled: func(f *fence.Fence) bool {
		polls.Add(1)
		if !done.Load() {
			return false
		}
		// The hook may set the error when it reports completion (it runs
		// without the fence's lock).
		_ = f.SetError(errHW)
		return true
	}}))
	f := ctx.Next()
	ran := false
	var cb fence.Callback
	require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { ran = true }))

	require.False(t, f.IsSignaled())
	require.NotZero(t, polls.Load())
	done.Store(true)
	require.True(t, f.IsSignaled())
	require.True(t, ran, "IsSignaled signalled the fence, running its callbacks")
	signaled, err := f.Status()
	require.True(t, signaled)
	require.Equal(t, errHW, err)
	require.ErrorIs(t, f.Signal(), fence.ErrInvalid)

	n := polls.Load()
	require.True(t, f.IsSignaled())
	require.Equal(t, n, polls.Load(), "a signalled fence is not polled")

	g := ctx.Next()
	require.NoError(t, g.Wait(expired(t)), "Wait polls first: a completed fence needs no sleep")
	require.True(t, g.IsSignaled())
}

func TestSetDeadlineIsForwardedOnlyWhilePending(t *testing.T) {
	var deadlines []time.Time
	ctx := mockContext(t, fence.WithOps(&fence.Ops{SetDeadline: func(_ *fence.Fence, d time.Time) {
		deadlines = append(deadlines, d)
	}}))
	f := ctx.Next()
	d1, d2 := time.Unix(100, 0), time.Unix(50, 0)
	f.SetDeadline(d1)
	f.SetDeadline(d2)
	require.NoError(t, f.Signal())
	f.SetDeadline(time.Unix(10, 0))
	require.Equal(t, []time.Time{d1, d2}, deadlines)

	// No hook: nothing to do.
	g := mockFence(t)
	g.SetDeadline(d1)
}

func TestReleaseRunsOnTheLastPut(t *testing.T) {
	var released []*fence.Fence
	ctx := mockContext(t, fence.WithOps(&fence.Ops{Release: func(f *fence.Fence) { released = append(released, f) }}))
	f := ctx.Next()
	require.Same(t, f, f.Get())
	f.Put()
	require.Empty(t, released)
	f.Put()
	require.Equal(t, []*fence.Fence{f}, released)
	require.False(t, f.IsSignaled(), "a fence nobody waits on is released as it is")
}

// --- Release with pending callbacks and GC leaks ---------------------------------

// TestPutLastRefWithPendingCallbackSignalsErrDeadlock is dma_fence_release()'s
// "released with pending signals": the fence is reported, given -EDEADLK and
// signalled, so its callback still runs.
func TestPutLastRefWithPendingCallbackSignalsErrDeadlock(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	var released atomic.Int32
	f := mockContextOn(chk, fence.WithOps(&fence.Ops{Release: func(*fence.Fence) { released.Add(1) }})).Next()
	var cb fence.Callback
	var cbErr error
	ran := 0
	require.NoError(t, f.AddCallback(&cb, func(f *fence.Fence, _ *fence.Callback) {
		ran++
		cbErr = f.Error()
	}))

	f.Put()
	require.True(t, f.IsSignaled())
	require.ErrorIs(t, f.Error(), fence.ErrDeadlock)
	require.Equal(t, 1, ran)
	require.ErrorIs(t, cbErr, fence.ErrDeadlock, "the callback sees the error")
	require.EqualValues(t, 1, released.Load())
	lockdeptest.RequireKinds(t, col, lockdep.KindFenceLeak)
	require.Contains(t, col.Reports()[0].String(), "mock mock seq 1")
}

func TestPutLastRefWithBlockedWaiterWakesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk, col := lockdeptest.Collect(t)
		f := mockContextOn(chk).Next()
		done := make(chan error, 1)
		go func() { done <- f.Wait(t.Context()) }()
		synctest.Wait()

		f.Put()
		require.NoError(t, <-done)
		require.ErrorIs(t, f.Error(), fence.ErrDeadlock)
		lockdeptest.RequireKinds(t, col, lockdep.KindFenceLeak)
	})
}

// gcAndRunCleanups collects garbage and waits until the cleanups queued by it have
// had a chance to run: a sentinel's cleanup, queued in the same cycle, signals.
func gcAndRunCleanups(t *testing.T) {
	t.Helper()
	ran := make(chan struct{})
	sentinel := new([64]byte)
	runtime.AddCleanup(sentinel, func(ch chan struct{}) { close(ch) }, ran)
	sentinel = nil
	runtime.GC()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the garbage collector ran no cleanup in 10s")
	}
	runtime.Gosched()
}

// abandonPendingFence makes a fence with a queued callback and forgets both.
//
//go:noinline
func abandonPendingFence(ctx *fence.Context) {
	f := ctx.Next()
	cb := new(fence.Callback)
	if err := f.AddCallback(cb, nopCallback); err != nil {
		panic(err)
	}
}

// abandonQuietFences forgets fences that leave nothing hanging: one signalled
// after its callback ran, one enabled that nobody waits on, and one whose only
// waiter gave up.
//
//go:noinline
func abandonQuietFences(ctx *fence.Context, expired context.Context) {
	f := ctx.Next()
	cb := new(fence.Callback)
	if err := f.AddCallback(cb, nopCallback); err != nil {
		panic(err)
	}
	if err := f.Signal(); err != nil {
		panic(err)
	}
	ctx.Next().EnableSignaling()
	if err := ctx.Next().Wait(expired); err == nil {
		panic("Wait with an expired context succeeded on a pending fence")
	}
}

func TestLeakCheckReportsAnUnreachablePendingFence(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	ctx := mockContextOn(chk, fence.LeakCheck())
	abandonPendingFence(ctx)

	for i := 0; i < 20 && len(col.Kinds()) == 0; i++ {
		gcAndRunCleanups(t)
	}
	lockdeptest.RequireKinds(t, col, lockdep.KindFenceLeak)
	require.Contains(t, col.Reports()[0].String(), "garbage collected unsignalled")
}

// abandonFenceKeepingDone forgets a fence but keeps the channel Done handed out: a
// select on it would never return.
//
//go:noinline
func abandonFenceKeepingDone(ctx *fence.Context) <-chan struct{} {
	return ctx.Next().Done()
}

func TestLeakCheckCountsADoneChannelAsAWaiter(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	ctx := mockContextOn(chk, fence.LeakCheck())
	done := abandonFenceKeepingDone(ctx)

	for i := 0; i < 20 && len(col.Kinds()) == 0; i++ {
		gcAndRunCleanups(t)
	}
	lockdeptest.RequireKinds(t, col, lockdep.KindFenceLeak)
	select {
	case <-done:
		t.Fatal("nobody signalled the fence")
	default:
	}
}

func TestLeakCheckIsQuietForFencesNobodyWaitsOn(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	ctx := mockContextOn(chk, fence.LeakCheck())
	abandonQuietFences(ctx, expired(t))
	for range 3 {
		gcAndRunCleanups(t)
	}
	lockdeptest.RequireClean(t, col)
}

// --- Long-running fences --------------------------------------------------------

func TestLongRunningAddCallbackNeedsUnbounded(t *testing.T) {
	ctx := mockContext(t, fence.LongRunning())
	f := ctx.Next()
	require.True(t, f.IsLongRunning())
	require.False(t, mockFence(t).IsLongRunning())

	var cb fence.Callback
	ran := 0
	require.ErrorIs(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { ran++ }), fence.ErrLongRunning)
	require.NoError(t, f.AddCallbackUnbounded(&cb, func(*fence.Fence, *fence.Callback) { ran++ }))
	require.NoError(t, f.Signal())
	require.Equal(t, 1, ran)

	var late fence.Callback
	require.ErrorIs(t, f.AddCallbackUnbounded(&late, nopCallback), fence.ErrSignaled)
}

// TestWaitUnderMMLock: waiting on a long-running fence while holding a
// memory-management lock is reported (eviction may need the lock, the LR fence
// promises nothing); waiting on a dma fence there is allowed, as dma_fence_wait
// under dma_resv_lock is.
func TestWaitUnderMMLock(t *testing.T) {
	mmClass := lockdep.NewClass("x", lockdep.MM)
	plainClass := lockdep.NewClass("y")
	for _, tc := range []struct {
		name        string
		longRunning bool
		class       *lockdep.Class
		waitAny     bool
		want        []lockdep.Kind
	}{
		{"LR fence under MM lock", true, mmClass, false, []lockdep.Kind{lockdep.KindLRWaitUnderMM}},
		{"LR fence under MM lock via WaitAny", true, mmClass, true, []lockdep.Kind{lockdep.KindLRWaitUnderMM}},
		{"LR fence under plain lock", true, plainClass, false, nil},
		{"LR fence without locks", true, nil, false, nil},
		{"dma fence under MM lock", false, mmClass, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chk, col := lockdeptest.Collect(t)
			var opts []fence.ContextOption
			if tc.longRunning {
				opts = append(opts, fence.LongRunning())
			}
			f := mockContextOn(chk, opts...).Next()
			require.NoError(t, f.Signal())

			var mu *lockdep.Mutex
			if tc.class != nil {
				mu = &lockdep.Mutex{Class: tc.class, Checker: chk}
				mu.Lock()
			}
			if tc.waitAny {
				_, err := fence.WaitAny(t.Context(), f)
				require.NoError(t, err)
			} else {
				require.NoError(t, f.Wait(t.Context()))
			}
			if mu != nil {
				mu.Unlock()
			}
			lockdeptest.RequireKinds(t, col, tc.want...)
		})
	}
}

// --- Lockdep annotations of Signal and Wait -------------------------------------

// TestWaitIsAnnotatedForSignallingDeadlocks: a lock taken inside a signalling
// section and held elsewhere around a fence wait closes a cycle through
// dma_fence_map. Wait must have annotated the wait for lockdep to see it, in
// whichever order the two halves happen; Signal's own section counts as one.
func TestWaitIsAnnotatedForSignallingDeadlocks(t *testing.T) {
	for _, tc := range []struct {
		name          string
		first, second string // the halves, run in this order
	}{
		{"section takes the lock, then a waiter holds it", "section", "wait"},
		{"a waiter holds the lock, then a section takes it", "wait", "section"},
		{"a callback run by Signal takes the lock, then a waiter holds it", "callback", "wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chk, col := lockdeptest.Collect(t)
			mu := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: chk}
			shared := 0 // what mu guards
			f := mockContextOn(chk).Next()
			require.NoError(t, f.Signal()) // the wait returns at once; its annotation is what counts

			halves := map[string]func(){
				"section": func() {
					ck := chk.BeginSignalling()
					mu.Lock()
					shared++
					mu.Unlock()
					chk.EndSignalling(ck)
				},
				"callback": func() {
					g := mockContextOn(chk).Next()
					var cb fence.Callback
					assert.NoError(t, g.AddCallback(&cb, func(*fence.Fence, *fence.Callback) {
						mu.Lock()
						shared++
						mu.Unlock()
					}))
					assert.NoError(t, g.Signal())
				},
				"wait": func() {
					mu.Lock()
					assert.NoError(t, f.Wait(t.Context()))
					shared++
					mu.Unlock()
				},
			}
			onGoroutine(halves[tc.first])
			onGoroutine(halves[tc.second])
			require.Equal(t, 2, shared)
			lockdeptest.RequireKinds(t, col, lockdep.KindSignallingDeadlock)
		})
	}
}

// TestWaitInsideASignallingSectionIsNotReported: like the kernel, the wait
// annotation drops the caller's own section, so a bare wait there is fine (the
// opt-in strict check is lockdep's business).
func TestWaitInsideASignallingSectionIsNotReported(t *testing.T) {
	chk := lockdeptest.New(t)
	f := mockContextOn(chk).Next()
	require.NoError(t, f.Signal())
	ck := chk.BeginSignalling()
	require.NoError(t, f.Wait(t.Context()))
	chk.EndSignalling(ck)
	require.False(t, chk.InSignalling())
}

func TestSignalIsASignallingSection(t *testing.T) {
	chk := lockdeptest.New(t)
	f := mockContextOn(chk).Next()
	var inSection bool
	var cb fence.Callback
	require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { inSection = chk.InSignalling() }))
	require.NoError(t, f.Signal())
	require.True(t, inSection, "callbacks run inside Signal's signalling section")
	require.False(t, chk.InSignalling(), "and it is closed when Signal returns")
}

// --- Timeline (sw_sync) ---------------------------------------------------------

func newTimeline(t *testing.T) *fence.Timeline {
	return fence.NewTimeline("tl", fence.WithChecker(lockdeptest.New(t)))
}

func TestTimelineIncSignalsEveryPointReachedInOrder(t *testing.T) {
	tl := newTimeline(t)
	require.Equal(t, "sw_sync", tl.Context().Driver())
	require.Equal(t, "tl", tl.Context().Timeline())

	var order []uint64
	points := map[uint32]*fence.Fence{}
	cbs := map[uint32]*fence.Callback{}
	for _, v := range []uint32{5, 1, 3, 2, 8} {
		p := tl.Point(v) // ahead of the value: the normal case
		require.False(t, p.IsSignaled(), "point %d", v)
		require.EqualValues(t, v, p.Seqno())
		cbs[v] = new(fence.Callback)
		require.NoError(t, p.AddCallback(cbs[v], func(f *fence.Fence, _ *fence.Callback) { order = append(order, f.Seqno()) }))
		points[v] = p
	}

	tl.Inc(3)
	require.EqualValues(t, 3, tl.Value())
	require.Equal(t, []uint64{1, 2, 3}, order)
	require.False(t, points[5].IsSignaled())
	tl.Inc(1)
	require.Equal(t, []uint64{1, 2, 3}, order, "no point at 4")
	tl.Inc(10)
	require.Equal(t, []uint64{1, 2, 3, 5, 8}, order)
	for v, p := range points {
		require.True(t, p.IsSignaled(), "point %d", v)
		require.NoError(t, p.Error())
	}
}

func TestTimelinePointAtOrBelowTheValueIsSignalled(t *testing.T) {
	tl := newTimeline(t)
	require.True(t, tl.Point(0).IsSignaled())
	tl.Inc(5)
	require.True(t, tl.Point(5).IsSignaled())
	require.True(t, tl.Point(2).IsSignaled())
	require.False(t, tl.Point(6).IsSignaled())
	tl.Inc(1)
}

func TestTimelineSameValueReturnsTheSameFence(t *testing.T) {
	tl := newTimeline(t)
	p := tl.Point(4)
	require.Same(t, p, tl.Point(4))
	require.NotSame(t, p, tl.Point(5))
	tl.Inc(4)
	require.True(t, p.IsSignaled())
	require.NotSame(t, p, tl.Point(4), "a signalled point is not reused")
	tl.Inc(1)
}

func TestTimelineCloseSignalsPendingPointsWithErrNoEntry(t *testing.T) {
	tl := newTimeline(t)
	done := tl.Point(1)
	tl.Inc(1)
	p2, p9 := tl.Point(2), tl.Point(9)

	tl.Close()
	require.True(t, p2.IsSignaled())
	require.True(t, p9.IsSignaled())
	require.ErrorIs(t, p2.Error(), fence.ErrNoEntry)
	require.ErrorIs(t, p9.Error(), fence.ErrNoEntry)
	require.NoError(t, done.Error(), "a point that signalled before stays clean")

	late := tl.Point(20)
	require.True(t, late.IsSignaled(), "points made after Close are born signalled")
	require.ErrorIs(t, late.Error(), fence.ErrNoEntry)
	tl.Close() // twice is harmless
}

// TestTimelineIncAboveIntMaxIsAppliedInSteps: sw_sync applies an increment above
// INT_MAX as INT_MAX steps, so no point is skipped by a step so large that, wrap-
// aware, the point still compares as ahead of the new value.
func TestTimelineIncAboveIntMaxIsAppliedInSteps(t *testing.T) {
	tl := newTimeline(t)
	p := tl.Point(1)
	tl.Inc(0xffffffff)
	require.Equal(t, uint32(0xffffffff), tl.Value())
	require.True(t, p.IsSignaled(), "the counter went past 1")
}

func TestTimelineWrapsAt32Bits(t *testing.T) {
	tl := newTimeline(t)
	tl.Inc(0xfffffff0)
	p := tl.Point(5) // wraps: 0x15 ahead
	q := tl.Point(0xfffffff8)
	require.False(t, p.IsSignaled())
	tl.Inc(0x10)
	require.True(t, q.IsSignaled())
	require.False(t, p.IsSignaled())
	tl.Inc(5)
	require.True(t, p.IsSignaled())
}

func TestTimelineCallbackMayCreatePoints(t *testing.T) {
	tl := newTimeline(t)
	var next *fence.Fence
	var cb fence.Callback
	require.NoError(t, tl.Point(1).AddCallback(&cb, func(*fence.Fence, *fence.Callback) { next = tl.Point(2) }))
	tl.Inc(1)
	require.NotNil(t, next)
	require.False(t, next.IsSignaled())
	tl.Inc(1)
	require.True(t, next.IsSignaled())
}

// --- Array ----------------------------------------------------------------------

func newArray(fs []*fence.Fence, signalOnAny bool) *fence.Array {
	return fence.NewArray(fs, fence.AllocContexts(1), 1, signalOnAny)
}

func TestArraySignalsWhenAllHaveSignalled(t *testing.T) {
	ctx := mockContext(t)
	fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
	a := newArray(fs, false)
	require.Same(t, a, fence.AsArray(&a.Fence))
	require.Nil(t, fence.AsArray(fs[0]))
	require.Equal(t, fs, a.Fences())

	a.EnableSignaling()
	require.NoError(t, fs[2].Signal())
	require.NoError(t, fs[0].Signal())
	require.False(t, a.IsSignaled())
	require.NoError(t, fs[1].Signal())
	require.True(t, a.IsSignaled())
	require.NoError(t, a.Error())
}

func TestArrayFirstErrorWins(t *testing.T) {
	errA, errB, errC := errorString("a"), errorString("b"), errorString("c")
	t.Run("in callback order", func(t *testing.T) {
		ctx := mockContext(t)
		fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
		a := newArray(fs, false)
		a.EnableSignaling()
		require.NoError(t, fs[1].SetError(errB))
		require.NoError(t, fs[1].Signal())
		require.NoError(t, fs[0].SetError(errA))
		require.NoError(t, fs[0].Signal())
		require.NoError(t, fs[2].Signal())
		require.True(t, a.IsSignaled())
		require.Equal(t, errB, a.Error())
	})
	t.Run("in index order when already signalled", func(t *testing.T) {
		ctx := mockContext(t)
		fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
		require.NoError(t, fs[2].SetError(errC))
		require.NoError(t, fs[2].Signal())
		require.NoError(t, fs[1].SetError(errB))
		require.NoError(t, fs[1].Signal())
		a := newArray(fs, false)
		a.EnableSignaling()
		require.False(t, a.IsSignaled())
		require.NoError(t, fs[0].SetError(errA))
		require.NoError(t, fs[0].Signal())
		require.Equal(t, errB, a.Error(), "fs[1] is the first error seen when enabling")
	})
	t.Run("all signalled when enabling", func(t *testing.T) {
		ctx := mockContext(t)
		fs := []*fence.Fence{ctx.Next(), ctx.Next()}
		require.NoError(t, fs[0].Signal())
		require.NoError(t, fs[1].SetError(errB))
		require.NoError(t, fs[1].Signal())
		a := newArray(fs, false)
		var cb fence.Callback
		require.ErrorIs(t, a.AddCallback(&cb, nopCallback), fence.ErrSignaled, "enabling completes the array at once")
		require.Equal(t, errB, a.Error())
	})
}

func TestArraySignalOnAny(t *testing.T) {
	errLate := errorString("late")
	ctx := mockContext(t)
	fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
	a := newArray(fs, true)
	a.EnableSignaling()
	require.False(t, a.IsSignaled())
	require.NoError(t, fs[1].Signal())
	require.True(t, a.IsSignaled())
	require.NoError(t, a.Error())

	// Fences completing after the array did change nothing, errors included.
	require.NoError(t, fs[0].SetError(errLate))
	require.NoError(t, fs[0].Signal())
	require.NoError(t, fs[2].Signal())
	require.NoError(t, a.Error(), "the array's error is fixed when it signals")
	_, err := a.Status()
	require.NoError(t, err)
}

func TestArraySignalOnAnyTakesTheFirstFencesError(t *testing.T) {
	errFirst := errorString("first")
	ctx := mockContext(t)
	fs := []*fence.Fence{ctx.Next(), ctx.Next()}
	a := newArray(fs, true)
	var cb fence.Callback
	var seen error
	require.NoError(t, a.AddCallback(&cb, func(f *fence.Fence, _ *fence.Callback) { seen = f.Error() }))
	require.NoError(t, fs[1].SetError(errFirst))
	require.NoError(t, fs[1].Signal())
	require.Equal(t, errFirst, a.Error())
	require.Equal(t, errFirst, seen, "the error is set before the array's callbacks run")
	require.NoError(t, fs[0].Signal())
}

// TestArrayPolledWithoutEnablingKeepsTheFirstError: when nobody enabled
// signalling, the signaled op counts the signalled fences itself. The kernel's
// does not copy their errors there, so an array polled complete would signal
// without its first error (and an array's error would depend on who looked first);
// the model records them in index order, as enabling does. A documented
// difference.
func TestArrayPolledWithoutEnablingKeepsTheFirstError(t *testing.T) {
	ctx := mockContext(t)
	fs := []*fence.Fence{ctx.Next(), ctx.Next()}
	a := newArray(fs, false)
	require.NoError(t, fs[0].SetError(errorString("x")))
	require.NoError(t, fs[0].Signal())
	require.False(t, a.IsSignaled())
	require.NoError(t, fs[1].Signal())
	require.True(t, a.IsSignaled())
	require.Equal(t, errorString("x"), a.Error())
}

func TestEmptyArrayIsSignalled(t *testing.T) {
	a := newArray(nil, false)
	require.True(t, a.IsSignaled())
	require.NoError(t, a.Wait(t.Context()))
}

func TestArraySetDeadlineReachesEveryFence(t *testing.T) {
	var got []uint64
	ctx := mockContext(t, fence.WithOps(&fence.Ops{SetDeadline: func(f *fence.Fence, _ time.Time) { got = append(got, f.Seqno()) }}))
	fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
	require.NoError(t, fs[1].Signal())
	a := newArray(fs, false)
	a.SetDeadline(time.Unix(1, 0))
	require.Equal(t, []uint64{1, 3}, got, "signalled fences are skipped")
	signalAll(fs...)
}

// TestArrayWaitedOnFromManyGoroutines races the array's completion (its fences
// signalled concurrently) against waiters and pollers.
func TestArrayWaitedOnFromManyGoroutines(t *testing.T) {
	ctx := mockContext(t)
	for range 50 {
		fs := make([]*fence.Fence, 8)
		for i := range fs {
			fs[i] = ctx.Next()
		}
		a := newArray(fs, false)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { assert.NoError(t, a.Wait(t.Context())) })
			wg.Go(func() {
				for !a.IsSignaled() {
					runtime.Gosched()
				}
			})
		}
		for i, f := range fs {
			wg.Go(func() {
				if i == 5 {
					_ = f.SetError(errorString("five"))
				}
				_ = f.Signal()
			})
		}
		wg.Wait()
		require.Equal(t, errorString("five"), a.Error())
	}
}

// --- Chain ----------------------------------------------------------------------

func TestChainJoinsThePreviousContextOnlyWhenLater(t *testing.T) {
	ctx := mockContext(t)
	c1 := fence.NewChain(nil, ctx.Next(), 5)
	c2 := fence.NewChain(&c1.Fence, ctx.Next(), 6)
	require.Equal(t, c1.Context().ID(), c2.Context().ID())
	require.True(t, fence.IsLater(&c2.Fence, &c1.Fence))

	c3 := fence.NewChain(&c2.Fence, ctx.Next(), 3) // not later: new context, seqno kept
	require.NotEqual(t, c2.Context().ID(), c3.Context().ID())
	require.EqualValues(t, 6, c3.Seqno(), "a timeline never goes backwards")
	require.Same(t, &c2.Fence, c3.Prev())

	require.Same(t, c1, fence.AsChain(&c1.Fence))
	require.Nil(t, fence.AsChain(ctx.Next()))
	require.Same(t, c1.Payload(), fence.Contained(&c1.Fence))
	plain := ctx.Next()
	require.Same(t, plain, fence.Contained(plain))
	for f := range c3.All() {
		signalAll(fence.Contained(f))
	}
}

func TestChainKeepsPayloadErrorsToThemselves(t *testing.T) {
	ctx := mockContext(t)
	p := ctx.Next()
	c := fence.NewChain(nil, p, 1)
	c.EnableSignaling()
	require.NoError(t, p.SetError(errorString("payload")))
	require.NoError(t, p.Signal())
	require.True(t, c.IsSignaled())
	require.NoError(t, c.Error(), "the kernel does not propagate payload errors to the chain")
}

func TestChainSignalledByPollingWithoutEnabling(t *testing.T) {
	ctx := mockContext(t)
	p1, p2 := ctx.Next(), ctx.Next()
	c1 := fence.NewChain(nil, p1, 1)
	c2 := fence.NewChain(&c1.Fence, p2, 2)
	require.NoError(t, p2.Signal())
	require.False(t, c2.IsSignaled(), "point 2 waits for payload 1 too")
	require.NoError(t, p1.Signal())
	require.True(t, c2.IsSignaled())
	require.Nil(t, c2.Prev(), "walking unlinked every signalled point")
}

// --- Merge ----------------------------------------------------------------------

func TestMergeKeepsTheLaterFenceOfEachContext(t *testing.T) {
	chk := lockdeptest.New(t)
	ctxA, ctxB := mockContextOn(chk), mockContextOn(chk)
	a1, a3, a2, b1 := ctxA.New(1), ctxA.New(3), ctxA.New(2), ctxB.New(1)

	m := fence.Merge(a1, a3, a2)
	require.Same(t, a3, m, "one context: the latest fence itself")

	m = fence.Merge(b1, a2, fence.Merge(a1, a3))
	require.Equal(t, []*fence.Fence{a3, b1}, unwrapAll(m))
	require.NotEqual(t, ctxA.ID(), m.Context().ID())
	require.NotEqual(t, ctxB.ID(), m.Context().ID())
	signalAll(a1, a2, a3, b1)
	require.True(t, m.IsSignaled())
}

func TestMergeDropsSignalledFences(t *testing.T) {
	ctx := mockContext(t)
	done, pending := ctx.Next(), mockFence(t)
	require.NoError(t, done.Signal())
	require.Same(t, pending, fence.Merge(done, pending))
	require.NoError(t, pending.Signal())
}

func TestMergeOfSignalledFencesIsAStubWithTheLatestTimestamp(t *testing.T) {
	chk := lockdeptest.New(t)
	f1, f2, f3 := mockContextOn(chk).Next(), mockContextOn(chk).Next(), mockContextOn(chk).Next()
	t1 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, f1.SignalTimestamp(t1.Add(time.Second)))
	require.NoError(t, f2.SignalTimestamp(t1.Add(3*time.Second)))
	require.NoError(t, f3.SignalTimestamp(t1))

	m := fence.Merge(f1, newArray([]*fence.Fence{f2, f3}, false).Fence.Get())
	require.True(t, m.IsSignaled())
	require.Zero(t, m.Context().ID(), "a stub, on context 0")
	require.NotSame(t, fence.Stub(), m, "a private stub")
	ts, ok := m.Timestamp()
	require.True(t, ok)
	require.True(t, t1.Add(3*time.Second).Equal(ts), "timestamp %v", ts)

	empty := fence.Merge()
	require.True(t, empty.IsSignaled())
	ts, _ = empty.Timestamp()
	require.True(t, ts.IsZero(), "nothing signalled: a zero timestamp")
}

// TestMergeResultIsAReferenceOfItsOwn: as in the kernel, Merge returns a new
// reference even when it returns one of its inputs, so the caller's Put of the
// result does not release the input (which would force-signal it with
// ErrDeadlock, its callback pending).
func TestMergeResultIsAReferenceOfItsOwn(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	f := mockContextOn(chk).Next()
	var cb fence.Callback
	require.NoError(t, f.AddCallback(&cb, nopCallback))

	m := fence.Merge(f)
	require.Same(t, f, m)
	m.Put()
	require.False(t, f.IsSignaled())
	lockdeptest.RequireClean(t, col)
	require.NoError(t, f.Signal())
}

func TestNewSignaled(t *testing.T) {
	ts := time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)
	f := fence.NewSignaled(ts)
	require.True(t, f.IsSignaled())
	got, ok := f.Timestamp()
	require.True(t, ok)
	require.True(t, ts.Equal(got))
	require.ErrorIs(t, f.Signal(), fence.ErrInvalid)
	require.NoError(t, f.Error())
	var cb fence.Callback
	require.ErrorIs(t, f.AddCallback(&cb, nopCallback), fence.ErrSignaled)
}

// errorString is a comparable error for tests.
type errorString string

func (e errorString) Error() string { return string(e) }
