package fence_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/internal/benchcmp"
	"github.com/gpusync/gpusync/lockdep"
)

// The benchmarks of issue 4's table. Each ratio benchmark times its baseline in the
// same run, in blocks alternating with the code under test, and reports the ratio
// under the unit name the table gives; ns/op is the time of one operation of ours,
// and the baseline's is reported beside it. allocs/op and B/op, when shown, count
// both sides together.
//
// The ratio benchmarks run with the fence annotations going to a disabled lockdep
// checker (lockdep=off), the production configuration, and the first two also with
// checking on (lockdep=on), where any report fails the benchmark.

// both runs base and ours through benchcmp.Run and returns their times.
func both(n int, base, ours benchcmp.Side) (tBase, tOurs time.Duration) {
	t := benchcmp.Run(n, base, ours)
	return t[0], t[1]
}

// checkers runs bench under lockdep=off (a disabled checker, the production
// configuration) and lockdep=on (an enabled checker whose reports fail b).
func checkers(b *testing.B, bench func(b *testing.B, chk *lockdep.Checker)) {
	b.Run("lockdep=off", func(b *testing.B) { bench(b, lockdep.NewChecker(lockdep.Off())) })
	b.Run("lockdep=on", func(b *testing.B) { bench(b, checkedNoReports(b)) })
}

// checkedNoReports returns an enabled checker that collects its reports, and fails b
// at its end if there are any.
func checkedNoReports(b *testing.B) *lockdep.Checker {
	col := new(lockdep.Collector)
	b.Cleanup(func() {
		if reps := col.Reports(); len(reps) > 0 {
			b.Errorf("lockdep made %d reports, the first:\n%s", len(reps), reps[0])
		}
	})
	return lockdep.NewChecker(lockdep.WithHandler(col.Handle))
}

// Sinks keep what the loops make on the heap, as a fence shared between goroutines
// is, so that escape analysis treats both sides alike.
var (
	sinkChan  chan struct{}
	sinkFence *fence.Fence
	sinkNaive *naiveFence
)

// BenchmarkCreateSignal compares making a fence and signalling it with making a
// channel and closing it. Reports fence/chan (goal <= 1.5).
func BenchmarkCreateSignal(b *testing.B) {
	checkers(b, func(b *testing.B, chk *lockdep.Checker) {
		b.ReportAllocs()
		fctx := fence.NewContext("bench", "create-signal", fence.WithChecker(chk))
		var seq uint64
		tBase, tOurs := both(b.N,
			benchcmp.Loop(func(k int) {
				for range k {
					c := make(chan struct{})
					close(c)
					sinkChan = c
				}
			}),
			benchcmp.Loop(func(k int) {
				for range k {
					seq++
					f := fctx.New(seq)
					if err := f.Signal(); err != nil {
						b.Fatal(err)
					}
					sinkFence = f
				}
			}))
		b.ReportMetric(benchcmp.PerOp(tOurs, b.N), "ns/op")
		b.ReportMetric(benchcmp.PerOp(tBase, b.N), "chan-ns/op")
		b.ReportMetric(benchcmp.Ratio(tOurs, tBase), "fence/chan")
	})
}

// BenchmarkSignalWake compares Signal waking a goroutine blocked in Wait with an
// unbuffered channel send waking a goroutine blocked in a receive. Both sides play
// the same ping-pong with a long-lived helper goroutine: the benchmark wakes the
// helper, which wakes it back, so one operation is two wakes. The fence side gets a
// fresh pair of fences per operation, made untimed before each block (creation is
// BenchmarkCreateSignal's); the channel side reuses its two channels, as channels
// are used. Reports wake/chan (goal <= 1.2).
//
// A third side plays the same game with oneShot, the least any one-shot wake-up
// built on a channel can do, and reports it as floor/chan: what no fence design
// can go below on this machine.
func BenchmarkSignalWake(b *testing.B) {
	checkers(b, func(b *testing.B, chk *lockdep.Checker) {
		b.ReportAllocs()
		fctx := fence.NewContext("bench", "wake", fence.WithChecker(chk))
		bg := context.Background()

		ping, pong := make(chan struct{}), make(chan struct{})
		chanBlocks := make(chan int)             // operations in the next block
		fenceBlocks := make(chan []*fence.Fence) // the next block's pings and pongs, alternating
		var wg sync.WaitGroup
		wg.Go(func() {
			for k := range chanBlocks {
				for range k {
					<-ping
					pong <- struct{}{}
				}
			}
		})
		wg.Go(func() {
			for fs := range fenceBlocks {
				for i := 0; i < len(fs); i += 2 {
					if err := fs[i].Wait(bg); err != nil {
						b.Error(err)
					}
					if err := fs[i+1].Signal(); err != nil {
						b.Error(err)
					}
				}
			}
		})
		shotBlocks := make(chan []*oneShot)
		wg.Go(func() {
			w := newShotWaiter()
			for shots := range shotBlocks {
				for i := 0; i < len(shots); i += 2 {
					shots[i].wait(w)
					shots[i+1].signal()
				}
			}
		})
		defer func() {
			close(chanBlocks)
			close(fenceBlocks)
			close(shotBlocks)
			wg.Wait()
		}()

		var seq uint64
		shotW := newShotWaiter()
		t := benchcmp.Run(b.N,
			func(k int) time.Duration {
				chanBlocks <- k
				t0 := time.Now()
				for range k {
					ping <- struct{}{}
					<-pong
				}
				return time.Since(t0)
			},
			func(k int) time.Duration {
				fs := make([]*fence.Fence, 2*k)
				for i := range fs {
					seq++
					fs[i] = fctx.New(seq)
				}
				fenceBlocks <- fs
				t0 := time.Now()
				for i := 0; i < len(fs); i += 2 {
					if err := fs[i].Signal(); err != nil {
						b.Fatal(err)
					}
					if err := fs[i+1].Wait(bg); err != nil {
						b.Fatal(err)
					}
				}
				return time.Since(t0)
			},
			func(k int) time.Duration {
				shots := make([]*oneShot, 2*k)
				for i := range shots {
					shots[i] = new(oneShot)
				}
				shotBlocks <- shots
				t0 := time.Now()
				for i := 0; i < len(shots); i += 2 {
					shots[i].signal()
					shots[i+1].wait(shotW)
				}
				return time.Since(t0)
			})
		tBase, tOurs, tShot := t[0], t[1], t[2]
		b.ReportMetric(benchcmp.PerOp(tOurs, b.N), "ns/op")
		b.ReportMetric(benchcmp.PerOp(tOurs, 2*b.N), "ns/wake")
		b.ReportMetric(benchcmp.PerOp(tBase, 2*b.N), "chan-ns/wake")
		b.ReportMetric(benchcmp.Ratio(tOurs, tBase), "wake/chan")
		b.ReportMetric(benchcmp.Ratio(tShot, tBase), "floor/chan")
	})
}

// oneShot is the floor of BenchmarkSignalWake: the least a one-shot wake-up can do
// on top of a channel hand-off, which is all Go offers to park a goroutine. One
// waiter, no callbacks, no error, no lock: Wait registers with one compare-and-swap
// and Signal takes the registration with one swap, against a fence's three atomic
// operations (Wait takes and drops the fence lock; Signal marks the fence
// signalled) and its bookkeeping. Like the fences, each is fresh.
type oneShot struct {
	state atomic.Pointer[shotWaiter] // nil, a waiter, or shotDone
	_     [72]byte                   // as large as a Fence, so that as much memory is new
}

// A shotWaiter is one goroutine's wake-up channel, reused like a fence waiter's.
type shotWaiter struct{ wake chan struct{} }

func newShotWaiter() *shotWaiter { return &shotWaiter{wake: make(chan struct{}, 1)} }

// shotDone marks a signalled oneShot.
var shotDone = new(shotWaiter)

func (o *oneShot) wait(w *shotWaiter) {
	if o.state.Load() == shotDone || !o.state.CompareAndSwap(nil, w) {
		return // signalled
	}
	<-w.wake
}

func (o *oneShot) signal() {
	if w := o.state.Swap(shotDone); w != nil && w != shotDone {
		w.wake <- struct{}{} // buffered: never blocks, one wake-up per registration
	}
}

// naiveFence is the baseline of BenchmarkCallback: the fence anyone would write
// first, a mutex, a flag and a slice of funcs.
type naiveFence struct {
	mu       sync.Mutex
	signaled bool     // guarded by mu
	cbs      []func() // guarded by mu
}

// add queues fn, or reports false if n has signalled.
func (n *naiveFence) add(fn func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.signaled {
		return false
	}
	n.cbs = append(n.cbs, fn)
	return true
}

// signal marks n signalled and runs its callbacks, or reports false if it already
// was.
func (n *naiveFence) signal() bool {
	n.mu.Lock()
	if n.signaled {
		n.mu.Unlock()
		return false
	}
	n.signaled = true
	cbs := n.cbs
	n.cbs = nil
	n.mu.Unlock()
	for _, fn := range cbs {
		fn()
	}
	return true
}

// The callbacks' trivial work: count.
var naiveHits, fenceHits int

func naiveHit()                              { naiveHits++ }
func fenceHit(*fence.Fence, *fence.Callback) { fenceHits++ }

// BenchmarkCallback compares making a fence, adding a callback and signalling it
// with the same on naiveFence; both callbacks count. The fence side reuses one
// caller-owned Callback, as the API intends. Lockdep off. Reports cb/naive (goal
// <= 1.0).
func BenchmarkCallback(b *testing.B) {
	b.ReportAllocs()
	fctx := fence.NewContext("bench", "callback", fence.WithChecker(lockdep.NewChecker(lockdep.Off())))
	naiveHits, fenceHits = 0, 0
	var cb fence.Callback
	var seq uint64
	tBase, tOurs := both(b.N,
		benchcmp.Loop(func(k int) {
			for range k {
				n := new(naiveFence)
				if !n.add(naiveHit) || !n.signal() {
					b.Fatal("naive fence refused")
				}
				sinkNaive = n
			}
		}),
		benchcmp.Loop(func(k int) {
			for range k {
				seq++
				f := fctx.New(seq)
				if err := f.AddCallback(&cb, fenceHit); err != nil {
					b.Fatal(err)
				}
				if err := f.Signal(); err != nil {
					b.Fatal(err)
				}
				sinkFence = f
			}
		}))
	if naiveHits != b.N || fenceHits != b.N {
		b.Fatalf("callbacks ran %d (naive) and %d (fence) times, want %d", naiveHits, fenceHits, b.N)
	}
	b.ReportMetric(benchcmp.PerOp(tOurs, b.N), "ns/op")
	b.ReportMetric(benchcmp.PerOp(tBase, b.N), "naive-ns/op")
	b.ReportMetric(benchcmp.Ratio(tOurs, tBase), "cb/naive")
}

// chainLinks is the length of BenchmarkChainFindSeqno's chain.
const chainLinks = 100_000

// BenchmarkChainFindSeqno times Chain.FindSeqno on a chain of 100,000 points, every
// payload unsignalled, for seqnos drawn uniformly (a fixed seed) from 1 to the head:
// each find walks back from the head, half the chain on average, and unlinks
// nothing. Reports ns/find.
func BenchmarkChainFindSeqno(b *testing.B) {
	b.ReportAllocs()
	fctx := fence.NewContext("bench", "chain-payloads", fence.WithChecker(lockdep.NewChecker(lockdep.Off())))
	var head *fence.Chain
	var prev *fence.Fence
	for s := uint64(1); s <= chainLinks; s++ {
		head = fence.NewChain(prev, fctx.New(s), s)
		prev = &head.Fence
	}
	rng := rand.New(rand.NewPCG(4, 100_000))
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		s := 1 + rng.Uint64N(chainLinks)
		f, err := head.FindSeqno(s)
		if err != nil || f == nil || f.Seqno() != s {
			b.Fatalf("FindSeqno(%d) = %v, %v; want the point with that seqno", s, f, err)
		}
	}
	b.ReportMetric(benchcmp.PerOp(time.Since(t0), b.N), "ns/find")
}

// BenchmarkMerge times Merge of 1,000 unsignalled fences, ten on each of 100
// contexts, in a shuffled order (a fixed seed): the result is an array of the 100
// latest. Reports ns/merge.
func BenchmarkMerge(b *testing.B) {
	const nFences, nContexts = 1000, 100
	b.ReportAllocs()
	chk := lockdep.NewChecker(lockdep.Off())
	ctxs := make([]*fence.Context, nContexts)
	for i := range ctxs {
		ctxs[i] = fence.NewContext("bench", "merge", fence.WithChecker(chk))
	}
	fences := make([]*fence.Fence, nFences)
	for i := range fences {
		fences[i] = ctxs[i%nContexts].New(uint64(i/nContexts + 1))
	}
	rng := rand.New(rand.NewPCG(4, 1000))
	rng.Shuffle(len(fences), func(i, j int) { fences[i], fences[j] = fences[j], fences[i] })
	b.ResetTimer()
	t0 := time.Now()
	var m *fence.Fence
	for range b.N {
		m = fence.Merge(fences...)
	}
	d := time.Since(t0)
	b.StopTimer()
	a := fence.AsArray(m)
	if a == nil || len(a.Fences()) != nContexts {
		b.Fatalf("Merge = %v, want an array of %d fences", m, nContexts)
	}
	for _, f := range a.Fences() {
		if f.Seqno() != nFences/nContexts {
			b.Fatalf("Merge kept %v, want the latest fence of its context", f)
		}
	}
	b.ReportMetric(benchcmp.PerOp(d, b.N), "ns/merge")
}
