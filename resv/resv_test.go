package resv_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
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
	"github.com/gpusync/gpusync/resv"
)

// The reservation object's contract (dma_resv): AddFence's replace and slot rules,
// usages, ReplaceFences, the bulk helpers, and the lock-free readers racing with
// writers.

// allUsages lists the usages from the strongest to the weakest.
var allUsages = [...]resv.Usage{resv.Kernel, resv.Write, resv.Read, resv.Bookkeep}

// perUsage runs fn once per usage, as st-dma-resv.c runs each of its tests.
func perUsage(t *testing.T, fn func(t *testing.T, u resv.Usage)) {
	for _, u := range allUsages {
		t.Run(u.String(), func(t *testing.T) { fn(t, u) })
	}
}

// newTimeline returns a fresh fence context reporting to chk.
func newTimeline(chk *lockdep.Checker, opts ...fence.ContextOption) *fence.Context {
	return fence.NewContext("resvtest", "ring", append([]fence.ContextOption{fence.WithChecker(chk)}, opts...)...)
}

// An entry is one fence of a reservation object with its usage.
type entry struct {
	f *fence.Fence
	u resv.Usage
}

func (e entry) String() string { return fmt.Sprintf("{%v %v}", e.f, e.u) }

// requireSameSlice fails unless got holds exactly want's elements, in order,
// compared with == (fences and objects by identity, not by content).
func requireSameSlice[T comparable](t *testing.T, want, got []T, msgAndArgs ...any) {
	t.Helper()
	if !slices.Equal(want, got) {
		require.Fail(t, fmt.Sprintf("not the same elements:\n got: %v\nwant: %v", got, want), msgAndArgs...)
	}
}

// lockedEntries returns o's entries in slot order, by the locked iteration, which
// includes signalled fences. The caller holds o's lock.
func lockedEntries(o *resv.Object) []entry {
	var out []entry
	for f, u := range o.Fences(resv.Bookkeep) {
		out = append(out, entry{f, u})
	}
	return out
}

// lockedObject returns an object reporting to chk, locked without an acquire
// context; the test unlocks it when it ends.
func lockedObject(t *testing.T, chk *lockdep.Checker) *resv.Object {
	t.Helper()
	o := resv.NewObject(chk)
	require.NoError(t, o.Lock(context.Background(), nil))
	t.Cleanup(func() {
		if o.IsLocked() {
			o.Unlock()
		}
	})
	return o
}

// addAll reserves a slot for each entry and adds them in order. o is locked.
func addAll(t *testing.T, o *resv.Object, es ...entry) {
	t.Helper()
	require.NoError(t, o.Reserve(len(es)))
	for _, e := range es {
		require.NoError(t, o.AddFence(e.f, e.u))
	}
}

// AddFence overwrites the first entry of the same context whose usage is the same
// or weaker and whose fence is not later, or the first signalled entry of any
// context, in place and without using a reserved slot; anything else appends,
// which needs a slot (ErrNoSlot without one, the object unchanged).
func TestAddFenceReplaceRule(t *testing.T) {
	const (
		later = iota
		same
		earlier
		other
	)
	for _, tc := range []struct {
		name       string
		oldU, newU resv.Usage
		rel        int
		signalOld  bool
		inPlace    bool
	}{
		{"same context later fence same usage", resv.Write, resv.Write, later, false, true},
		{"same context later fence stronger usage", resv.Read, resv.Kernel, later, false, true},
		{"same context later fence weaker usage", resv.Write, resv.Read, later, false, false},
		{"same fence again", resv.Read, resv.Read, same, false, true},
		{"same fence stronger usage", resv.Bookkeep, resv.Write, same, false, true},
		{"same fence weaker usage", resv.Write, resv.Bookkeep, same, false, false},
		{"same context earlier fence", resv.Write, resv.Write, earlier, false, false},
		{"other context", resv.Write, resv.Write, other, false, false},
		{"other context old signalled", resv.Kernel, resv.Bookkeep, other, true, true},
		{"same context weaker usage old signalled", resv.Kernel, resv.Bookkeep, later, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chk := lockdeptest.New(t)
			o := lockedObject(t, chk)
			tl := newTimeline(chk)
			early, old, late := tl.New(1), tl.New(2), tl.New(3)
			nf := map[int]*fence.Fence{later: late, same: old, earlier: early, other: newTimeline(chk).New(9)}[tc.rel]
			addAll(t, o, entry{old, tc.oldU}) // uses the one reserved slot
			if tc.signalOld {
				require.NoError(t, old.Signal())
			}
			err := o.AddFence(nf, tc.newU)
			if tc.inPlace {
				require.NoError(t, err)
				requireSameSlice(t, []entry{{nf, tc.newU}}, lockedEntries(o))
				return
			}
			require.ErrorIs(t, err, resv.ErrNoSlot, "appending needs a reserved slot")
			requireSameSlice(t, []entry{{old, tc.oldU}}, lockedEntries(o), "unchanged")
			require.NoError(t, o.Reserve(1))
			require.NoError(t, o.AddFence(nf, tc.newU))
			requireSameSlice(t, []entry{{old, tc.oldU}, {nf, tc.newU}}, lockedEntries(o))
		})
	}
}

// The first recyclable entry is the one overwritten, and slot order is kept.
func TestAddFenceRecyclesFirstSignalled(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	a, b, c, d := newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next()
	addAll(t, o, entry{a, resv.Write}, entry{b, resv.Read}, entry{c, resv.Read})
	require.NoError(t, c.Signal())
	require.NoError(t, b.Signal())
	require.NoError(t, o.AddFence(d, resv.Bookkeep))
	requireSameSlice(t, []entry{{a, resv.Write}, {d, resv.Bookkeep}, {c, resv.Read}}, lockedEntries(o))
}

// Reserve: zero (or fewer) slots is an error; n slots allow exactly n appends
// from now, though the list has room for 4 (the model is stricter than the kernel,
// which appends up to the list's capacity), not n more than an earlier
// reservation (the kernel's reservations do not add up); the reservation lapses at
// Unlock.
func TestReserve(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	next := func() *fence.Fence { return newTimeline(chk).Next() }

	require.ErrorIs(t, o.Reserve(0), resv.ErrInvalid)
	require.ErrorIs(t, o.Reserve(-1), resv.ErrInvalid)
	require.ErrorIs(t, o.AddFence(next(), resv.Write), resv.ErrNoSlot, "nothing was reserved")

	require.NoError(t, o.Reserve(2))
	require.NoError(t, o.Reserve(1), "within the earlier reservation: no-op")
	require.NoError(t, o.AddFence(next(), resv.Write))
	require.NoError(t, o.AddFence(next(), resv.Write))
	require.ErrorIs(t, o.AddFence(next(), resv.Write), resv.ErrNoSlot)

	require.NoError(t, o.Reserve(3))
	o.Unlock()
	require.NoError(t, o.Lock(ctx, nil))
	require.ErrorIs(t, o.AddFence(next(), resv.Write), resv.ErrNoSlot, "the reservation lapsed at Unlock")
	require.Len(t, lockedEntries(o), 2)
}

// A Reserve that needs a bigger list drops the signalled entries, keeping the
// order of the others.
func TestReserveDropsSignalled(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	a, b, c := newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next()
	addAll(t, o, entry{a, resv.Kernel}, entry{b, resv.Write}, entry{c, resv.Read}) // a list of 4
	require.NoError(t, b.Signal())
	require.NoError(t, o.Reserve(8)) // 3+8 > 4: a new list
	requireSameSlice(t, []entry{{a, resv.Kernel}, {c, resv.Read}}, lockedEntries(o))
}

// The first Reserve after an Unlock makes a new list even though the old one has
// room, as a CONFIG_DEBUG_MUTEXES kernel's does (dma_resv_unlock cut max_fences to
// the number of fences): the signalled entries are dropped and a lock-free reader
// walking the old list restarts. Within one critical section a Reserve that fits
// keeps the list.
func TestReserveAfterUnlockMakesNewList(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	a, b := newTimeline(chk).Next(), newTimeline(chk).Next()
	addAll(t, o, entry{a, resv.Write}, entry{b, resv.Read}) // a list of 4
	it := o.Iter(resv.Bookkeep)
	require.Same(t, a, it.Next())
	require.NoError(t, o.Reserve(1)) // 2+1 <= 4: the same list
	require.Same(t, b, it.Next())
	require.False(t, it.IsRestarted())

	require.NoError(t, b.Signal())
	o.Unlock()
	require.NoError(t, o.Lock(ctx, nil))
	it = o.Iter(resv.Bookkeep)
	require.Same(t, a, it.Next())
	require.NoError(t, o.Reserve(1)) // would fit the old list: a new one all the same
	requireSameSlice(t, []entry{{a, resv.Write}}, lockedEntries(o), "the signalled entry is dropped")
	require.Same(t, a, it.Next(), "the reader restarts on the new list")
	require.True(t, it.IsRestarted())
	require.Nil(t, it.Next())
}

// Changes need the lock: without it they fail with ErrNotLocked and change
// nothing (misuse is an error). The locked iteration without the lock is a
// lockdep report, as dma_resv_iter_first's dma_resv_assert_held() splats, and it
// iterates all the same, as the kernel's does.
func TestNotLocked(t *testing.T) {
	ctx := context.Background()
	chk, col := lockdeptest.Collect(t)
	o, src := resv.NewObject(chk), resv.NewObject(chk)
	f := newTimeline(chk).Next()
	require.NoError(t, o.Lock(ctx, nil))
	addAll(t, o, entry{f, resv.Write})
	o.Unlock()

	g := newTimeline(chk).Next()
	require.ErrorIs(t, o.Reserve(1), resv.ErrNotLocked)
	require.ErrorIs(t, o.AddFence(g, resv.Write), resv.ErrNotLocked)
	require.ErrorIs(t, o.ReplaceFences(f.Context().ID(), g, resv.Write), resv.ErrNotLocked)
	require.ErrorIs(t, resv.CopyFences(o, src), resv.ErrNotLocked)
	lockdeptest.RequireClean(t, col)
	requireSameSlice(t, []entry{{f, resv.Write}}, lockedEntries(o), "iterates all the same")
	lockdeptest.RequireKinds(t, col, lockdep.KindAssert)
	requireSameSlice(t, []*fence.Fence{f}, o.GetFences(resv.Bookkeep), "unchanged")
}

// A long-running fence is refused, with ErrLongRunning and a lockdep report, by
// AddFence and by ReplaceFences; the object is unchanged. (ReportAll: the two
// refusals are the same problem, which lockdep otherwise reports once.)
func TestLongRunningFenceRefused(t *testing.T) {
	chk, col := lockdeptest.Collect(t, lockdep.ReportAll())
	o := lockedObject(t, chk)
	f := newTimeline(chk).Next()
	addAll(t, o, entry{f, resv.Write})
	require.NoError(t, o.Reserve(1))
	lr := newTimeline(chk, fence.LongRunning()).Next()

	require.ErrorIs(t, o.AddFence(lr, resv.Bookkeep), resv.ErrLongRunning)
	lockdeptest.RequireKinds(t, col, lockdep.KindLRFenceInReservation)
	requireSameSlice(t, []entry{{f, resv.Write}}, lockedEntries(o))

	col.Reset()
	require.ErrorIs(t, o.ReplaceFences(f.Context().ID(), lr, resv.Bookkeep), resv.ErrLongRunning)
	lockdeptest.RequireKinds(t, col, lockdep.KindLRFenceInReservation)
	requireSameSlice(t, []entry{{f, resv.Write}}, lockedEntries(o))

	g := newTimeline(chk).Next()
	require.NoError(t, o.AddFence(g, resv.Read), "the reserved slot is still there")
}

// Containers are refused: their leaves are added instead.
func TestContainerFenceRefused(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	require.NoError(t, o.Reserve(1))
	f1, f2 := newTimeline(chk).Next(), newTimeline(chk).Next()
	array := fence.NewArray([]*fence.Fence{f1, f2}, fence.AllocContexts(1), 1, false)
	chain := fence.NewChain(nil, f1, 1)
	// No subtests: the lock belongs to this goroutine.
	for name, c := range map[string]*fence.Fence{"array": &array.Fence, "chain": &chain.Fence} {
		err := o.AddFence(c, resv.Write)
		require.ErrorIs(t, err, resv.ErrContainer, name)
		require.ErrorIs(t, err, resv.ErrInvalid, name)
		require.Empty(t, lockedEntries(o), name)
	}
	require.ErrorIs(t, o.AddFence(nil, resv.Write), resv.ErrInvalid)
	require.ErrorIs(t, o.AddFence(f1, resv.Bookkeep+1), resv.ErrInvalid)
	require.NoError(t, o.AddFence(f1, resv.Write), "the slot is still reserved")
}

// Asking for a usage yields that usage and every stronger one: Read yields
// Kernel, Write and Read fences but not Bookkeep ones.
func TestUsageOrdering(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	var all []entry
	for _, u := range []resv.Usage{resv.Bookkeep, resv.Read, resv.Write, resv.Kernel} {
		all = append(all, entry{newTimeline(chk).Next(), u})
	}
	addAll(t, o, all...)
	for _, tc := range []struct {
		q    resv.Usage
		want []entry
	}{
		{resv.Kernel, all[3:]},
		{resv.Write, all[2:]},
		{resv.Read, all[1:]},
		{resv.Bookkeep, all},
	} {
		// No subtests: the lock belongs to this goroutine.
		var locked []entry
		for f, u := range o.Fences(tc.q) {
			locked = append(locked, entry{f, u})
		}
		requireSameSlice(t, tc.want, locked, "Fences(%v)", tc.q)
		var fs []*fence.Fence
		for _, e := range tc.want {
			fs = append(fs, e.f)
		}
		requireSameSlice(t, fs, o.GetFences(tc.q), "GetFences(%v)", tc.q)
		require.False(t, o.TestSignaled(tc.q), "TestSignaled(%v)", tc.q)
	}
}

func TestUsageRW(t *testing.T) {
	require.Equal(t, resv.Read, resv.UsageRW(true), "a writer waits for readers and writers")
	require.Equal(t, resv.Write, resv.UsageRW(false), "a reader waits for writers")
}

func TestUsageString(t *testing.T) {
	for u, want := range map[resv.Usage]string{
		resv.Kernel: "kernel", resv.Write: "write", resv.Read: "read", resv.Bookkeep: "bookkeep", 4: "invalid",
	} {
		require.Equal(t, want, u.String())
	}
}

// ReplaceFences replaces every entry of a context, whatever its usage and
// without a reservation, and the new usage may be weaker or stronger.
func TestReplaceFences(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	c, other, pt := newTimeline(chk), newTimeline(chk), newTimeline(chk)
	a1, b, a2 := c.New(1), other.Next(), c.New(2)
	addAll(t, o, entry{a1, resv.Write}, entry{b, resv.Read}, entry{a2, resv.Bookkeep})
	o.Unlock()
	require.NoError(t, o.Lock(ctx, nil)) // nothing reserved now

	r1 := pt.Next()
	require.NoError(t, o.ReplaceFences(c.ID(), r1, resv.Bookkeep)) // weaker
	requireSameSlice(t, []entry{{r1, resv.Bookkeep}, {b, resv.Read}, {r1, resv.Bookkeep}}, lockedEntries(o))

	r2 := pt.Next()
	require.NoError(t, o.ReplaceFences(pt.ID(), r2, resv.Kernel)) // stronger
	requireSameSlice(t, []entry{{r2, resv.Kernel}, {b, resv.Read}, {r2, resv.Kernel}}, lockedEntries(o))

	require.NoError(t, o.ReplaceFences(c.ID(), pt.Next(), resv.Read), "no entry of that context: nothing to do")
	requireSameSlice(t, []entry{{r2, resv.Kernel}, {b, resv.Read}, {r2, resv.Kernel}}, lockedEntries(o))
	require.ErrorIs(t, o.AddFence(c.Next(), resv.Read), resv.ErrNoSlot, "replacing reserved nothing")
}

// ReplaceFences accepts a container (array or chain) as the replacement:
// dma_resv_replace_fences has no container check, only dma_resv_add_fence warns.
// nil is still refused.
func TestReplaceFencesAcceptsContainer(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	c := newTimeline(chk)
	f := c.Next()
	addAll(t, o, entry{f, resv.Bookkeep})
	f1, f2 := newTimeline(chk).Next(), newTimeline(chk).Next()
	array := fence.NewArray([]*fence.Fence{f1, f2}, fence.AllocContexts(1), 1, false)
	chain := fence.NewChain(nil, f1, 1)

	require.NoError(t, o.ReplaceFences(c.ID(), &array.Fence, resv.Bookkeep))
	requireSameSlice(t, []entry{{&array.Fence, resv.Bookkeep}}, lockedEntries(o))
	require.NoError(t, o.ReplaceFences(array.Context().ID(), &chain.Fence, resv.Write))
	requireSameSlice(t, []entry{{&chain.Fence, resv.Write}}, lockedEntries(o))
	require.ErrorIs(t, o.ReplaceFences(chain.Context().ID(), nil, resv.Write), resv.ErrInvalid)
	requireSameSlice(t, []entry{{&chain.Fence, resv.Write}}, lockedEntries(o))
}

// GetSingleton: nil for no fence, the fence itself for one, and for several an
// array that signals when they all have.
func TestGetSingleton(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	require.Nil(t, o.GetSingleton(resv.Bookkeep))

	w, r, bk, done := newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next()
	addAll(t, o, entry{done, resv.Kernel}, entry{w, resv.Write}, entry{r, resv.Read}, entry{bk, resv.Bookkeep})
	require.NoError(t, done.Signal())
	require.Nil(t, o.GetSingleton(resv.Kernel), "signalled fences do not count")
	require.Same(t, w, o.GetSingleton(resv.Write))

	s := o.GetSingleton(resv.Read)
	arr := fence.AsArray(s)
	require.NotNil(t, arr, "several fences: an array")
	requireSameSlice(t, []*fence.Fence{w, r}, arr.Fences())
	require.False(t, s.IsSignaled())
	require.NoError(t, w.Signal())
	require.False(t, s.IsSignaled())
	require.NoError(t, r.Signal())
	require.True(t, s.IsSignaled())
	require.ErrorIs(t, o.AddFence(s, resv.Read), resv.ErrContainer, "never re-added")
}

// What GetSingleton returns is the caller's reference, a single fence or an array
// holding its own reference on each fence: putting it, as a kernel caller puts
// what dma_resv_get_singleton returned, releases none of the fences still in the
// object, and a fence someone waits on is not reported as leaked.
func TestGetSingletonArrayPutReleasesNoFenceOfTheObject(t *testing.T) {
	chk := lockdeptest.New(t) // fails the test on any report
	o := lockedObject(t, chk)
	var released atomic.Int32
	ops := &fence.Ops{Release: func(*fence.Fence) { released.Add(1) }}
	w := fence.NewContext("test", "w", fence.WithChecker(chk), fence.WithOps(ops)).Next()
	r := fence.NewContext("test", "r", fence.WithChecker(chk), fence.WithOps(ops)).Next()
	addAll(t, o, entry{w, resv.Write}, entry{r, resv.Read})
	var cb fence.Callback
	require.NoError(t, w.AddCallback(&cb, func(*fence.Fence, *fence.Callback) {}))

	one := o.GetSingleton(resv.Write) // one fence: itself, with a reference of the caller's
	require.Same(t, w, one)
	one.Put()
	require.Zero(t, released.Load(), "putting the single fence dropped a reference GetSingleton never took")

	s := o.GetSingleton(resv.Read)
	require.NotNil(t, fence.AsArray(s))
	s.Put()
	require.Zero(t, released.Load(), "the array's release dropped references it never took")
	require.False(t, w.IsSignaled())
	require.NoError(t, w.Signal())
	require.NoError(t, r.Signal())
}

// The object holds no reference on its fences, so its owner's Put can release a
// fence that is still in it. GetSingleton takes its references with TryGet and
// leaves such a fence out rather than bringing it back: its Release hook runs once.
func TestGetSingletonLeavesOutAReleasedFence(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	var released atomic.Int32
	ops := &fence.Ops{Release: func(*fence.Fence) { released.Add(1) }}
	gone := fence.NewContext("test", "gone", fence.WithChecker(chk), fence.WithOps(ops)).Next()
	kept := fence.NewContext("test", "kept", fence.WithChecker(chk), fence.WithOps(ops)).Next()
	addAll(t, o, entry{gone, resv.Write}, entry{kept, resv.Read})
	gone.Put() // its owner's, the last
	require.Equal(t, int32(1), released.Load())

	s := o.GetSingleton(resv.Read)
	require.Same(t, kept, s, "the released fence is left out")
	s.Put()
	require.Equal(t, int32(1), released.Load(), "a released fence was brought back and released again")
	require.Nil(t, o.GetSingleton(resv.Write))
	require.Equal(t, int32(1), released.Load())
}

// CopyFences replaces dst's fences with src's unsignalled ones, usages and order
// kept, without locking src; src is unchanged.
func TestCopyFences(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	src := resv.NewObject(chk)
	k, w, r, bk := newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next(), newTimeline(chk).Next()
	srcEntries := []entry{{k, resv.Kernel}, {w, resv.Write}, {r, resv.Read}, {bk, resv.Bookkeep}}
	require.NoError(t, src.Lock(ctx, nil))
	addAll(t, src, srcEntries...)
	src.Unlock()
	require.NoError(t, w.Signal())

	dst := lockedObject(t, chk)
	old := newTimeline(chk).Next()
	addAll(t, dst, entry{old, resv.Write})
	require.NoError(t, resv.CopyFences(dst, src))
	requireSameSlice(t, []entry{{k, resv.Kernel}, {r, resv.Read}, {bk, resv.Bookkeep}}, lockedEntries(dst))
	require.ErrorIs(t, dst.AddFence(newTimeline(chk).Next(), resv.Read), resv.ErrNoSlot, "the copy reserves nothing")
	dst.Unlock()

	require.NoError(t, src.Lock(ctx, nil))
	requireSameSlice(t, srcEntries, lockedEntries(src), "src unchanged")
	src.Unlock()
}

// Wait waits for the fences of the usage and the stronger ones, and gives up at
// the context's deadline: virtual time in a synctest bubble, so exact and instant.
func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		o := resv.NewObject(chk)
		w, bk := newTimeline(chk).Next(), newTimeline(chk).Next()
		require.NoError(t, o.Lock(context.Background(), nil))
		addAll(t, o, entry{w, resv.Write}, entry{bk, resv.Bookkeep})
		o.Unlock()

		wait := func(u resv.Usage) (time.Duration, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			err := o.Wait(ctx, u)
			return time.Since(start), err
		}

		took, err := wait(resv.Read)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, time.Second, took)

		time.AfterFunc(300*time.Millisecond, func() { assert.NoError(t, w.Signal()) })
		took, err = wait(resv.Read)
		require.NoError(t, err, "the bookkeeping fence is not waited for")
		require.Equal(t, 300*time.Millisecond, took)

		took, err = wait(resv.Bookkeep)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Equal(t, time.Second, took)

		require.NoError(t, bk.Signal())
		took, err = wait(resv.Bookkeep)
		require.NoError(t, err)
		require.Zero(t, took)
	})
}

// TestSignaled(u) is true when every fence of usage u or stronger has signalled.
func TestTestSignaled(t *testing.T) {
	chk := lockdeptest.New(t)
	o := lockedObject(t, chk)
	w, bk := newTimeline(chk).Next(), newTimeline(chk).Next()
	addAll(t, o, entry{w, resv.Write}, entry{bk, resv.Bookkeep})
	check := func(want map[resv.Usage]bool) {
		t.Helper()
		for u, sig := range want {
			require.Equal(t, sig, o.TestSignaled(u), "TestSignaled(%v)", u)
		}
	}
	check(map[resv.Usage]bool{resv.Kernel: true, resv.Write: false, resv.Read: false, resv.Bookkeep: false})
	require.NoError(t, w.Signal())
	check(map[resv.Usage]bool{resv.Kernel: true, resv.Write: true, resv.Read: true, resv.Bookkeep: false})
	require.NoError(t, bk.Signal())
	check(map[resv.Usage]bool{resv.Kernel: true, resv.Write: true, resv.Read: true, resv.Bookkeep: true})
}

// SetDeadline passes the hint to the driver of every unsignalled fence of the
// usage or a stronger one, and to no other.
func TestSetDeadline(t *testing.T) {
	chk := lockdeptest.New(t)
	var mu sync.Mutex
	got := map[*fence.Fence]time.Time{}
	ops := &fence.Ops{SetDeadline: func(f *fence.Fence, t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		got[f] = t
	}}
	next := func() *fence.Fence { return newTimeline(chk, fence.WithOps(ops)).Next() }
	o := lockedObject(t, chk)
	k, w, r, bk, done := next(), next(), next(), next(), next()
	addAll(t, o, entry{k, resv.Kernel}, entry{w, resv.Write}, entry{r, resv.Read}, entry{bk, resv.Bookkeep},
		entry{done, resv.Write})
	require.NoError(t, done.Signal())
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	o.SetDeadline(resv.Read, when)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[*fence.Fence]time.Time{k: when, w: when, r: when}, got)
}

// Describe lists the fences of usage Read or stronger, signalled ones included,
// one line each, as dma_resv_describe does; without the lock, lockdep reports and
// the list is made all the same.
func TestDescribe(t *testing.T) {
	chk, col := lockdeptest.Collect(t)
	o := lockedObject(t, chk)
	gfx := fence.NewContext("drv", "gfx", fence.WithChecker(chk))
	cp := fence.NewContext("drv", "copy", fence.WithChecker(chk))
	mm := fence.NewContext("ttm", "move", fence.WithChecker(chk))
	pt := fence.NewContext("drv", "pt", fence.WithChecker(chk))
	w, r, k, bk := gfx.New(1), cp.New(7), mm.New(3), pt.New(2)
	addAll(t, o, entry{w, resv.Write}, entry{r, resv.Read}, entry{bk, resv.Bookkeep}, entry{k, resv.Kernel})
	require.NoError(t, r.Signal())
	const want = "\twrite fence: drv gfx seq 1 unsignalled\n" +
		"\tread fence: drv copy seq 7 signalled\n" +
		"\tkernel fence: ttm move seq 3 unsignalled\n"
	require.Equal(t, want, o.Describe())
	lockdeptest.RequireClean(t, col)
	o.Unlock()
	require.Equal(t, want, o.Describe(), "without the lock: listed all the same")
	lockdeptest.RequireKinds(t, col, lockdep.KindAssert)
}

// A lock-free reader whose list is replaced by an empty one after it gathered
// part of the old one returns nothing: it never returns a part of a list the
// object no longer holds. The Signaled hook of the second fence empties the
// object while GetFences (or CopyFences) looks at it.
func TestLockFreeReaderDiscardsPartialResult(t *testing.T) {
	for _, name := range []string{"GetFences", "CopyFences"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			chk := lockdeptest.New(t)
			o, empty, dst := resv.NewObject(chk), resv.NewObject(chk), resv.NewObject(chk)
			swap, swapped := make(chan struct{}), make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { // the writer
				<-swap
				assert.NoError(t, o.Lock(ctx, nil))
				assert.NoError(t, resv.CopyFences(o, empty))
				o.Unlock()
				close(swapped)
			})
			var hooked atomic.Bool
			ops := &fence.Ops{Signaled: func(*fence.Fence) bool {
				if hooked.CompareAndSwap(false, true) {
					close(swap)
					<-swapped
				}
				return false
			}}
			f1, f2 := newTimeline(chk).Next(), newTimeline(chk, fence.WithOps(ops)).Next()
			require.NoError(t, o.Lock(ctx, nil))
			addAll(t, o, entry{f1, resv.Write}, entry{f2, resv.Write})
			o.Unlock()

			if name == "GetFences" {
				require.Empty(t, o.GetFences(resv.Bookkeep))
			} else {
				require.NoError(t, dst.Lock(ctx, nil))
				require.NoError(t, resv.CopyFences(dst, o))
				require.Empty(t, lockedEntries(dst))
				dst.Unlock()
			}
			wg.Wait()
			require.True(t, hooked.Load())
		})
	}
}

// Lock-free readers racing with a writer under -race: every entry a reader sees
// is whole (a fence that was added, with a usage it was added or replaced with, no
// weaker than asked for), one walk of one list never yields a fence twice, and
// GetFences never returns a fence twice. The writer adds (replacing in place,
// recycling, appending), reserves (reallocating), replaces, signals, copies and
// republishes, keeping every fence in at most one slot, so that a duplicate could
// only come from a reader.
func TestLockFreeIterRacesWithWriter(t *testing.T) {
	ctx := context.Background()
	chk := lockdeptest.New(t)
	o, src := resv.NewObject(chk), resv.NewObject(chk)
	tls := make([]*fence.Context, 6)
	for i := range tls {
		tls[i] = newTimeline(chk)
	}

	var mu sync.Mutex
	written := map[*fence.Fence]uint8{} // usages each fence was ever written with
	record := func(f *fence.Fence, u resv.Usage) {
		mu.Lock()
		defer mu.Unlock()
		written[f] |= 1 << u
	}
	usages := func(f *fence.Fence) uint8 {
		mu.Lock()
		defer mu.Unlock()
		return written[f]
	}

	// src holds fences of contexts of its own, for CopyFences.
	require.NoError(t, src.Lock(ctx, nil))
	require.NoError(t, src.Reserve(3))
	for i := range 3 {
		f, u := newTimeline(chk).Next(), allUsages[i+1]
		record(f, u)
		require.NoError(t, src.AddFence(f, u))
	}
	src.Unlock()

	const writes = 3000
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		defer stop.Store(true)
		rng := rand.New(rand.NewPCG(7, 7))
		for range writes {
			if !assert.NoError(t, o.Lock(ctx, nil)) {
				return
			}
			switch op := rng.IntN(10); {
			case op < 4: // add a new fence of a random context
				f, u := tls[rng.IntN(len(tls))].Next(), allUsages[rng.IntN(4)]
				record(f, u)
				assert.NoError(t, o.Reserve(1))
				assert.NoError(t, o.AddFence(f, u))
			case op == 4: // reserve more, often reallocating
				assert.NoError(t, o.Reserve(1+rng.IntN(16)))
			case op == 5: // replace a context that has exactly one entry
				count := map[*fence.Context]int{}
				var ctxs []*fence.Context
				for f := range o.Fences(resv.Bookkeep) {
					if count[f.Context()]++; count[f.Context()] == 1 {
						ctxs = append(ctxs, f.Context())
					}
				}
				for _, c := range ctxs {
					if count[c] == 1 {
						r, u := tls[rng.IntN(len(tls))].Next(), allUsages[rng.IntN(4)]
						record(r, u)
						assert.NoError(t, o.ReplaceFences(c.ID(), r, u))
						break
					}
				}
			case op < 8: // signal an entry
				es := lockedEntries(o)
				if len(es) > 0 {
					_ = es[rng.IntN(len(es))].f.Signal()
				}
			case op == 8:
				assert.NoError(t, resv.CopyFences(o, src))
			default:
				resv.ForceRestart(o)
			}
			o.Unlock()
		}
	})

	var reads, restarts atomic.Int64
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(11, uint64(r)))
			for !stop.Load() {
				q := allUsages[rng.IntN(4)]
				it := o.Iter(q)
				walk := map[*fence.Fence]bool{}
				for f := it.Next(); f != nil; f = it.Next() {
					if it.IsRestarted() {
						if len(walk) > 0 {
							restarts.Add(1)
						}
						clear(walk)
					}
					u := it.Usage()
					if u > q || usages(f)&(1<<u) == 0 {
						t.Errorf("torn entry: %v with usage %v (written with %08b), asked for %v", f, u, usages(f), q)
						return
					}
					if walk[f] {
						t.Errorf("one walk yielded %v twice", f)
						return
					}
					walk[f] = true
				}
				seen := map[*fence.Fence]bool{}
				for _, f := range o.GetFences(q) {
					if seen[f] {
						t.Errorf("GetFences returned %v twice", f)
						return
					}
					seen[f] = true
					if usages(f)&(1<<(q+1)-1) == 0 {
						t.Errorf("GetFences(%v) returned %v, written with %08b", q, f, usages(f))
						return
					}
				}
				_ = o.TestSignaled(q)
				reads.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d writes, %d reads, %d walks restarted midway", writes, reads.Load(), restarts.Load())
}
