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
	"github.com/gpusync/gpusync/lockdep"
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
		<-enabledF0 // the array has queued on f0 and goes on to f1
		// Completes the array, f1's lock held. assert, not require: this runs in
		// f1's signaller, not the test's goroutine, and FailNow would end that
		// goroutine still holding f1's lock.
		assert.NoError(t, f0.Signal())
	}))
	a := fence.NewArray([]*fence.Fence{f0, f1}, fence.AllocContexts(1), 1, true)

	var wg sync.WaitGroup
	// Not the test's goroutine: assert, as FailNow may not run here.
	wg.Go(func() { assert.NoError(t, f1.Signal()) })
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

// A callback that asks for a point while Inc is signalling gets the pending point
// for that value, not a second fence born signalled ahead of it: the counter has
// reached 2 when p1's callback runs, but p2 has not signalled yet. A point the
// counter has reached that did not exist yet is signalled by the same Inc, after
// the points below it, so the timeline's fences still signal in seqno order.
func TestTimelinePointDuringIncReturnsThePendingPoint(t *testing.T) {
	tl := fence.NewTimeline("tl", fence.WithChecker(lockdeptest.New(t)))
	p1, p2 := tl.Point(1), tl.Point(2)
	var order []uint64
	record := func(f *fence.Fence, _ *fence.Callback) { order = append(order, f.Seqno()) }
	var cb1, cb2, cb3 fence.Callback
	var again, p3 *fence.Fence
	require.NoError(t, p1.AddCallback(&cb1, func(f *fence.Fence, cb *fence.Callback) {
		record(f, cb)
		again = tl.Point(2)
		p3 = tl.Point(3)
		assert.False(t, p3.IsSignaled(), "point 3 is born behind the unsignalled point 2")
		assert.NoError(t, p3.AddCallback(&cb3, record))
	}))
	require.NoError(t, p2.AddCallback(&cb2, record))

	tl.Inc(3)
	require.Same(t, p2, again, "the pending point 2 is returned, not duplicated")
	require.True(t, p3.IsSignaled(), "the Inc that reached 3 signalled it")
	require.Equal(t, []uint64{1, 2, 3}, order)
}

// The same race, between goroutines: while one Inc signals 64 points, another asks
// for the last of them. Until that point has signalled it must get that point back;
// a different fence is allowed only once the point has signalled.
func TestTimelinePointRacingIncIsNotDuplicated(t *testing.T) {
	chk := lockdeptest.New(t)
	const n = 64
	for range 200 {
		tl := fence.NewTimeline("race", fence.WithChecker(chk))
		var points [n + 1]*fence.Fence
		var cbs [n + 1]fence.Callback
		var order []uint64 // appended by the signalling goroutine only
		for v := uint32(1); v <= n; v++ {
			points[v] = tl.Point(v)
			require.NoError(t, points[v].AddCallback(&cbs[v], func(f *fence.Fence, _ *fence.Callback) {
				order = append(order, f.Seqno())
			}))
		}
		var wg sync.WaitGroup
		wg.Go(func() { tl.Inc(n) })
		wg.Go(func() {
			for {
				q := tl.Point(n)
				if q != points[n] {
					assert.True(t, points[n].IsSignaled(), "Point(%d) made a new fence while the pending one was unsignalled", n)
					return
				}
				if q.IsSignaled() {
					return
				}
			}
		})
		wg.Wait()
		require.Len(t, order, n)
		for i := 1; i < len(order); i++ {
			require.Less(t, order[i-1], order[i], "points signalled out of order: %v", order)
		}
	}
}

// Close drains the same way: a point its callbacks ask for is the pending one, or,
// above the point being signalled, queues behind it and gets ErrNoEntry in order.
func TestTimelinePointDuringCloseKeepsSeqnoOrder(t *testing.T) {
	tl := fence.NewTimeline("tl", fence.WithChecker(lockdeptest.New(t)))
	p1, p5 := tl.Point(1), tl.Point(5)
	var order []uint64
	record := func(f *fence.Fence, _ *fence.Callback) { order = append(order, f.Seqno()) }
	var cb1, cb5, cb3 fence.Callback
	var again, p3 *fence.Fence
	require.NoError(t, p1.AddCallback(&cb1, func(f *fence.Fence, cb *fence.Callback) {
		record(f, cb)
		again = tl.Point(5)
		p3 = tl.Point(3)
		assert.NoError(t, p3.AddCallback(&cb3, record))
	}))
	require.NoError(t, p5.AddCallback(&cb5, record))

	tl.Close()
	require.Same(t, p5, again)
	require.Equal(t, []uint64{1, 3, 5}, order)
	for _, p := range []*fence.Fence{p1, p3, p5} {
		require.ErrorIs(t, p.Error(), fence.ErrNoEntry)
	}
	require.ErrorIs(t, tl.Point(2).Error(), fence.ErrNoEntry, "born signalled after Close")
}

// A signal-on-any array whose signalling is enabled after one of its fences has
// signalled is complete at that fence and queues no callback on the others, as
// dma_fence_array_enable_signaling() returns once its count reaches zero. Before
// the fix each later fence carried a dead callback of the array: dropping one,
// unsignalled, reported a leak and signalled the innocent fence with ErrDeadlock.
func TestArraySignalOnAnyCompleteWhenEnabledQueuesNoMoreCallbacks(t *testing.T) {
	for _, tc := range []struct {
		name      string
		signalled int // the index already signalled
	}{
		{"first fence signalled", 0},
		{"middle fence signalled", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chk, col := lockdeptest.Collect(t)
			ctx := fence.NewContext("test", "any", fence.WithChecker(chk))
			fs := []*fence.Fence{ctx.Next(), ctx.Next(), ctx.Next()}
			require.NoError(t, fs[tc.signalled].Signal())
			a := fence.NewArray(fs, fence.AllocContexts(1), 1, true)
			a.EnableSignaling()
			require.True(t, a.IsSignaled())

			last := fs[len(fs)-1] // after the signalled one: enabling stopped before it
			last.Put()
			lockdeptest.RequireClean(t, col)
			require.False(t, last.IsSignaled(), "no callback was queued, so nothing signals it")
			require.NoError(t, last.Error())
			for i, f := range fs {
				if i != tc.signalled && !f.IsSignaled() {
					require.NoError(t, f.Signal())
				}
			}
		})
	}
}

// An array polled while its signalling is being enabled does not signal while one
// of its fences is pending. Enabling sets the enable flag, then counts the fence
// already signalled; a poll that read the flag clear and the count after that
// decrement counted the same fence twice. dma_fence_array_signaled() reads the
// count first for this reason ("dma-buf: fix dma_fence_array_signaled v4"). The
// window is a few instructions wide, so the test races many arrays and stops at
// the first early signal: before the fix it failed every run, within 70,000
// arrays (within 2,000 with -race).
func TestArrayPolledWhileEnablingDoesNotSignalEarly(t *testing.T) {
	ctx := fence.NewContext("test", "poll", fence.WithChecker(lockdeptest.New(t)))
	const arrays = 100000
	for i := 0; i < arrays; i++ {
		f0, f1 := ctx.Next(), ctx.Next()
		require.NoError(t, f0.Signal())
		a := fence.NewArray([]*fence.Fence{f0, f1}, fence.AllocContexts(1), 1, false)
		var early atomic.Bool
		var start atomic.Bool
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				for !start.Load() {
					runtime.Gosched()
				}
				for range 50 {
					if a.IsSignaled() {
						early.Store(!f1.IsSignaled())
						return
					}
				}
			})
		}
		wg.Go(func() {
			start.Store(true)
			runtime.Gosched()
			a.EnableSignaling()
		})
		wg.Wait()
		require.False(t, early.Load(), "array %d signalled with fence 1 pending", i)
		require.NoError(t, f1.Signal())
	}
}

// An array takes over the references it is given, and its release puts them, as
// dma_fence_array_release() does.
func TestArrayReleasePutsItsFences(t *testing.T) {
	var released atomic.Int32
	ctx := mockContext(t, fence.WithOps(&fence.Ops{Release: func(*fence.Fence) { released.Add(1) }}))
	f1, f2 := ctx.Next(), ctx.Next()
	a := fence.NewArray([]*fence.Fence{f1, f2}, fence.AllocContexts(1), 1, false)
	a.EnableSignaling() // its callbacks hold references to it until they run
	signalAll(f1, f2)
	require.True(t, a.IsSignaled())
	require.Zero(t, released.Load())
	a.Put()
	require.EqualValues(t, 2, released.Load(), "the array's release puts every fence")
}

// A chain point takes over its references to prev and payload, and its release
// puts them; a predecessor whose last reference it held is released with it, as
// dma_fence_chain_release() does. The armed chain's own reference is dropped by
// its re-arm step (the kernel's irq_work), which runs in a goroutine of its own:
// synctest.Wait lets it finish.
func TestChainReleasePutsPayloadAndPrev(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var released atomic.Int32
		ctx := mockContext(t, fence.WithOps(&fence.Ops{Release: func(*fence.Fence) { released.Add(1) }}))
		p1, p2, p3 := ctx.Next(), ctx.Next(), ctx.Next()
		c1 := fence.NewChain(nil, p1, 1)
		c2 := fence.NewChain(&c1.Fence, p2, 2)
		c3 := fence.NewChain(&c2.Fence, p3, 3)
		c3.EnableSignaling()
		signalAll(p1, p2, p3)
		synctest.Wait()
		require.True(t, c3.IsSignaled())
		c3.Put()
		require.EqualValues(t, 3, released.Load(), "every payload is released with the chain")
	})
}

// A walk that unlinks a signalled point drops the reference the newer point held
// to it, as dma_fence_chain_walk() does: a point nobody else holds is released.
func TestChainWalkPutsTheUnlinkedPoint(t *testing.T) {
	p2 := mockContext(t).Next()
	var released atomic.Int32
	pctx := fence.NewContext("test", "payload", fence.WithChecker(lockdeptest.New(t)),
		fence.WithOps(&fence.Ops{Release: func(*fence.Fence) { released.Add(1) }}))
	q1 := pctx.Next()
	c1 := fence.NewChain(nil, q1, 1) // q1's only reference
	c2 := fence.NewChain(&c1.Fence, p2, 2)
	require.NoError(t, q1.Signal())
	require.Nil(t, walkOnce(c2), "nothing older is pending")
	require.Nil(t, c2.Prev(), "the walk unlinked point 1")
	require.EqualValues(t, 1, released.Load(), "point 1, released, put its payload")
	require.NoError(t, p2.Signal())
}

// walkOnce returns the first point after c that All yields, or nil.
func walkOnce(c *fence.Chain) *fence.Fence {
	first := true
	for f := range c.All() {
		if !first {
			return f
		}
		first = false
	}
	return nil
}

// A signal-on-any array that has signalled takes its callbacks off its other
// fences. The kernel leaves them queued until those fences signal (each holding a
// reference to the array, which holds one to the fence); here a queued callback
// counts as a waiter, so an innocent fence forgotten unsignalled was reported by
// LeakCheck, and one released by Put was reported and signalled with ErrDeadlock.
func TestSignalOnAnyArrayTakesItsCallbacksOffTheOtherFences(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	ctx := fence.NewContext("test", "any", fence.WithChecker(chk), fence.LeakCheck())
	abandonCompletedAnyArray(t, ctx)
	for range 3 {
		gcAndRunCleanups(t)
	}
	lockdeptest.RequireClean(t, col)
}

// abandonCompletedAnyArray completes a signal-on-any array over two fences by
// signalling the first, then forgets them all, the second still pending.
//
//go:noinline
func abandonCompletedAnyArray(t *testing.T, ctx *fence.Context) {
	fs := []*fence.Fence{ctx.Next(), ctx.Next()}
	a := fence.NewArray(fs, fence.AllocContexts(1), 1, true)
	a.EnableSignaling() // queues a callback on both
	require.NoError(t, fs[0].Signal())
	require.True(t, a.IsSignaled())
}

// Arrays and chains record when they signal, as dma_fence_signal() stamps every
// fence, whether their fences keep timestamps or not; before the fix their
// contexts kept none.
func TestArrayAndChainSignalWithATimestamp(t *testing.T) {
	ctx := mockContext(t)
	for name, mk := range map[string]func(*fence.Fence) *fence.Fence{
		"array": func(f *fence.Fence) *fence.Fence {
			return &fence.NewArray([]*fence.Fence{f}, fence.AllocContexts(1), 1, false).Fence
		},
		"chain":   func(f *fence.Fence) *fence.Fence { return &fence.NewChain(nil, f, 1).Fence },
		"polled":  func(f *fence.Fence) *fence.Fence { return &fence.NewChain(nil, f, 1).Fence },
		"created": func(*fence.Fence) *fence.Fence { return &fence.NewArray(nil, fence.AllocContexts(1), 1, false).Fence },
	} {
		t.Run(name, func(t *testing.T) {
			f := ctx.Next()
			c := mk(f)
			if name != "polled" {
				c.EnableSignaling()
			}
			before := time.Now()
			require.NoError(t, f.Signal())
			require.True(t, c.IsSignaled())
			ts, ok := c.Timestamp()
			require.True(t, ok, "a signalled %s has a timestamp", name)
			if name != "created" {
				require.False(t, ts.Before(before), "stamped when it signalled")
			}
		})
	}
}

// A second EnableSignaling returns only once the first caller's hook has run, as
// dma_fence_enable_sw_signaling() waits for the fence lock the hook runs under.
// Before the fix it returned on seeing the enable flag, which is set before the
// hook runs. The hook yields many times while the second call is under way, so
// that without the fix the second call returns within it.
func TestEnableSignalingWaitsForAnotherCallersHook(t *testing.T) {
	inHook, calling := make(chan struct{}), make(chan struct{})
	var hookDone atomic.Bool
	ctx := mockContext(t, fence.WithOps(&fence.Ops{EnableSignaling: func(*fence.Fence) bool {
		close(inHook)
		<-calling
		for range 1000 {
			runtime.Gosched()
		}
		hookDone.Store(true)
		return true
	}}))
	f := ctx.Next()
	var wg sync.WaitGroup
	wg.Go(f.EnableSignaling)
	var sawDone bool
	wg.Go(func() {
		<-inHook
		close(calling)
		f.EnableSignaling()
		sawDone = hookDone.Load()
	})
	wg.Wait()
	require.True(t, sawDone, "the second EnableSignaling returned while the hook ran")
	require.NoError(t, f.Signal())
}

// WaitAny with a context already done only polls, as
// dma_fence_wait_any_timeout() with a zero timeout does: it enables signalling on
// no fence. Before the fix it queued a callback on each, enabling them all.
func TestWaitAnyWithAnExpiredContextOnlyPolls(t *testing.T) {
	var enabled, polled atomic.Int32
	ctx := mockContext(t, fence.WithOps(&fence.Ops{
		EnableSignaling: func(*fence.Fence) bool { enabled.Add(1); return true },
		Signaled:        func(*fence.Fence) bool { polled.Add(1); return false },
	}))
	f1, f2 := ctx.Next(), ctx.Next()
	i, err := fence.WaitAny(expired(t), f1, f2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, -1, i)
	require.EqualValues(t, 2, polled.Load(), "each fence is polled")
	require.Zero(t, enabled.Load(), "no fence has signalling enabled")
	signalAll(f1, f2)
}

// A sw_sync point keeps the earliest deadline set on it, and the timeline reports
// it, as timeline_fence_set_deadline() and SW_SYNC_IOC_GET_DEADLINE do: ErrNoEntry
// before any is set, ErrInvalid for a fence that is not a sw_sync point. A
// deadline set after the point signalled is not passed on.
func TestTimelinePointKeepsTheEarliestDeadline(t *testing.T) {
	tl := fence.NewTimeline("deadline", fence.WithChecker(lockdeptest.New(t)))
	p := tl.Point(1)
	_, err := tl.Deadline(p)
	require.ErrorIs(t, err, fence.ErrNoEntry, "no deadline set yet")

	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	p.SetDeadline(base.Add(2 * time.Millisecond))
	p.SetDeadline(base.Add(time.Millisecond))
	p.SetDeadline(base.Add(3 * time.Millisecond))
	got, err := tl.Deadline(p)
	require.NoError(t, err)
	require.True(t, base.Add(time.Millisecond).Equal(got), "the earliest is kept, got %v", got)

	tl.Inc(1)
	p.SetDeadline(base)
	got, err = tl.Deadline(p)
	require.NoError(t, err)
	require.True(t, base.Add(time.Millisecond).Equal(got), "a signalled point takes no deadline")

	_, err = tl.Deadline(mockFence(t))
	require.ErrorIs(t, err, fence.ErrInvalid)
	_, err = tl.Deadline(nil)
	require.ErrorIs(t, err, fence.ErrInvalid)
}

// Walks over one chain racing its payloads' signals (as find_race does) unlink
// signalled points, moving references as they go, while other walks do the same:
// each walk unlinks only from a point it holds a reference on, so when the head is
// dropped every payload is released exactly once. Without that reference a point
// could be released between a walk's check and its unlink, and the release and
// the walk both dropped its predecessor (one payload released early, another
// never).
func TestChainConcurrentWalksKeepReferencesBalanced(t *testing.T) {
	chk := lockdeptest.New(t)
	const n = 8
	bad := 0
	for iter := range 20_000 {
		var rel [n]atomic.Int32
		ctx := fence.NewContext("t", "p", fence.WithChecker(chk), fence.WithOps(&fence.Ops{
			Release: func(f *fence.Fence) { rel[f.Seqno()-1].Add(1) }}))
		var prev *fence.Fence
		var ps [n]*fence.Fence
		var head *fence.Chain
		for i := range n {
			ps[i] = ctx.New(uint64(i + 1))
			head = fence.NewChain(prev, ps[i], uint64(i+1)) // chain owns payload and prev
			prev = &head.Fence
		}
		var wg sync.WaitGroup
		var start atomic.Bool
		for w := range 4 {
			wg.Go(func() {
				for !start.Load() {
					runtime.Gosched()
				}
				for k := range 30 {
					_, _ = head.FindSeqno(uint64((w+k)%n + 1))
				}
			})
		}
		wg.Go(func() {
			start.Store(true)
			for i := range n {
				_ = ps[i].Signal()
				runtime.Gosched()
			}
		})
		wg.Wait()
		head.Put()
		for i := range n {
			if c := rel[i].Load(); c != 1 {
				bad++
				if bad < 5 {
					t.Errorf("iter %d: payload %d released %d times", iter, i+1, c)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d bad payload release counts", bad)
	}
}

// Every Point result is the caller's own reference, also when it is a pending
// point returned again, as sync_pt_create() takes one with dma_fence_get_rcu():
// two callers that each hand theirs to a container (which takes it over) put two
// references, not one twice, and the point stays pending until the counter
// reaches it.
func TestTimelinePointReturnedAgainHasItsOwnReference(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	tl := fence.NewTimeline("tl", fence.WithChecker(chk))
	p, q := tl.Point(5), tl.Point(5)
	require.Same(t, p, q)
	a1 := fence.NewArray([]*fence.Fence{p}, fence.AllocContexts(1), 1, false)
	a2 := fence.NewArray([]*fence.Fence{q}, fence.AllocContexts(1), 1, false)
	a2.EnableSignaling()
	a1.Put()
	lockdeptest.RequireClean(t, col)
	require.False(t, p.IsSignaled(), "the point signalled with the counter at 0")
	tl.Inc(5)
	require.True(t, a2.IsSignaled())
	require.NoError(t, a2.Error())
}

// parkingPayloads makes a chain c1(q1) <- c2(p2), p2 signalled, that owns its
// payloads, where q1's Signaled hook parks the n-th poll after park is called, so
// that a test can release c1 and q1 behind the polling walker's back. released
// counts q1's Release hook.
func parkingPayloads(t *testing.T, n int32) (q1 *fence.Fence, c2 *fence.Chain, park func() (parked, resume chan struct{}), released *atomic.Int32) {
	chk := lockdeptest.New(t)
	released = new(atomic.Int32)
	var polls atomic.Int32 // counts down to the poll that parks; 0: disarmed
	parked, resume := make(chan struct{}), make(chan struct{})
	qctx := fence.NewContext("test", "q", fence.WithChecker(chk), fence.WithOps(&fence.Ops{
		Signaled: func(*fence.Fence) bool {
			if polls.Load() > 0 && polls.Add(-1) == 0 {
				parked <- struct{}{}
				<-resume
			}
			return false
		},
		Release: func(*fence.Fence) { released.Add(1) },
	}))
	q1 = qctx.Next()
	p2 := fence.NewContext("test", "p", fence.WithChecker(chk)).Next()
	c1 := fence.NewChain(nil, q1, 1)
	c2 = fence.NewChain(&c1.Fence, p2, 2)
	require.NoError(t, p2.Signal())
	return q1, c2, func() (chan struct{}, chan struct{}) { polls.Store(n); return parked, resume }, released
}

// A walk holds no reference on the points it returns, so a payload it found
// pending may be released (its point unlinked and dropped) before the caller
// takes a reference. Arming a chain and Merge then take it with TryGet, as the
// kernel takes dma_fence_get_rcu(), and leave a released payload out instead of
// bringing it back: q1's Release hook runs exactly once.
func TestWalkersDoNotBringBackAReleasedPayload(t *testing.T) {
	for _, tc := range []struct {
		name string
		poll int32                              // which poll of q1 parks: the one right before the reference is taken
		walk func(c2 *fence.Chain) *fence.Fence // returns a reference the test puts, or nil
	}{
		{"arming", 1, func(c2 *fence.Chain) *fence.Fence { c2.EnableSignaling(); return nil }},
		{"Merge", 2, func(c2 *fence.Chain) *fence.Fence { return fence.Merge(&c2.Fence) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q1, c2, park, released := parkingPayloads(t, tc.poll)
			parked, resume := park()
			got := make(chan *fence.Fence)
			go func() { got <- tc.walk(c2) }()
			<-parked // the walk found q1 pending and is about to take it
			require.NoError(t, q1.Signal())
			_, err := c2.FindSeqno(1) // unlinks c1, whose release puts q1's last reference
			require.NoError(t, err)
			require.Equal(t, int32(1), released.Load())
			close(resume)
			if f := <-got; f != nil {
				require.True(t, f.IsSignaled(), "a merge of signalled fences")
				f.Put()
			}
			require.Equal(t, int32(1), released.Load(), "q1 was brought back and released again")
			c2.Put()
			require.Equal(t, int32(1), released.Load())
		})
	}
}

// A chain whose older point carries an Array sharing a fence x with the newer
// point's payload: enabling the Array holds its lock while it waits for x's, and
// signalling x runs the chain's callback under x's lock. Whatever the re-arm does
// there can wait for the Array's lock: queueing on the Array (signal-on-all), or
// the walk polling the Array and, finding it complete, signalling it
// (signal-on-any, y already signalled). The callback therefore hands the re-arm to
// a goroutine of its own, as the kernel's dma_fence_chain_cb hands it to irq_work,
// and the two never wait for each other. The interleaving that deadlocked (x's
// lock going to its signaller while the enabling side waits for it) depends on
// the scheduler, so each case is tried many times; x's EnableSignaling hook holds
// x's lock while both sides line up behind it.
func TestChainRearmAndArrayEnableDoNotDeadlock(t *testing.T) {
	for _, tc := range []struct {
		name string
		any  bool // the Array signals on any fence; y signals before x
	}{{"re-arm queues on the array", false}, {"re-arm's walk completes the array", true}} {
		t.Run(tc.name, func(t *testing.T) {
			for attempt := range 40 {
				chk := lockdeptest.New(t)
				var park atomic.Bool
				parked, resume := make(chan struct{}), make(chan struct{})
				x := fence.NewContext("test", "x", fence.WithChecker(chk), fence.WithOps(&fence.Ops{
					EnableSignaling: func(*fence.Fence) bool {
						if park.CompareAndSwap(true, false) {
							parked <- struct{}{}
							<-resume
						}
						return true
					}})).Next()
				yQueued := make(chan struct{})
				var once sync.Once
				y := fence.NewContext("test", "y", fence.WithChecker(chk), fence.WithOps(&fence.Ops{
					EnableSignaling: func(*fence.Fence) bool {
						once.Do(func() { close(yQueued) })
						return true
					}})).Next()
				a := fence.NewArray([]*fence.Fence{y.Get(), x.Get()}, fence.AllocContexts(1), 1, tc.any)
				c1 := fence.NewChain(nil, &a.Fence, 1)
				c2 := fence.NewChain(&c1.Fence, x.Get(), 2)
				park.Store(true)
				var wg sync.WaitGroup
				wg.Go(func() { c2.EnableSignaling() }) // c2's lock, then x's: parks in x's hook
				<-parked
				wg.Go(func() { a.EnableSignaling() }) // A's lock, queues on y, then waits for x's
				<-yQueued
				if tc.any {
					require.NoError(t, y.Signal()) // A's count reaches zero; its enabler will signal it
				}
				wg.Go(func() { assert.NoError(t, x.Signal()) }) // waits for x's lock, then runs c2's callback
				for range 1000 {
					runtime.Gosched() // let both line up behind x's lock
				}
				close(resume)
				// A hang guard only: a deadlock spins both sides forever.
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatalf("attempt %d: deadlock between the chain's re-arm and the array's enabling", attempt)
				}
				if !tc.any {
					require.NoError(t, y.Signal())
				}
				require.NoError(t, c2.Wait(context.Background()))
				require.True(t, c1.IsSignaled())
				c2.Put()
				x.Put()
				y.Put()
			}
		})
	}
}

var rearmHookClass = lockdep.NewClass("test.rearm.hook")

// The chain's re-arm, started by a payload's signal, is part of that signalling
// path even though it runs in a goroutine of its own (the kernel's irq_work):
// a hook it reaches that takes a lock held across a fence wait is a signalling
// deadlock, whether it is the next payload's EnableSignaling or a Signaled poll.
func TestChainRearmRunsInASignallingSection(t *testing.T) {
	for _, hook := range []string{"EnableSignaling", "Signaled"} {
		t.Run(hook, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				chk, col := lockdeptest.Collect(t)
				m := &lockdep.Mutex{Class: rearmHookClass, Checker: chk}
				m.Lock()
				chk.MightWaitFence() // m is held across a fence wait elsewhere
				m.Unlock()

				var armed atomic.Bool // take m only in the re-arm, not in the test's own calls
				takeM := func() {
					if armed.Load() {
						m.Lock()
						m.Unlock()
					}
				}
				ops := &fence.Ops{}
				if hook == "EnableSignaling" {
					ops.EnableSignaling = func(*fence.Fence) bool { takeM(); return true }
				} else {
					ops.Signaled = func(*fence.Fence) bool { takeM(); return false }
				}
				p1 := fence.NewContext("test", "p1", fence.WithChecker(chk), fence.WithOps(ops)).Next()
				p2 := fence.NewContext("test", "p2", fence.WithChecker(chk)).Next()
				c1 := fence.NewChain(nil, p1.Get(), 1)
				c2 := fence.NewChain(&c1.Fence, p2.Get(), 2)
				c2.EnableSignaling() // queues on p2, its own payload
				armed.Store(true)
				require.NoError(t, p2.Signal())
				synctest.Wait() // the re-arm has walked to p1
				armed.Store(false)
				lockdeptest.RequireKinds(t, col, lockdep.KindSignallingDeadlock)
				require.NoError(t, p1.Signal())
				synctest.Wait()
				require.True(t, c2.IsSignaled())
			})
		})
	}
}
