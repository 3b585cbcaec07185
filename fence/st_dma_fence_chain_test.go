package fence_test

// The kernel's drivers/dma-buf/st-dma-fence-chain.c (suite dma_fence_chain), one Go
// test per selftest, named after it.

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
)

// chainSize is the selftests' CHAIN_SZ.
const chainSize = 4 << 10

// fenceChains is the selftests' struct fence_chains: payload fences, and the chain
// points carrying them, each linked after the previous one.
type fenceChains struct {
	fences []*fence.Fence
	chains []*fence.Chain
}

func seqnoInc(i int) uint64  { return uint64(i) + 1 }
func seqnoInc2(i int) uint64 { return 2*uint64(i) + 2 }

// newFenceChains is fence_chains_init(): n mock payloads, each in a chain point
// after the previous one with seqno(i), every point enable-signalled. As
// mock_chain() does, each point gets references of its own to prev and payload, so
// that fc keeps its own.
func newFenceChains(t testing.TB, n int, seqno func(int) uint64) *fenceChains {
	t.Helper()
	ctx := mockContext(t)
	fc := &fenceChains{fences: make([]*fence.Fence, n), chains: make([]*fence.Chain, n)}
	var prev *fence.Fence
	for i := range n {
		fc.fences[i] = ctx.Next()
		if prev != nil {
			prev.Get()
		}
		fc.chains[i] = fence.NewChain(prev, fc.fences[i].Get(), seqno(i))
		fc.chains[i].EnableSignaling()
		prev = &fc.chains[i].Fence
	}
	return fc
}

func (fc *fenceChains) tail() *fence.Chain { return fc.chains[len(fc.chains)-1] }

// fini is fence_chains_fini(): signal every payload and drop every reference. Each
// point must then have signalled too, or its Put would report a leak to the
// test's checker.
func (fc *fenceChains) fini(t testing.TB) {
	t.Helper()
	for _, f := range fc.fences {
		_ = f.Signal()
		f.Put()
	}
	for i, c := range fc.chains {
		assert.True(t, c.IsSignaled(), "chain[%d] not signalled after all payloads", i)
		c.Put()
	}
}

func TestDmaFenceChain_sanitycheck(t *testing.T) {
	f := mockFence(t)
	chain := fence.NewChain(nil, f, 1)
	chain.EnableSignaling()

	require.NoError(t, f.Signal())
	f.Put()

	assert.True(t, chain.IsSignaled())
	chain.Put()
}

func TestDmaFenceChain_find_seqno(t *testing.T) {
	fc := newFenceChains(t, 64, seqnoInc)
	defer fc.fini(t)
	tail := fc.tail()

	f, err := tail.FindSeqno(0)
	require.NoError(t, err, "find_seqno(0)")
	require.Same(t, &tail.Fence, f, "find_seqno(0) must leave the fence unchanged")

	for i := range fc.chains {
		f, err := tail.FindSeqno(uint64(i + 1))
		require.NoError(t, err, "find_seqno(%d)", i+1)
		require.Same(t, &fc.chains[i].Fence, f, "find_seqno(%d)", i+1)

		self := fence.AsChain(f)
		require.NotNil(t, self)
		f, err = self.FindSeqno(uint64(i + 1))
		require.NoError(t, err, "finding self")
		require.Same(t, &fc.chains[i].Fence, f, "finding self")

		_, err = self.FindSeqno(uint64(i + 2))
		require.ErrorIs(t, err, fence.ErrNotYetAdded, "future fence: find_seqno(%d:%d)", i+1, i+2)
		require.ErrorIs(t, err, fence.ErrInvalid, "the kernel's -EINVAL")

		f, err = self.FindSeqno(uint64(i))
		require.NoError(t, err, "previous fence")
		if i > 0 {
			require.Same(t, &fc.chains[i-1].Fence, f, "find_seqno(%d:%d)", i+1, i)
		} else {
			require.Same(t, &fc.chains[0].Fence, f, "find_seqno(0) leaves the fence unchanged")
		}
	}
}

func TestDmaFenceChain_find_signaled(t *testing.T) {
	fc := newFenceChains(t, 2, seqnoInc)
	defer fc.fini(t)

	require.NoError(t, fc.fences[0].Signal())

	f, err := fc.tail().FindSeqno(1)
	require.NoError(t, err)
	if f != nil {
		// Either the point itself (not yet collected) or nothing: it has signalled.
		require.Same(t, &fc.chains[0].Fence, f, "wrong point reported for completed seqno 1: seqno %d", f.Seqno())
	}
}

func TestDmaFenceChain_find_out_of_order(t *testing.T) {
	fc := newFenceChains(t, 3, seqnoInc)
	defer fc.fini(t)

	require.NoError(t, fc.fences[1].Signal())

	// Payload 2 of the 1-2-3 chain signalled, payload 1 did not: point 2 is not
	// complete until 1 is, so the point to wait on is chain[0] (chain[1] is
	// unlinked as the walk passes it).
	f, err := fc.tail().FindSeqno(2)
	require.NoError(t, err)
	require.Same(t, &fc.chains[0].Fence, f)
	require.Same(t, &fc.chains[0].Fence, fc.chains[2].Prev(), "the signalled link is garbage-collected")
}

func TestDmaFenceChain_find_gap(t *testing.T) {
	fc := newFenceChains(t, 64, seqnoInc2)
	defer fc.fini(t)
	tail := fc.tail()

	for i := range fc.chains {
		f, err := tail.FindSeqno(uint64(2*i + 1))
		require.NoError(t, err, "find_seqno(%d)", 2*i+1)
		require.Same(t, &fc.chains[i].Fence, f, "find_seqno(%d)", 2*i+1)

		f, err = fence.AsChain(f).FindSeqno(uint64(2*i + 2))
		require.NoError(t, err, "finding self")
		require.Same(t, &fc.chains[i].Fence, f, "finding self")
	}
}

// TestDmaFenceChain_find_race runs the kernel's find_race bounded by operations
// instead of five seconds: one goroutine per CPU the scheduler uses (at least two),
// as the kernel starts num_online_cpus() threads, looks up random points while
// signalling random payloads.
func TestDmaFenceChain_find_race(t *testing.T) {
	const ops = 2000
	workers := max(runtime.GOMAXPROCS(0), 2)
	t.Parallel() // the heaviest tests overlap, after the quick ones
	fc := newFenceChains(t, chainSize, seqnoInc)
	defer fc.fini(t)
	tail := fc.tail()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0x5eed))
			for range ops {
				seqno := rng.Uint64N(uint64(len(fc.chains))) + 1
				f, err := tail.FindSeqno(seqno)
				if !assert.NoError(t, err, "failed to find seqno %d", seqno) {
					return
				}
				if f != nil {
					// The walk stops at the first point at or below seqno.
					if !assert.LessOrEqual(t, f.Seqno(), seqno) {
						return
					}
					// We can only find ourselves if we are on the point we looked for.
					if f.Seqno() == seqno {
						self, err := fence.AsChain(f).FindSeqno(seqno)
						if !assert.NoError(t, err, "find-self %d", seqno) ||
							!assert.Same(t, f, self, "find-self %d", seqno) {
							return
						}
					}
				}
				_ = fc.fences[rng.IntN(len(fc.fences)-1)].Signal()
			}
		})
	}
	wg.Wait()
}

func TestDmaFenceChain_signal_forward(t *testing.T) {
	fc := newFenceChains(t, 64, seqnoInc)
	defer fc.fini(t)

	for i := range fc.chains {
		require.NoError(t, fc.fences[i].Signal())
		require.True(t, fc.chains[i].IsSignaled(), "chain[%d] not signalled", i)
		if i+1 < len(fc.chains) {
			require.False(t, fc.chains[i+1].IsSignaled(), "chain[%d] is signalled", i+1)
		}
	}
}

func TestDmaFenceChain_signal_backward(t *testing.T) {
	fc := newFenceChains(t, 64, seqnoInc)
	defer fc.fini(t)

	for i := len(fc.chains) - 1; i >= 0; i-- {
		require.NoError(t, fc.fences[i].Signal())
		if i > 0 {
			require.False(t, fc.chains[i].IsSignaled(), "chain[%d] is signalled", i)
		}
	}
	for i, c := range fc.chains {
		require.True(t, c.IsSignaled(), "chain[%d] was not signalled", i)
	}
}

// waitFenceChains is the body of the kernel's wait_* tests: a goroutine waits on
// the tail of a CHAIN_SZ chain (blocked before any payload signals, which the
// bubble guarantees), the payloads are signalled in the given order, and the
// waiter must return nil and is joined. As in the kernel every point has
// signalling enabled, so signalling backwards moves the callback of every newer
// point at each step: n*n/2 moves, the slowest test under -race.
func waitFenceChains(t *testing.T, order func(fc *fenceChains) []*fence.Fence) {
	t.Parallel() // the heaviest tests overlap, after the quick ones
	synctest.Test(t, func(t *testing.T) {
		fc := newFenceChains(t, chainSize, seqnoInc)
		defer fc.fini(t)

		done := make(chan error, 1)
		go func() { done <- fc.tail().Wait(t.Context()) }()
		synctest.Wait() // the waiter is blocked on the tail

		for _, f := range order(fc) {
			require.NoError(t, f.Signal())
		}
		require.NoError(t, <-done)
		require.True(t, fc.tail().IsSignaled())
	})
}

func TestDmaFenceChain_wait_forward(t *testing.T) {
	waitFenceChains(t, func(fc *fenceChains) []*fence.Fence { return fc.fences })
}

func TestDmaFenceChain_wait_backward(t *testing.T) {
	waitFenceChains(t, func(fc *fenceChains) []*fence.Fence {
		rev := make([]*fence.Fence, len(fc.fences))
		for i, f := range fc.fences {
			rev[len(rev)-1-i] = f
		}
		return rev
	})
}

func TestDmaFenceChain_wait_random(t *testing.T) {
	waitFenceChains(t, func(fc *fenceChains) []*fence.Fence {
		shuffled := append([]*fence.Fence(nil), fc.fences...)
		rng := rand.New(rand.NewPCG(4096, 0x5eed))
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		return shuffled
	})
}
