package resv_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
)

// The scenarios of the kernel's drivers/dma-buf/st-dma-resv.c (suite dma_resv),
// each run once per usage, Kernel to Bookkeep, as the kernel's suite is.

// stResvFixture is what every st-dma-resv test starts from: an object and a fence,
// both reporting to a checker that fails the test, and (if add) the fence added to
// the object with usage u, as the kernel's tests do under the lock.
func stResvFixture(t *testing.T, u resv.Usage, add bool) (*resv.Object, *fence.Fence) {
	t.Helper()
	chk := lockdeptest.New(t)
	o := resv.NewObject(chk)
	f := newTimeline(chk).Next()
	f.EnableSignaling()
	if add {
		require.NoError(t, o.Lock(context.Background(), nil))
		require.NoError(t, o.Reserve(1))
		require.NoError(t, o.AddFence(f, u))
		o.Unlock()
	}
	return o, f
}

// sanitycheck: a fence signals and is put; an object locks without an acquire
// context and unlocks.
func TestDMAResvSanitycheck(t *testing.T) {
	perUsage(t, func(t *testing.T, u resv.Usage) {
		o, f := stResvFixture(t, u, false)
		require.NoError(t, f.Signal())
		f.Put()
		require.NoError(t, o.Lock(context.Background(), nil))
		require.True(t, o.IsLocked())
		require.Nil(t, o.LockingCtx(), "locked without an acquire context")
		o.Unlock()
		require.False(t, o.IsLocked())
	})
}

// test_signaling: a fence added with usage u makes TestSignaled(u) false until it
// signals.
func TestDMAResvSignaling(t *testing.T) {
	perUsage(t, func(t *testing.T, u resv.Usage) {
		o, f := stResvFixture(t, u, true)
		require.False(t, o.TestSignaled(u), "resv unexpectedly signalled")
		require.NoError(t, f.Signal())
		require.True(t, o.TestSignaled(u), "resv not reporting signalled")
	})
}

// test_for_each: the locked iteration for usage u yields exactly the fence, with
// usage u.
func TestDMAResvForEach(t *testing.T) {
	perUsage(t, func(t *testing.T, u resv.Usage) {
		o, f := stResvFixture(t, u, true)
		require.NoError(t, o.Lock(context.Background(), nil))
		defer o.Unlock()
		n := 0
		for g, gu := range o.Fences(u) {
			n++
			require.Equal(t, 1, n, "more than one fence found")
			require.Same(t, f, g, "unexpected fence")
			require.Equal(t, u, gu, "unexpected usage")
		}
		require.Equal(t, 1, n, "no fence found")
	})
}

// test_for_each_unlocked: the lock-free iteration yields the fence with
// IsRestarted set; after the list is replaced under it, it restarts and yields the
// same fence again, again with IsRestarted; then it ends. The kernel forces the
// mismatch by poisoning the cursor; ForceRestart republishes the list instead.
func TestDMAResvForEachUnlocked(t *testing.T) {
	perUsage(t, func(t *testing.T, u resv.Usage) {
		o, f := stResvFixture(t, u, true)
		it := o.Iter(u)
		n := 0
		for g := it.Next(); g != nil; g = it.Next() {
			n++
			require.LessOrEqual(t, n, 2, "more than one fence found")
			require.True(t, it.IsRestarted(), "no restart flag on fence %d", n)
			require.Same(t, f, g, "unexpected fence")
			require.Equal(t, u, it.Usage(), "unexpected usage")
			if n == 1 {
				require.NoError(t, o.Lock(context.Background(), nil))
				resv.ForceRestart(o) // that should trigger a restart
				o.Unlock()
			}
		}
		require.Equal(t, 2, n, "the fence once, and once more after the restart")
	})
}

// test_get_fences: GetFences(u) returns the one fence.
func TestDMAResvGetFences(t *testing.T) {
	perUsage(t, func(t *testing.T, u resv.Usage) {
		o, f := stResvFixture(t, u, true)
		got := o.GetFences(u)
		require.Len(t, got, 1)
		require.Same(t, f, got[0])
		require.NoError(t, f.Signal())
		require.Empty(t, o.GetFences(u), "a signalled fence is not returned")
	})
}
