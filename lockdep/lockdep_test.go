package lockdep_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/petermattis/goid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// runOnGoroutine runs f on a goroutine of its own, waits for it to finish, and
// returns that goroutine's id. Scenarios that would deadlock if their goroutines
// overlapped run them one after the other with it: lockdep must report the order
// without the deadlock having to happen.
func runOnGoroutine(f func()) int64 {
	var id int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		id = goid.Get()
		f()
	}()
	<-done
	return id
}

// newTestMaps returns one lock instance per name, each of a fresh class of that
// name, annotating into c.
func newTestMaps(c *lockdep.Checker, names ...string) []*lockdep.Map {
	ms := make([]*lockdep.Map, len(names))
	for i, n := range names {
		ms[i] = &lockdep.Map{Class: lockdep.NewClass(n), Checker: c}
	}
	return ms
}

// heldClassNames returns the classes the calling goroutine holds in c, outermost
// first.
func heldClassNames(c *lockdep.Checker) []string {
	var out []string
	for _, l := range c.Held() {
		out = append(out, l.Class)
	}
	return out
}

// takeInOrder acquires ms exclusively in order and releases them in reverse.
func takeInOrder(ms ...*lockdep.Map) {
	for _, m := range ms {
		m.Acquire(lockdep.Exclusive)
	}
	for i := len(ms) - 1; i >= 0; i-- {
		ms[i].Release()
	}
}

func TestABBAAcrossGoroutinesReportedWithoutDeadlock(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	a := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}
	b := &lockdep.Mutex{Class: lockdep.NewClass("B"), Checker: c}

	shared := 0 // guarded by b
	g1 := runOnGoroutine(func() {
		a.Lock()
		b.Lock()
		shared++
		b.Unlock()
		a.Unlock()
	})
	lockdeptest.RequireClean(t, col)

	var held []string
	g2 := runOnGoroutine(func() {
		b.Lock()
		a.Lock() // reported here, before it could block
		held = heldClassNames(c)
		shared++
		a.Unlock()
		b.Unlock()
	})
	assert.Equal(t, 2, shared)

	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	r := col.Reports()[0]
	assert.Equal(t, []string{"B", "A"}, r.Cycle())
	assert.Equal(t, g2, r.Goroutine)
	require.NotNil(t, r.Lock)
	require.NotNil(t, r.Other)
	assert.Equal(t, "A", r.Lock.Class)
	assert.Equal(t, "B", r.Other.Class)
	assert.Equal(t, []string{"B", "A"}, held, "the reported acquisition is still recorded")

	require.NotNil(t, r.New)
	assert.Equal(t, "B", r.New.From)
	assert.Equal(t, "A", r.New.To)
	assert.Equal(t, g2, r.New.Goroutine)
	require.NotEmpty(t, r.New.Stack)
	assert.Contains(t, r.New.Stack[0].Function, "TestABBAAcrossGoroutinesReportedWithoutDeadlock")

	require.Len(t, r.Chain, 1)
	l := r.Chain[0]
	assert.Equal(t, "A", l.From)
	assert.Equal(t, "B", l.To)
	assert.Equal(t, g1, l.Goroutine)
	require.NotEmpty(t, l.Stack)
	assert.Contains(t, l.Stack[0].Function, "TestABBAAcrossGoroutinesReportedWithoutDeadlock")

	assert.False(t, c.HasDependency(b.Class, a.Class), "a cycle-closing dependency is not recorded")
	assert.Equal(t, "lockdep: possible circular locking dependency detected: B -> A -> B", r.Error())
}

func TestCyclesReportFullOrderAndEveryLink(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  []string
	}{
		{"two classes", []string{"A", "B"}, []string{"B", "A"}},
		{"three classes", []string{"A", "B", "C"}, []string{"C", "A", "B"}},
		{"four classes", []string{"A", "B", "C", "D"}, []string{"D", "A", "B", "C"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			ms := newTestMaps(c, tt.names...)
			n := len(ms)
			// Goroutine i takes class i, then class i+1; the last one closes the ring.
			ids := make([]int64, n)
			for i := range n {
				ids[i] = runOnGoroutine(func() { takeInOrder(ms[i], ms[(i+1)%n]) })
				if i < n-1 {
					lockdeptest.RequireClean(t, col)
				}
			}

			lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
			r := col.Reports()[0]
			assert.Equal(t, tt.want, r.Cycle())
			assert.Equal(t, ids[n-1], r.Goroutine)
			require.Len(t, r.Chain, n-1)
			for i, l := range r.Chain {
				assert.Equal(t, tt.names[i], l.From)
				assert.Equal(t, tt.names[i+1], l.To)
				assert.Equal(t, ids[i], l.Goroutine)
				assert.NotEmpty(t, l.Stack)
			}
		})
	}
}

func TestConsistentOrderAcrossThousandGoroutinesIsSilent(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	a := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}
	b := &lockdep.Mutex{Class: lockdep.NewClass("B"), Checker: c}
	d := &lockdep.Mutex{Class: lockdep.NewClass("C"), Checker: c}
	counter := 0

	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {
			a.Lock()
			b.Lock()
			d.Lock()
			counter++
			d.Unlock()
			b.Unlock()
			a.Unlock()
		})
	}
	wg.Wait()

	lockdeptest.RequireClean(t, col)
	assert.Equal(t, 1000, counter)
	assert.True(t, c.HasDependency(a.Class, b.Class))
	assert.True(t, c.HasDependency(b.Class, d.Class))
	assert.False(t, c.HasDependency(a.Class, d.Class), "only the innermost held lock gets an edge")
	assert.Equal(t, lockdep.Stats{Classes: 3, Edges: 2, Chains: 3}, c.Stats())
}

func TestSameClassNesting(t *testing.T) {
	tests := []struct {
		name  string
		inner func(outer *lockdep.Class) *lockdep.Class
		want  []lockdep.Kind
	}{
		{"same class twice is recursive", func(o *lockdep.Class) *lockdep.Class { return o }, []lockdep.Kind{lockdep.KindRecursive}},
		{"subclass under its base is silent", func(o *lockdep.Class) *lockdep.Class { return o.Subclass(1) }, nil},
		{"subclass zero is the class itself", func(o *lockdep.Class) *lockdep.Class { return o.Subclass(0) }, []lockdep.Kind{lockdep.KindRecursive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			cls := lockdep.NewClass("obj")
			parent := &lockdep.Map{Class: cls, Checker: c}
			child := &lockdep.Map{Class: tt.inner(cls), Checker: c}
			parent.Acquire(lockdep.Exclusive)
			child.Acquire(lockdep.Exclusive)
			assert.Len(t, c.Held(), 2)
			child.Release()
			parent.Release()
			assert.Empty(t, c.Held())
			lockdeptest.RequireKinds(t, col, tt.want...)
			if len(tt.want) > 0 {
				r := col.Reports()[0]
				require.NotNil(t, r.Lock)
				require.NotNil(t, r.Other)
				assert.Equal(t, "obj", r.Lock.Class)
				assert.Equal(t, "obj", r.Other.Class)
			}
		})
	}
}

func TestSubclassIsNamedAndOrdered(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	cls := lockdep.NewClass("inode")
	sub := cls.Subclass(1)
	assert.Equal(t, "inode/1", sub.Name())
	assert.Same(t, sub, cls.Subclass(1))
	assert.Same(t, sub, sub.Subclass(1), "a subclass of a subclass is taken from the base")
	assert.Panics(t, func() { cls.Subclass(lockdep.MaxSubclasses) })

	parent := &lockdep.Map{Class: cls, Checker: c}
	child := &lockdep.Map{Class: sub, Checker: c}
	runOnGoroutine(func() { takeInOrder(parent, child) })
	runOnGoroutine(func() { takeInOrder(child, parent) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	assert.Equal(t, []string{"inode/1", "inode"}, col.Reports()[0].Cycle())
}

func TestManySameClassLocksUnderNestLockAreSilent(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ctx := &lockdep.Map{Class: lockdep.NewClass("ww acquire ctx"), Checker: c}
	objClass := lockdep.NewClass("ww mutex")
	objs := make([]*lockdep.Map, 100)
	for i := range objs {
		objs[i] = &lockdep.Map{Class: objClass, Checker: c}
	}

	ctx.Acquire(lockdep.Exclusive)
	for _, o := range objs {
		o.AcquireNest(lockdep.Exclusive, ctx)
	}
	assert.Len(t, c.Held(), len(objs)+1)
	// Release in acquisition order, not reverse, as ww_mutex users may.
	for _, o := range objs {
		o.Release()
	}
	ctx.Release()

	lockdeptest.RequireClean(t, col)
	assert.Empty(t, c.Held())
	assert.True(t, c.HasDependency(ctx.Class, objClass))
}

func TestAcquireNestWithNestLockNotHeldReported(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "ww acquire ctx", "ww mutex")
	ctx, obj := ms[0], ms[1]

	obj.AcquireNest(lockdep.Exclusive, ctx)
	assert.Equal(t, []string{"ww mutex"}, heldClassNames(c))
	obj.Release()

	lockdeptest.RequireKinds(t, col, lockdep.KindNestNotHeld)
	r := col.Reports()[0]
	require.NotNil(t, r.Lock)
	assert.Equal(t, "ww mutex", r.Lock.Class)
	assert.Contains(t, r.Detail, "(ww acquire ctx)")
}

func TestFenceWaitInSignallingSection(t *testing.T) {
	tests := []struct {
		name string
		opts []lockdep.Option
		want []lockdep.Kind
	}{
		{"silent by default, as in the kernel", nil, nil},
		{"reported when strict", []lockdep.Option{lockdep.StrictSignalling()}, []lockdep.Kind{lockdep.KindFenceWaitInSignalling}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t, tt.opts...)
			ck := c.BeginSignalling()
			c.MightWaitFence()
			assert.True(t, c.InSignalling(), "the wait puts the section back")
			c.EndSignalling(ck)
			assert.False(t, c.InSignalling())
			lockdeptest.RequireKinds(t, col, tt.want...)
		})
	}
}

func TestSetStrictSignallingTogglesFenceWaitCheck(t *testing.T) {
	c, col := lockdeptest.Collect(t, lockdep.ReportAll())
	wait := func() {
		ck := c.BeginSignalling()
		c.MightWaitFence()
		c.EndSignalling(ck)
	}
	wait()
	c.SetStrictSignalling(true)
	wait()
	c.SetStrictSignalling(false)
	wait()
	lockdeptest.RequireKinds(t, col, lockdep.KindFenceWaitInSignalling)
}

func TestLockInSignallingHeldAcrossFenceWaitReported(t *testing.T) {
	signal := func(c *lockdep.Checker, l *lockdep.Map) {
		ck := c.BeginSignalling()
		l.Acquire(lockdep.Exclusive)
		l.Release()
		c.EndSignalling(ck)
	}
	wait := func(c *lockdep.Checker, l *lockdep.Map) {
		l.Acquire(lockdep.Exclusive)
		c.MightWaitFence()
		l.Release()
	}
	tests := []struct {
		name          string
		first, second func(*lockdep.Checker, *lockdep.Map)
		want          []string
	}{
		{"signalling path first", signal, wait, []string{"L", "dma_fence_map"}},
		{"waiting path first", wait, signal, []string{"dma_fence_map", "L"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			l := newTestMaps(c, "L")[0]
			runOnGoroutine(func() { tt.first(c, l) })
			lockdeptest.RequireClean(t, col)
			runOnGoroutine(func() { tt.second(c, l) })
			lockdeptest.RequireKinds(t, col, lockdep.KindSignallingDeadlock)
			r := col.Reports()[0]
			assert.Equal(t, tt.want, r.Cycle())
			assert.NotEmpty(t, r.Detail)
		})
	}
}

func TestPrimedOrder(t *testing.T) {
	resvTry := func(c *lockdep.Checker) {
		obj := &lockdep.Map{Class: lockdep.Reservation, Checker: c}
		obj.TryAcquired(lockdep.Exclusive)
		obj.Release()
	}
	resvLock := func(c *lockdep.Checker) {
		obj := &lockdep.Map{Class: lockdep.Reservation, Checker: c}
		obj.Acquire(lockdep.Exclusive)
		obj.Release()
	}
	inReclaim := func(f func(*lockdep.Checker)) func(*lockdep.Checker) {
		return func(c *lockdep.Checker) {
			c.BeginReclaim()
			f(c)
			c.EndReclaim()
		}
	}
	inSignalling := func(f func(*lockdep.Checker)) func(*lockdep.Checker) {
		return func(c *lockdep.Checker) {
			ck := c.BeginSignalling()
			f(c)
			c.EndSignalling(ck)
		}
	}
	mmapUnderResv := func(c *lockdep.Checker) {
		ctx := &lockdep.Map{Class: lockdep.ReservationAcquire, Checker: c}
		obj := &lockdep.Map{Class: lockdep.Reservation, Checker: c}
		mmap := &lockdep.Map{Class: lockdep.MmapLock, Checker: c}
		ctx.Acquire(lockdep.Exclusive)
		obj.AcquireNest(lockdep.Exclusive, ctx)
		mmap.Acquire(lockdep.Shared)
		mmap.Release()
		obj.Release()
		ctx.Release()
	}
	notifier := func(c *lockdep.Checker) {
		c.BeginMMUNotifier()
		c.EndMMUNotifier()
	}

	const (
		fenceMap = "dma_fence_map"
		reclaim  = "fs_reclaim"
		mmu      = "mmu_notifier_invalidate_range_start"
		resv     = "reservation_ww_class_mutex"
		resvCtx  = "reservation_ww_class_acquire"
		mmap     = "&mm->mmap_lock"
	)
	tests := []struct {
		name      string
		run       func(*lockdep.Checker)
		want      lockdep.Kind // 0: silent
		wantCycle []string
	}{
		{"allocation in signalling section", inSignalling((*lockdep.Checker).MightReclaim),
			lockdep.KindReclaimInSignalling, []string{fenceMap, reclaim, mmu}},
		{"reservation lock in signalling section", inSignalling(resvLock),
			lockdep.KindSignallingDeadlock, []string{fenceMap, resv, reclaim, mmu}},
		{"MMU notifier in signalling section", inSignalling(notifier),
			lockdep.KindSignallingDeadlock, []string{fenceMap, mmu}},
		{"reservation lock inside reclaim", inReclaim(resvLock),
			lockdep.KindCircular, []string{reclaim, resv}},
		{"reservation trylock inside reclaim", inReclaim(resvTry), 0, nil},
		{"mmap_lock under a reservation lock", mmapUnderResv,
			lockdep.KindCircular, []string{resv, mmap, resvCtx}},
		{"allocation inside reclaim (PF_MEMALLOC)", inReclaim((*lockdep.Checker).MightReclaim), 0, nil},
	}
	for _, tt := range tests {
		for _, primed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/primed=%v", tt.name, primed), func(t *testing.T) {
				c, col := lockdeptest.Collect(t)
				if primed {
					c.Prime()
					c.Prime() // twice is harmless
					lockdeptest.RequireClean(t, col)
				}
				runOnGoroutine(func() { tt.run(c) })
				if !primed || tt.want == 0 {
					lockdeptest.RequireClean(t, col)
					return
				}
				lockdeptest.RequireKinds(t, col, tt.want)
				assert.Equal(t, tt.wantCycle, col.Reports()[0].Cycle())
			})
		}
	}
}

func TestPrimeTeachesCanonicalOrder(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	c.Prime()
	lockdeptest.RequireClean(t, col)
	for _, d := range [][2]*lockdep.Class{
		{lockdep.MmapLock, lockdep.ReservationAcquire},
		{lockdep.ReservationAcquire, lockdep.Reservation},
		{lockdep.Reservation, lockdep.FSReclaim},
		{lockdep.FSReclaim, lockdep.IMmap},
		{lockdep.FSReclaim, lockdep.MMUNotifier},
		{lockdep.MMUNotifier, lockdep.FenceSignalling},
	} {
		assert.True(t, c.HasDependency(d[0], d[1]), "%s -> %s", d[0], d[1])
	}
	assert.Equal(t, 6, c.Stats().Edges)
	assert.Empty(t, c.Held(), "priming runs on a goroutine of its own")
}

func TestLongRunningRules(t *testing.T) {
	vm := lockdep.NewClass("drv.vm", lockdep.MM)
	ring := lockdep.NewClass("drv.ring")
	holding := func(cls *lockdep.Class) func(*lockdep.Checker) {
		return func(c *lockdep.Checker) {
			m := &lockdep.Map{Class: cls, Checker: c}
			m.Acquire(lockdep.Exclusive)
			c.MightWaitLongRunning("lr-fence")
			m.Release()
		}
	}
	tests := []struct {
		name      string
		run       func(*lockdep.Checker)
		want      []lockdep.Kind
		wantOther string
	}{
		{"LR wait under an MM lock", holding(vm), []lockdep.Kind{lockdep.KindLRWaitUnderMM}, "drv.vm"},
		{"LR wait under a reservation lock", holding(lockdep.Reservation), []lockdep.Kind{lockdep.KindLRWaitUnderMM}, "reservation_ww_class_mutex"},
		{"LR wait under a non-MM lock", holding(ring), nil, ""},
		{"LR wait holding nothing", func(c *lockdep.Checker) { c.MightWaitLongRunning("lr-fence") }, nil, ""},
		{"LR wait in a signalling section", func(c *lockdep.Checker) {
			ck := c.BeginSignalling()
			c.MightWaitLongRunning("lr-fence")
			c.EndSignalling(ck)
		}, []lockdep.Kind{lockdep.KindLRWaitInSignalling}, "dma_fence_map"},
		{"LR fence in a reservation", func(c *lockdep.Checker) {
			c.LongRunningInReservation("lr-fence in bo 7")
		}, []lockdep.Kind{lockdep.KindLRFenceInReservation}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			tt.run(c)
			lockdeptest.RequireKinds(t, col, tt.want...)
			if len(tt.want) == 0 {
				return
			}
			r := col.Reports()[0]
			if tt.wantOther != "" {
				require.NotNil(t, r.Other)
				assert.Equal(t, tt.wantOther, r.Other.Class)
			}
			assert.Contains(t, r.Detail, "lr-fence")
		})
	}
}

func TestRecursiveReadSameClass(t *testing.T) {
	tests := []struct {
		name          string
		first, second lockdep.Mode
		want          []lockdep.Kind
	}{
		{"recursive read twice is silent", lockdep.RecursiveRead, lockdep.RecursiveRead, nil},
		{"recursive read under shared read is silent", lockdep.Shared, lockdep.RecursiveRead, nil},
		{"shared read twice is recursive", lockdep.Shared, lockdep.Shared, []lockdep.Kind{lockdep.KindRecursive}},
		{"shared read under recursive read is recursive", lockdep.RecursiveRead, lockdep.Shared, []lockdep.Kind{lockdep.KindRecursive}},
		{"recursive read under write is recursive", lockdep.Exclusive, lockdep.RecursiveRead, []lockdep.Kind{lockdep.KindRecursive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			a := newTestMaps(c, "A")[0]
			a.Acquire(tt.first)
			a.Acquire(tt.second)
			assert.Equal(t, []string{"A", "A"}, heldClassNames(c))
			a.Release()
			a.Release()
			assert.Empty(t, c.Held())
			lockdeptest.RequireKinds(t, col, tt.want...)
		})
	}
}

// TestReadLockCycles follows lockdep-design.rst, "Recursive read locks": goroutine
// 1 takes A then B, goroutine 2 takes B then A, in the modes given. A cycle is a
// deadlock only if it is strong: no dependency ending in a recursive read (-(*R)->)
// followed by one starting from a reader (-(S*)->), since a recursive reader is
// never blocked by another reader.
func TestReadLockCycles(t *testing.T) {
	const (
		W  = lockdep.Exclusive
		R  = lockdep.Shared
		RR = lockdep.RecursiveRead
	)
	tests := []struct {
		name         string
		g1A, g1B     lockdep.Mode
		g2B, g2A     lockdep.Mode
		wantReported bool
	}{
		// A -(SN)-> B -(ER)-> A: the recursive read of A cannot block on g1's read.
		{"read A then B, B then recursive-read A", RR, W, W, RR, false},
		{"shared A then B, B then recursive-read A", R, W, W, RR, false},
		// A -(SR)-> B -(SR)-> A: recursive readers both ways.
		{"recursive readers both ways", RR, RR, RR, RR, false},
		// A -(EN)-> B -(ER)-> A: the reader of A waits for g1's writer.
		{"write A then B, B then recursive-read A", W, W, W, RR, true},
		// A -(SN)-> B -(EN)-> A: a non-recursive reader can queue behind a writer.
		{"read A then B, B then shared A", RR, W, W, R, true},
		{"write A then B, B then write A", W, W, W, W, true},
		// A -(SN)-> B -(SN)-> A: shared readers are not recursive.
		{"shared readers both ways", R, R, R, R, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			ms := newTestMaps(c, "A", "B")
			a, b := ms[0], ms[1]
			runOnGoroutine(func() {
				a.Acquire(tt.g1A)
				b.Acquire(tt.g1B)
				b.Release()
				a.Release()
			})
			runOnGoroutine(func() {
				b.Acquire(tt.g2B)
				a.Acquire(tt.g2A)
				a.Release()
				b.Release()
			})
			if !tt.wantReported {
				lockdeptest.RequireClean(t, col)
				assert.True(t, c.HasDependency(b.Class, a.Class), "a weak cycle is learned, not refused")
				return
			}
			lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
			assert.Equal(t, []string{"B", "A"}, col.Reports()[0].Cycle())
		})
	}
}

func TestTrylockAddsNoDependencyButLocksUnderItDo(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B", "C")
	a, b, d := ms[0], ms[1], ms[2]

	a.Acquire(lockdep.Exclusive)
	b.TryAcquired(lockdep.Exclusive)
	d.Acquire(lockdep.Exclusive)
	held := c.Held()
	require.Len(t, held, 3)
	assert.True(t, held[1].Try)
	assert.False(t, held[2].Try)
	d.Release()
	b.Release()
	a.Release()

	lockdeptest.RequireClean(t, col)
	assert.False(t, c.HasDependency(a.Class, b.Class), "a trylock cannot block")
	assert.True(t, c.HasDependency(b.Class, d.Class))
	assert.True(t, c.HasDependency(a.Class, d.Class), "a held trylock does not hide the lock below it")

	// The reverse order of a trylock is fine too: B -> A is no cycle.
	runOnGoroutine(func() { takeInOrder(b, a) })
	lockdeptest.RequireClean(t, col)
}

func TestMightLockLearnsOrderWithoutHolding(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]
	runOnGoroutine(func() {
		a.Acquire(lockdep.Exclusive)
		b.MightLock(lockdep.Exclusive)
		assert.Equal(t, []string{"A"}, heldClassNames(c))
		a.Release()
	})
	assert.True(t, c.HasDependency(a.Class, b.Class))
	runOnGoroutine(func() { takeInOrder(b, a) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	assert.Equal(t, []string{"B", "A"}, col.Reports()[0].Cycle())
}

func TestNilClassReportedWithoutPanic(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	m := &lockdep.Map{Checker: c}
	mu := &lockdep.Mutex{Checker: c}
	n := 0 // guarded by mu
	assert.NotPanics(t, func() {
		m.Acquire(lockdep.Exclusive)
		m.AssertHeld()
		m.Release()
		mu.Lock()
		n++
		mu.Unlock()
	})
	assert.Equal(t, 1, n, "the mutex still locks")
	lockdeptest.RequireKinds(t, col, lockdep.KindBadClass, lockdep.KindBadClass)
	assert.Empty(t, c.Held())
	assert.Equal(t, lockdep.Stats{}, c.Stats())
}

func TestReleaseOfLockNotHeldReported(t *testing.T) {
	tests := []struct {
		name string
		run  func(c *lockdep.Checker, m *lockdep.Map)
	}{
		{"never taken", func(c *lockdep.Checker, m *lockdep.Map) { m.Release() }},
		{"released twice", func(c *lockdep.Checker, m *lockdep.Map) {
			m.Acquire(lockdep.Exclusive)
			m.Release()
			m.Release()
		}},
		{"taken by another goroutine", func(c *lockdep.Checker, m *lockdep.Map) {
			runOnGoroutine(func() { m.Acquire(lockdep.Exclusive) })
			m.Release()
		}},
		{"end of a reclaim section never begun", func(c *lockdep.Checker, m *lockdep.Map) { c.EndReclaim() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			m := newTestMaps(c, "A")[0]
			tt.run(c, m)
			lockdeptest.RequireKinds(t, col, lockdep.KindBadUnlock)
			assert.Empty(t, c.Held())
		})
	}
}

func TestBadEndSignallingReportedAndSectionStateKept(t *testing.T) {
	tests := []struct {
		name string
		// run misuses the section API and returns whether a section should still be
		// open; it closes any section it leaves open after the check.
		run  func(c *lockdep.Checker) (open bool, cleanup func())
		want int // KindBadSignalling reports
	}{
		{"zero cookie", func(c *lockdep.Checker) (bool, func()) {
			c.EndSignalling(lockdep.Cookie{})
			return false, func() {}
		}, 1},
		{"zero cookie inside a section", func(c *lockdep.Checker) (bool, func()) {
			ck := c.BeginSignalling()
			c.EndSignalling(lockdep.Cookie{})
			return true, func() { c.EndSignalling(ck) }
		}, 1},
		{"ended twice", func(c *lockdep.Checker) (bool, func()) {
			ck := c.BeginSignalling()
			c.EndSignalling(ck)
			c.EndSignalling(ck)
			return false, func() {}
		}, 1},
		{"outer ended before nested", func(c *lockdep.Checker) (bool, func()) {
			outer := c.BeginSignalling()
			inner := c.BeginSignalling()
			c.EndSignalling(outer)
			return true, func() {
				c.EndSignalling(inner)
				c.EndSignalling(outer)
			}
		}, 1},
		{"nested ended twice", func(c *lockdep.Checker) (bool, func()) {
			outer := c.BeginSignalling()
			inner := c.BeginSignalling()
			c.EndSignalling(inner)
			c.EndSignalling(inner)
			return true, func() { c.EndSignalling(outer) }
		}, 1},
		{"cookie of an earlier section", func(c *lockdep.Checker) (bool, func()) {
			old := c.BeginSignalling()
			c.EndSignalling(old)
			ck := c.BeginSignalling()
			c.EndSignalling(old)
			return true, func() { c.EndSignalling(ck) }
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			open, cleanup := tt.run(c)
			assert.Equal(t, open, c.InSignalling())
			cleanup()
			assert.False(t, c.InSignalling())
			assert.Empty(t, c.Held())
			want := make([]lockdep.Kind, tt.want)
			for i := range want {
				want[i] = lockdep.KindBadSignalling
			}
			lockdeptest.RequireKinds(t, col, want...)
		})
	}
}

func TestNestedEndSignallingTwiceKeepsOuterSectionBalanced(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	outer := c.BeginSignalling()
	inner := c.BeginSignalling()
	c.EndSignalling(inner)
	c.EndSignalling(inner) // reported, and must not unbalance the nesting count
	inner2 := c.BeginSignalling()
	c.EndSignalling(outer) // still nested: reported, section stays open
	assert.True(t, c.InSignalling())
	c.EndSignalling(inner2)
	c.EndSignalling(outer)
	assert.False(t, c.InSignalling())
	lockdeptest.RequireKinds(t, col, lockdep.KindBadSignalling, lockdep.KindBadSignalling)
}

func TestEndSignallingOnAnotherGoroutineReported(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	cookies := make(chan lockdep.Cookie)
	proceed := make(chan struct{})
	var stillOpen, closed bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		ck := c.BeginSignalling()
		cookies <- ck
		<-proceed
		stillOpen = c.InSignalling()
		c.EndSignalling(ck)
		closed = !c.InSignalling()
	}()
	ck := <-cookies
	var otherIn bool
	runOnGoroutine(func() {
		c.EndSignalling(ck)
		otherIn = c.InSignalling()
	})
	close(proceed)
	<-done

	lockdeptest.RequireKinds(t, col, lockdep.KindBadSignalling)
	assert.Contains(t, col.Reports()[0].Detail, "other than the one that began")
	assert.False(t, otherIn)
	assert.True(t, stillOpen)
	assert.True(t, closed)
}

func TestNestedBeginSignallingIsFree(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	outer := c.BeginSignalling()
	inner := c.BeginSignalling()
	innermost := c.BeginSignalling()
	held := c.Held()
	require.Len(t, held, 1, "nested sections take the fence map once")
	assert.Equal(t, lockdep.LockInfo{Class: "dma_fence_map", Mode: lockdep.Shared, Try: true}, lockdep.LockInfo{Class: held[0].Class, Mode: held[0].Mode, Try: held[0].Try})
	c.EndSignalling(innermost)
	c.EndSignalling(inner)
	assert.True(t, c.InSignalling())
	c.EndSignalling(outer)
	assert.False(t, c.InSignalling())
	lockdeptest.RequireClean(t, col)
	assert.Equal(t, lockdep.Stats{}, c.Stats(), "beginning a section is a trylock: nothing to learn")
}

func TestAssertHeldAndNotHeld(t *testing.T) {
	tests := []struct {
		name   string
		hold   bool
		assert func(m *lockdep.Map)
		want   []lockdep.Kind
	}{
		{"held asserted held", true, (*lockdep.Map).AssertHeld, nil},
		{"not held asserted not held", false, (*lockdep.Map).AssertNotHeld, nil},
		{"not held asserted held", false, (*lockdep.Map).AssertHeld, []lockdep.Kind{lockdep.KindAssert}},
		{"held asserted not held", true, (*lockdep.Map).AssertNotHeld, []lockdep.Kind{lockdep.KindAssert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			m := newTestMaps(c, "A")[0]
			if tt.hold {
				m.Acquire(lockdep.Exclusive)
			}
			tt.assert(m)
			if tt.hold {
				m.Release()
			}
			lockdeptest.RequireKinds(t, col, tt.want...)
		})
	}
}

func TestMutexAssertHeldFollowsOwner(t *testing.T) {
	c, col := lockdeptest.Collect(t, lockdep.ReportAll())
	mu := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}
	mu.Lock()
	mu.AssertHeld()
	runOnGoroutine(func() {
		mu.AssertNotHeld() // another goroutine does not hold it
		mu.AssertHeld()    // reported
	})
	mu.Unlock()
	mu.AssertNotHeld()
	mu.AssertHeld() // reported
	lockdeptest.RequireKinds(t, col, lockdep.KindAssert, lockdep.KindAssert)
}

func TestEachProblemReportedOnceUnlessReportAll(t *testing.T) {
	tests := []struct {
		name      string
		reportAll bool
		want      int
	}{
		{"once by default", false, 1},
		{"every time with ReportAll", true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []lockdep.Option
			if tt.reportAll {
				opts = append(opts, lockdep.ReportAll())
			}
			c, col := lockdeptest.Collect(t, opts...)
			ms := newTestMaps(c, "A", "B", "C")
			a, b, x := ms[0], ms[1], ms[2]
			runOnGoroutine(func() { takeInOrder(a, b) })
			for range 3 {
				runOnGoroutine(func() { takeInOrder(b, a) })
			}
			for range 3 {
				runOnGoroutine(func() { takeInOrder(x, x) })
			}
			for range 3 {
				x.Release()
			}
			var want []lockdep.Kind
			for _, k := range []lockdep.Kind{lockdep.KindCircular, lockdep.KindRecursive, lockdep.KindBadUnlock} {
				for range tt.want {
					want = append(want, k)
				}
			}
			lockdeptest.RequireKinds(t, col, want...)
		})
	}
}

func TestSetReportAllAtRunTime(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	m := newTestMaps(c, "A")[0]
	for range 2 {
		m.Release()
	}
	c.SetReportAll(true)
	for range 2 {
		m.Release()
	}
	lockdeptest.RequireKinds(t, col, lockdep.KindBadUnlock, lockdep.KindBadUnlock, lockdep.KindBadUnlock)
}

func TestDisableMakesAnnotationsNoOps(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]

	c.Disable()
	assert.False(t, c.Enabled())
	runOnGoroutine(func() { takeInOrder(a, b) })
	runOnGoroutine(func() {
		takeInOrder(b, a)
		a.Release() // not held: not reported either
		a.Acquire(lockdep.Exclusive)
		a.Acquire(lockdep.Exclusive)
		assert.Nil(t, c.Held())
		assert.False(t, c.InSignalling())
		ck := c.BeginSignalling()
		c.MightWaitFence()
		c.MightReclaim()
		c.MightWaitLongRunning("lr")
		c.EndSignalling(ck)
		c.Prime()
	})
	lockdeptest.RequireClean(t, col)
	assert.False(t, c.HasDependency(a.Class, b.Class))
	assert.Equal(t, lockdep.Stats{}, c.Stats())

	c.Enable()
	assert.True(t, c.Enabled())
	runOnGoroutine(func() { takeInOrder(a, b) })
	assert.True(t, c.HasDependency(a.Class, b.Class))
}

func TestReleaseAfterEnableOfLockTakenWhileDisabledNotReported(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]
	takeInOrder(a) // known to the checker before it is switched off

	c.Disable()
	a.Acquire(lockdep.Exclusive)
	ck := c.BeginSignalling()
	c.Enable()
	b.Acquire(lockdep.Exclusive)
	assert.Equal(t, []string{"B"}, heldClassNames(c))
	c.EndSignalling(ck)
	a.Release()
	b.Release()

	// A lock taken while enabled and released after a Disable/Enable cycle.
	b.Acquire(lockdep.Exclusive)
	sec := c.BeginSignalling()
	c.Disable()
	c.Enable()
	b.Release()
	c.EndSignalling(sec)

	lockdeptest.RequireClean(t, col)
	assert.Empty(t, c.Held())
	assert.False(t, c.HasDependency(a.Class, b.Class))
}

func TestResetForgetsGraphAndReports(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]

	runOnGoroutine(func() { takeInOrder(a, b) })
	runOnGoroutine(func() { takeInOrder(b, a) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)

	a.Acquire(lockdep.Exclusive) // held across the Reset
	c.Reset()
	assert.Empty(t, c.Held())
	a.Release() // the checker no longer knows it: not reported
	assert.False(t, c.HasDependency(a.Class, b.Class))
	assert.Equal(t, lockdep.Stats{}, c.Stats())

	runOnGoroutine(func() { takeInOrder(b, a) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	assert.True(t, c.HasDependency(b.Class, a.Class))

	runOnGoroutine(func() { takeInOrder(a, b) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular, lockdep.KindCircular)
	assert.Equal(t, []string{"A", "B"}, col.Reports()[1].Cycle(), "the reported set was forgotten too")
}

func TestPanicHandlerLeavesCheckerConsistent(t *testing.T) {
	c := lockdep.NewChecker(lockdep.WithHandler(lockdep.Panic))
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]
	runOnGoroutine(func() { takeInOrder(a, b) })

	var rep *lockdep.Report
	var during, after []string
	runOnGoroutine(func() {
		b.Acquire(lockdep.Exclusive)
		func() {
			defer func() {
				err, _ := recover().(error)
				errors.As(err, &rep)
			}()
			a.Acquire(lockdep.Exclusive)
		}()
		during = heldClassNames(c)
		b.Release()
		after = heldClassNames(c)
	})

	require.NotNil(t, rep, "the handler panics with a *lockdep.Report")
	assert.Equal(t, lockdep.KindCircular, rep.Kind)
	assert.Equal(t, []string{"B", "A"}, rep.Cycle())
	assert.Equal(t, []string{"B"}, during, "the interrupted acquisition is not recorded")
	assert.Empty(t, after)
	assert.False(t, c.HasDependency(b.Class, a.Class))

	// The checker goes on: the good order still passes, the bad one is not
	// delivered twice.
	assert.NotPanics(t, func() {
		runOnGoroutine(func() { takeInOrder(a, b) })
		runOnGoroutine(func() { takeInOrder(b, a) })
	})
}

func TestPanicHandlerInFenceWaitKeepsSection(t *testing.T) {
	c := lockdep.NewChecker(lockdep.WithHandler(lockdep.Panic), lockdep.StrictSignalling())
	var rep *lockdep.Report
	var open bool
	runOnGoroutine(func() {
		ck := c.BeginSignalling()
		func() {
			defer func() {
				err, _ := recover().(error)
				errors.As(err, &rep)
			}()
			c.MightWaitFence()
		}()
		open = c.InSignalling()
		c.EndSignalling(ck)
	})
	require.NotNil(t, rep)
	assert.Equal(t, lockdep.KindFenceWaitInSignalling, rep.Kind)
	assert.True(t, open, "the section survives a panicking handler")
}

func TestLogHandlerWritesSplat(t *testing.T) {
	var buf bytes.Buffer
	c := lockdep.NewChecker(lockdep.WithHandler(lockdep.Log(&buf)))
	ms := newTestMaps(c, "A", "B")
	a, b := ms[0], ms[1]
	runOnGoroutine(func() { takeInOrder(a, b) })
	assert.Empty(t, buf.String())
	runOnGoroutine(func() { takeInOrder(b, a) })

	out := buf.String()
	for _, s := range []string{
		"WARNING: possible circular locking dependency detected",
		"is trying to acquire lock:\n (A){W}",
		"but goroutine",
		"is already holding lock:\n (B){W}",
		"the existing dependency chain (in reverse order) is:",
		"-> #1 (B) (taken after (A) by goroutine",
		"-> #0 (A) (taken now, after (B)):",
		"TestLogHandlerWritesSplat",
		"*** DEADLOCK ***",
		"1 lock held by goroutine",
		"stack backtrace:",
	} {
		assert.Contains(t, out, s)
	}
}

func TestSplatForLongerCycleNamesTheChain(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B", "C")
	runOnGoroutine(func() { takeInOrder(ms[0], ms[1]) })
	runOnGoroutine(func() { takeInOrder(ms[1], ms[2]) })
	runOnGoroutine(func() { takeInOrder(ms[2], ms[0]) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	out := col.Reports()[0].String()
	assert.Contains(t, out, "Chain exists of:\n  (A) --> (B) --> (C)\n")
	assert.Contains(t, out, "*** DEADLOCK ***")
}

func TestReportStringHeadlines(t *testing.T) {
	tests := []struct {
		name string
		run  func(m *lockdep.Map)
		kind lockdep.Kind
		want []string
	}{
		{"recursive", func(m *lockdep.Map) { takeInOrder(m, m) }, lockdep.KindRecursive, []string{
			"WARNING: possible recursive locking detected",
			"is trying to acquire lock:\n (A){W}",
			"but goroutine",
			"lock(A);\n  lock(A);",
			"*** DEADLOCK ***",
			"May be due to missing lock nesting notation",
			"1 lock held by goroutine",
		}},
		{"bad unlock", (*lockdep.Map).Release, lockdep.KindBadUnlock, []string{
			"WARNING: bad unlock balance detected!",
			"is trying to release lock (A) at:",
			"TestReportStringHeadlines",
			"but there are no more locks to release!",
			"no locks held by goroutine",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, col := lockdeptest.Collect(t)
			tt.run(newTestMaps(c, "A")[0])
			lockdeptest.RequireKinds(t, col, tt.kind)
			r := col.Reports()[0]
			out := r.String()
			for _, s := range tt.want {
				assert.Contains(t, out, s)
			}
			assert.Equal(t, "lockdep: "+tt.kind.Title()+": A", r.Error())
		})
	}
}

func TestKindNamesAndTitles(t *testing.T) {
	assert.Equal(t, "circular", lockdep.KindCircular.String())
	assert.Equal(t, "possible circular locking dependency detected", lockdep.KindCircular.Title())
	assert.Equal(t, "Kind(200)", lockdep.Kind(200).String())
	assert.Equal(t, "Kind(200)", lockdep.Kind(200).Title())
	for k := lockdep.KindCircular; k <= lockdep.KindFenceLeak; k++ {
		assert.NotContains(t, k.String(), "Kind(", "kind %d has a name", k)
		assert.NotContains(t, k.Title(), "Kind(", "kind %d has a title", k)
	}
}

// fakeTB records what lockdeptest's helpers do to a test. The embedded TB is nil:
// any method not overridden here would panic, so the test also proves which ones
// the helpers use.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatals []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
}

func TestFailHandlerFailsTB(t *testing.T) {
	fake := &fakeTB{}
	c := lockdeptest.New(fake)
	m := newTestMaps(c, "A")[0]
	takeInOrder(m) // fine
	require.Empty(t, fake.errors)

	takeInOrder(m, m)
	require.Len(t, fake.errors, 1)
	assert.True(t, strings.HasPrefix(fake.errors[0], "lockdep report recursive:"))
	assert.Contains(t, fake.errors[0], "WARNING: possible recursive locking detected")
	assert.Empty(t, fake.fatals)
}

func TestRequireKindsFailsOnMismatch(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	m := newTestMaps(c, "A")[0]
	m.Release()

	fake := &fakeTB{}
	lockdeptest.RequireKinds(fake, col, lockdep.KindBadUnlock)
	assert.Empty(t, fake.fatals)
	lockdeptest.RequireClean(fake, col)
	lockdeptest.RequireKinds(fake, col, lockdep.KindCircular)
	require.Len(t, fake.fatals, 2)
	assert.Contains(t, fake.fatals[0], "got kinds [bad-unlock], want []")
	assert.Contains(t, fake.fatals[0], "WARNING: bad unlock balance detected!")

	col.Reset()
	lockdeptest.RequireClean(t, col)
}

func TestRWMutexAnnotations(t *testing.T) {
	c, col := lockdeptest.Collect(t, lockdep.ReportAll())
	rw := &lockdep.RWMutex{Class: lockdep.NewClass("RW"), Checker: c}
	type hold struct {
		mode lockdep.Mode
		try  bool
	}
	heldModes := func() []hold {
		var out []hold
		for _, l := range c.Held() {
			out = append(out, hold{l.Mode, l.Try})
		}
		return out
	}

	rw.RLock()
	rw.AssertHeld()
	assert.Equal(t, []hold{{lockdep.Shared, false}}, heldModes())
	rw.RUnlock()
	rw.AssertNotHeld()

	require.True(t, rw.TryRLock())
	assert.Equal(t, []hold{{lockdep.Shared, true}}, heldModes())
	assert.False(t, rw.TryLock(), "a reader blocks the writer")
	rw.RUnlock()

	rw.Lock()
	assert.Equal(t, []hold{{lockdep.Exclusive, false}}, heldModes())
	assert.False(t, rw.TryRLock(), "the writer blocks readers")
	rw.Unlock()

	require.True(t, rw.TryLock())
	assert.Equal(t, []hold{{lockdep.Exclusive, true}}, heldModes())
	rw.Unlock()
	assert.Empty(t, c.Held())
	lockdeptest.RequireClean(t, col)

	// A second RLock on one goroutine can deadlock behind a queued writer.
	rw.RLock()
	rw.RLock()
	assert.False(t, rw.TryLock(), "two readers block the writer")
	rw.RUnlock()
	rw.RUnlock()
	lockdeptest.RequireKinds(t, col, lockdep.KindRecursive)
}

func TestMutexTryLock(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	mu := &lockdep.Mutex{Class: lockdep.NewClass("A"), Checker: c}
	require.True(t, mu.TryLock())
	held := c.Held()
	require.Len(t, held, 1)
	assert.True(t, held[0].Try)
	var got bool
	runOnGoroutine(func() { got = mu.TryLock() })
	assert.False(t, got)
	mu.Unlock()
	lockdeptest.RequireClean(t, col)
}

func TestOutOfOrderReleaseKeepsChains(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B", "C", "D")
	a, b, x, d := ms[0], ms[1], ms[2], ms[3]

	var afterRelease, afterD []string
	runOnGoroutine(func() {
		a.Acquire(lockdep.Exclusive)
		b.Acquire(lockdep.Exclusive)
		x.Acquire(lockdep.Exclusive)
		b.Release()
		afterRelease = heldClassNames(c)
		d.Acquire(lockdep.Exclusive)
		afterD = heldClassNames(c)
		d.Release()
		a.Release()
		x.Release()
	})
	lockdeptest.RequireClean(t, col)
	assert.Equal(t, []string{"A", "C"}, afterRelease)
	assert.Equal(t, []string{"A", "C", "D"}, afterD)
	assert.True(t, c.HasDependency(a.Class, x.Class), "C was re-validated under A")
	assert.True(t, c.HasDependency(x.Class, d.Class), "D was checked against the new top, C")
	assert.False(t, c.HasDependency(b.Class, d.Class))

	// Later acquisitions are still checked against what was learned.
	runOnGoroutine(func() { takeInOrder(d, a) })
	lockdeptest.RequireKinds(t, col, lockdep.KindCircular)
	assert.Equal(t, []string{"D", "A", "C"}, col.Reports()[0].Cycle())
}

func TestStatsCountsGraph(t *testing.T) {
	c, col := lockdeptest.Collect(t)
	ms := newTestMaps(c, "A", "B", "C")
	runOnGoroutine(func() { takeInOrder(ms...) })
	runOnGoroutine(func() { takeInOrder(ms...) }) // the cached chains add nothing
	lockdeptest.RequireClean(t, col)
	assert.Equal(t, lockdep.Stats{Classes: 3, Edges: 2, Chains: 3}, c.Stats())
}
