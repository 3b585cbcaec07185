package fence_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// Enabling an array's signalling holds the array's lock and queues a callback on
// each entry, taking each entry's lock in turn; an entry that completes the array
// signals it from its callback, under the entry's lock. Here entry f1's signaller
// signals f0 from a callback, so it holds f1's lock when f0 completes the array,
// while the enabling side holds the array's lock and waits for f1's: before the fix
// that was an AB-BA deadlock (the kernel avoids it by signalling arrays from
// irq_work). The steps are forced with channels, so the interleaving is certain.
func TestArrayCompletedDuringEnableDoesNotDeadlock(t *testing.T) {
	chk := lockdeptest.New(t)
	enabledF0 := make(chan struct{})
	hooked := fence.NewContext("test", "f0", fence.WithChecker(chk), fence.WithOps(&fence.Ops{
		EnableSignaling: func(*fence.Fence) bool { close(enabledF0); return true },
	}))
	f0 := hooked.Next()
	f1 := fence.NewContext("test", "f1", fence.WithChecker(chk)).Next()

	inX := make(chan struct{})
	var x fence.Callback
	require.NoError(t, f1.AddCallback(&x, func(*fence.Fence, *fence.Callback) {
		close(inX)
		<-enabledF0                     // the array has queued on f0 and goes on to f1
		require.NoError(t, f0.Signal()) // completes the array, f1's lock held
	}))
	a := fence.NewArray([]*fence.Fence{f0, f1}, fence.AllocContexts(1), 1, true)

	var wg sync.WaitGroup
	wg.Go(func() { require.NoError(t, f1.Signal()) })
	<-inX // f1's signaller holds f1's lock now
	wg.Go(func() { a.EnableSignaling() })

	// A hang guard only, outside the fence: in a deadlock even Wait would block on
	// the array's lock, so the test watches from another goroutine and fails
	// instead of stalling the binary.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("deadlock: enabling the array and signalling its entry block each other")
	}
	require.True(t, a.IsSignaled(), "the array signalled when f0 did")
}

// Two goroutines advancing one timeline at once still signal its points in value
// order, as the kernel's signalling under the timeline lock does.
func TestTimelineConcurrentIncSignalsInOrder(t *testing.T) {
	chk := lockdeptest.New(t)
	for range 200 {
		tl := fence.NewTimeline("order", fence.WithChecker(chk))
		var mu sync.Mutex
		var order []uint64
		var cbs [64]fence.Callback
		for v := 1; v <= len(cbs); v++ {
			require.NoError(t, tl.Point(uint32(v)).AddCallback(&cbs[v-1], func(f *fence.Fence, _ *fence.Callback) {
				mu.Lock()
				order = append(order, f.Seqno())
				mu.Unlock()
			}))
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range len(cbs) / 2 {
					tl.Inc(1)
				}
			})
		}
		wg.Wait()
		require.Len(t, order, len(cbs))
		for i := 1; i < len(order); i++ {
			require.Less(t, order[i-1], order[i], "points signalled out of order: %v", order)
		}
	}
}
