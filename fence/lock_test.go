package fence_test

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

// Callbacks run with the fence lock held, as in the kernel: a RemoveCallback that
// returns false has waited for the running callback to finish, so what the
// callback wrote is visible without any other synchronisation (the race detector
// checks that the lock hand-off orders it).
func TestRemoveCallbackWaitsForARunningCallback(t *testing.T) {
	for range 200 {
		f := mockContext(t).Next()
		var (
			cb      fence.Callback
			written int // plain memory: ordered only by the fence lock
			started = make(chan struct{})
		)
		require.NoError(t, f.AddCallback(&cb, func(*fence.Fence, *fence.Callback) {
			close(started)
			for range 10 {
				runtime.Gosched() // give the remover time to find the lock taken
			}
			written = 1
		}))
		var wg sync.WaitGroup
		wg.Go(func() { _ = f.Signal() })
		<-started
		require.False(t, f.RemoveCallback(&cb), "the callback is running: too late to remove it")
		require.Equal(t, 1, written, "RemoveCallback returned before the callback finished")
		wg.Wait()
	}
}

// Goroutines contending for one fence's lock inside a synctest bubble all get it
// (a waiter yields, so it never sleeps on anything shared with another bubble),
// and the fence ends consistent: every callback added and not removed ran once.
func TestFenceLockContentionInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, rounds = 8, 200
		f := mockContext(t).Next()
		var (
			ran, want atomic.Int32 // callbacks run; callbacks that should have
			wg        sync.WaitGroup
		)
		for range workers {
			wg.Go(func() {
				var cb fence.Callback
				count := func(*fence.Fence, *fence.Callback) { ran.Add(1) }
				for range rounds {
					if f.AddCallback(&cb, count) != nil {
						return // signalled: refused, and not run
					}
					if !f.RemoveCallback(&cb) {
						want.Add(1) // the signal took it: it ran
						return
					}
					_ = f.Error()
				}
				if f.AddCallback(&cb, count) == nil {
					want.Add(1) // queued before the signal: it runs
				}
			})
		}
		for range workers {
			runtime.Gosched()
		}
		require.NoError(t, f.Signal())
		wg.Wait()
		require.Equal(t, want.Load(), ran.Load())
	})
}

// A Wait that gives up just as its fence signals returns nil or ctx.Err(), and
// leaves the goroutine's wait entry clean: its next Wait sleeps until that fence
// signals, and does not return early on a stale wake-up.
func TestWaitGivingUpAsTheFenceSignalsLeavesNoStaleWakeUp(t *testing.T) {
	for range 300 {
		synctest.Test(t, func(t *testing.T) {
			ctx := mockContext(t)
			f, g := ctx.Next(), ctx.Next()
			cctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { // not the test's goroutine: assert, as FailNow may not run here
				if err := f.Wait(cctx); err != nil {
					assert.ErrorIs(t, err, context.Canceled)
				}
				assert.NoError(t, g.Wait(context.Background()))
				assert.True(t, g.IsSignaled(), "Wait returned before the fence signalled")
			})
			synctest.Wait() // the waiter sleeps on f
			// Cancelling wakes the waiter through ctx; signalling before it runs
			// leaves the fence's wake-up for it to drain as it gives up.
			cancel()
			require.NoError(t, f.Signal())
			synctest.Wait() // the first Wait is over; the second sleeps on g
			require.NoError(t, g.Signal())
			wg.Wait()
		})
	}
}

// A reader that sees a fence signalled sees its timestamp too, however it races
// with SignalTimestamp: like dma_fence_timestamp(), Timestamp waits out the
// moment between the signalled flag and the stamp.
func TestTimestampIsThereOnceSignalledIsSeen(t *testing.T) {
	ctx := mockContext(t)
	want := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for range 500 {
		f := ctx.Next()
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for !f.IsSignaled() {
					runtime.Gosched()
				}
				got, ok := f.Timestamp()
				if !ok || !got.Equal(want) {
					t.Errorf("signalled fence: Timestamp() = %v, %v; want %v", got, ok, want)
				}
			})
		}
		require.NoError(t, f.SignalTimestamp(want))
		wg.Wait()
	}
}
