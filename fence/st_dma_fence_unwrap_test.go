package fence_test

// The kernel's drivers/dma-buf/st-dma-fence-unwrap.c (suite dma_fence_unwrap), one
// Go test per selftest, named after it. The kernel checks which fences an unwrap
// yields; where the order is defined (array index order, chain newest first,
// merge results sorted by context) these tests check the exact sequence.

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// newUnwrapMocks makes the selftests' helpers for one test: mock fences on fresh
// contexts (seqno 1), arrays on a fresh context, and chain points with seqno 1,
// all reporting to one checker that fails t on any report.
func newUnwrapMocks(t *testing.T) (mock func() *fence.Fence, array func(...*fence.Fence) *fence.Fence, chain func(prev, f *fence.Fence) *fence.Fence) {
	chk := lockdeptest.New(t)
	mock = func() *fence.Fence {
		f := mockContextOn(chk).Next()
		f.EnableSignaling()
		return f
	}
	array = func(fs ...*fence.Fence) *fence.Fence {
		return &fence.NewArray(fs, fence.AllocContexts(1), 1, false).Fence
	}
	chain = func(prev, f *fence.Fence) *fence.Fence {
		return &fence.NewChain(prev, f, 1).Fence
	}
	return mock, array, chain
}

func TestDmaFenceUnwrap_sanitycheck(t *testing.T) {
	mock, array, chain := newUnwrapMocks(t)
	f := mock()
	c := chain(nil, array(f))
	require.Equal(t, []*fence.Fence{f}, unwrapAll(c))
	c.Put()
	require.NoError(t, f.Signal())
}

func TestDmaFenceUnwrap_unwrap_array(t *testing.T) {
	mock, array, _ := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	a := array(f1, f2)
	require.Equal(t, []*fence.Fence{f1, f2}, unwrapAll(a))
	a.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_chain(t *testing.T) {
	mock, _, chain := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	c := chain(f1, f2)
	// The point's payload first, then the (plain) previous fence.
	require.Equal(t, []*fence.Fence{f2, f1}, unwrapAll(c))
	c.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_chain_array(t *testing.T) {
	mock, array, chain := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	c := chain(nil, array(f1, f2))
	require.Equal(t, []*fence.Fence{f1, f2}, unwrapAll(c))
	c.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_merge(t *testing.T) {
	mock, _, _ := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	f3 := fence.Merge(f1, f2)
	require.NotNil(t, fence.AsArray(f3), "two pending fences of two contexts merge into an array")
	require.Equal(t, []*fence.Fence{f1, f2}, unwrapAll(f3))
	f3.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_merge_duplicate(t *testing.T) {
	mock, _, _ := newUnwrapMocks(t)
	f1 := mock()
	f2 := fence.Merge(f1, f1)
	require.Same(t, f1, f2, "one fence left: Merge returns it")
	require.Equal(t, []*fence.Fence{f1}, unwrapAll(f2))
	f2.Put()
	require.NoError(t, f1.Signal())
}

func TestDmaFenceUnwrap_unwrap_merge_seqno(t *testing.T) {
	chk := lockdeptest.New(t)
	ctx0, ctx1 := mockContextOn(chk), mockContextOn(chk)
	f1, f2, f3 := ctx1.New(1), ctx1.New(2), ctx0.New(1)

	f4 := fence.Merge(f1, f2, f3)
	// One fence per context, the later one kept, sorted by context.
	require.Equal(t, []*fence.Fence{f3, f2}, unwrapAll(f4))
	f4.Put()
	signalAll(f1, f2, f3)
}

func TestDmaFenceUnwrap_unwrap_merge_order(t *testing.T) {
	mock, array, chain := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	a1 := array(f1, f2)
	c1 := chain(nil, f1)
	c2 := chain(c1, f2)

	// The chain holds the array's fences in the opposite order; the merge must
	// remove the duplicates and keep context order.
	a2 := fence.Merge(a1, c2)
	require.Equal(t, []*fence.Fence{f1, f2}, unwrapAll(a2))
	a2.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_merge_complex(t *testing.T) {
	mock, array, _ := newUnwrapMocks(t)
	f1, f2 := mock(), mock()
	f3 := fence.Merge(f1, f2)
	f4 := array(f2, f1) // the fences in reverse

	// Signalled fences (the stub) are filtered, the two arrays flattened and merged.
	f5 := fence.Merge(f3, f4, fence.Stub())
	require.Equal(t, []*fence.Fence{f1, f2}, unwrapAll(f5))
	f5.Put()
	signalAll(f1, f2)
}

func TestDmaFenceUnwrap_unwrap_merge_complex_seqno(t *testing.T) {
	chk := lockdeptest.New(t)
	ctx0, ctx1 := mockContextOn(chk), mockContextOn(chk)
	f1, f2, f3, f4 := ctx0.New(2), ctx1.New(1), ctx0.New(1), ctx1.New(2)
	f5 := &fence.NewArray([]*fence.Fence{f1, f2}, fence.AllocContexts(1), 1, false).Fence
	f6 := &fence.NewArray([]*fence.Fence{f3, f4}, fence.AllocContexts(1), 1, false).Fence

	f7 := fence.Merge(f5, f6)
	require.Equal(t, []*fence.Fence{f1, f4}, unwrapAll(f7))
	f7.Put()
	signalAll(f1, f2, f3, f4)
}
