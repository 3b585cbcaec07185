package fence_test

// The kernel's drivers/dma-buf/st-dma-fence.c (suite dma_fence), one Go test per
// selftest, named after it. The selftest's mock wait op returns -ETIME on a
// timeout; Wait's equivalent is context.DeadlineExceeded.

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
)

// jiffy stands for one kernel timer tick in the timeout tests.
const jiffy = time.Second / 250

// simpleCB is the selftests' struct simple_cb: a callback that records it ran.
type simpleCB struct {
	cb   fence.Callback
	seen atomic.Bool
}

func (s *simpleCB) add(f *fence.Fence) error {
	return f.AddCallback(&s.cb, func(*fence.Fence, *fence.Callback) { s.seen.Store(true) })
}

func TestDmaFence_sanitycheck(t *testing.T) {
	f := mockFence(t)
	f.EnableSignaling()
	require.NoError(t, f.Signal())
	f.Put()
}

func TestDmaFence_test_signaling(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	f.EnableSignaling()

	require.False(t, f.IsSignaled(), "fence unexpectedly signalled on creation")
	require.NoError(t, f.Signal(), "fence reported being already signalled")
	require.True(t, f.IsSignaled(), "fence not reporting signalled")
	require.ErrorIs(t, f.Signal(), fence.ErrInvalid, "fence reported not being already signalled")
}

func TestDmaFence_test_add_callback(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	var cb simpleCB

	require.NoError(t, cb.add(f), "failed to add callback, fence already signalled")
	require.NoError(t, f.Signal())
	require.True(t, cb.seen.Load(), "callback failed")
}

func TestDmaFence_test_late_add_callback(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	var cb simpleCB
	f.EnableSignaling()
	require.NoError(t, f.Signal())

	require.ErrorIs(t, cb.add(f), fence.ErrSignaled, "added callback, but fence was already signalled")
	require.ErrorIs(t, f.Signal(), fence.ErrInvalid)
	require.False(t, cb.seen.Load(), "callback called after failed attachment")
}

func TestDmaFence_test_rm_callback(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	var cb simpleCB

	require.NoError(t, cb.add(f))
	require.True(t, f.RemoveCallback(&cb.cb), "failed to remove callback")
	require.NoError(t, f.Signal())
	require.False(t, cb.seen.Load(), "callback still run after removal")
}

func TestDmaFence_test_late_rm_callback(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	var cb simpleCB

	require.NoError(t, cb.add(f))
	require.NoError(t, f.Signal())
	require.True(t, cb.seen.Load(), "callback failed")
	require.False(t, f.RemoveCallback(&cb.cb), "callback removal succeeded after being executed")
}

func TestDmaFence_test_status(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	f.EnableSignaling()

	signaled, err := f.Status()
	require.False(t, signaled, "fence unexpectedly has signalled status on creation")
	require.NoError(t, err)

	require.NoError(t, f.Signal())
	signaled, err = f.Status()
	require.True(t, signaled, "fence not reporting signalled status")
	require.NoError(t, err)
}

func TestDmaFence_test_error(t *testing.T) {
	errIO := errorString("EIO")
	f := mockFence(t)
	defer f.Put()
	f.EnableSignaling()

	require.NoError(t, f.SetError(errIO))
	signaled, err := f.Status()
	require.False(t, signaled, "fence unexpectedly has error status before signal")
	require.NoError(t, err)
	require.Equal(t, errIO, f.Error(), "like fence->error, readable before the fence signals")

	require.NoError(t, f.Signal())
	signaled, err = f.Status()
	require.True(t, signaled)
	require.ErrorIs(t, err, errIO, "fence not reporting error status")
	require.ErrorIs(t, f.Error(), errIO)
}

// TestDmaFence_test_wait: wait_timeout(0) is a wait with a context already past its
// deadline.
func TestDmaFence_test_wait(t *testing.T) {
	f := mockFence(t)
	defer f.Put()
	f.EnableSignaling()

	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()

	require.ErrorIs(t, f.Wait(expired), context.DeadlineExceeded, "wait reported complete before being signalled")
	require.False(t, f.IsSignaled(), "a wait that gives up changes nothing")

	require.NoError(t, f.Signal())
	require.NoError(t, f.Wait(expired), "wait reported incomplete after being signalled")
}

// TestDmaFence_test_wait_timeout runs in a synctest bubble: a one-jiffy wait times
// out, and a timer that signals after one jiffy completes a two-jiffy wait, on
// virtual time, exactly.
func TestDmaFence_test_wait_timeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := mockFence(t)
		defer f.Put()
		f.EnableSignaling()

		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), jiffy)
		defer cancel()
		require.ErrorIs(t, f.Wait(ctx), context.DeadlineExceeded, "wait reported complete before being signalled")
		require.Equal(t, jiffy, time.Since(start))
		require.False(t, f.IsSignaled())

		timer := time.AfterFunc(jiffy, func() { _ = f.Signal() })
		defer timer.Stop()
		start = time.Now()
		ctx2, cancel2 := context.WithTimeout(t.Context(), 2*jiffy)
		defer cancel2()
		require.NoError(t, f.Wait(ctx2), "wait reported incomplete after timeout")
		require.Equal(t, jiffy, time.Since(start), "woken by the timer, not the deadline")
		require.True(t, f.IsSignaled())
	})
}

func TestDmaFence_test_stub(t *testing.T) {
	var stubs [64]*fence.Fence
	for i := range stubs {
		stubs[i] = fence.Stub()
		require.True(t, stubs[i].IsSignaled(), "obtained unsignalled stub fence")
	}
	for _, s := range stubs {
		require.Same(t, stubs[0], s, "the stub is one shared fence")
	}
	require.Zero(t, stubs[0].Context().ID(), "stubs live on context 0")
	require.Zero(t, stubs[0].Seqno())
}

// TestDmaFence_race_signal_callback is the kernel's race between two threads that
// each publish a fence, add a callback to the other's and signal their own (before
// or after adding, one pass each). A callback that was accepted must run; the
// kernel runs for 50 ms per pass, this runs a bounded number of rounds.
func TestDmaFence_race_signal_callback(t *testing.T) {
	const rounds = 20000
	for _, before := range []bool{false, true} {
		ctx := mockContext(t)
		var published [2]atomic.Pointer[fence.Fence]
		var stop atomic.Bool
		var wg sync.WaitGroup
		for id := range 2 {
			wg.Go(func() {
				defer stop.Store(true) // release a peer still looking for our fence
				var pass, miss int
				for ; pass < rounds && !stop.Load(); pass++ {
					f1 := ctx.Next()
					f1.EnableSignaling()
					published[id].Store(f1)

					f2 := published[1-id].Load()
					for f2 == nil && !stop.Load() {
						runtime.Gosched()
						f2 = published[1-id].Load()
					}

					if before {
						_ = f1.Signal()
					}
					var cb simpleCB
					if f2 == nil || cb.add(f2) != nil {
						miss++
						cb.seen.Store(true)
					}
					if !before {
						_ = f1.Signal()
					}

					if !cb.seen.Load() {
						if !assert.NoError(t, f2.Wait(t.Context())) {
							return
						}
						// The kernel's __wait_for_callbacks: taking the fence's lock
						// waits for the signaller to finish running callbacks, and
						// the callback has run, so it is no longer queued.
						assert.False(t, f2.RemoveCallback(&cb.cb))
					}
					if !cb.seen.Load() {
						t.Errorf("callback not seen on goroutine %d, pass %d (%d misses), signalling before add: %v; fence signalled: %v",
							id, pass, miss, before, f2.IsSignaled())
						return
					}
					published[id].Store(nil)
					f1.Put()
				}
				t.Logf("goroutine %d (signal before add: %v): %d passes, %d misses", id, before, pass, miss)
			})
		}
		wg.Wait()
	}
}
