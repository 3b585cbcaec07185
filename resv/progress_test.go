package resv_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
)

// Progress: goroutines locking random overlapping sets always finish, with no
// deadlock and no livelock. Each goroutine runs a fixed number of transactions;
// every wait is bounded by hangGuard only so that a deadlock fails the test
// instead of hanging it. Mutual exclusion is checked on the way: each lock has a
// holder count that must be 1 while it is held.
const (
	progressWorkers = 8
	progressLocks   = 32
	progressIters   = 150
)

// progressSet draws 4 to 8 distinct indices of progressLocks, in random order.
func progressSet(rng *rand.Rand) []int {
	return rng.Perm(progressLocks)[:4+rng.IntN(5)]
}

// progressStats totals the retries of every transaction.
type progressStats struct {
	txns, retries, maxRetries atomic.Int64
}

func (s *progressStats) add(retries int64) {
	s.txns.Add(1)
	s.retries.Add(retries)
	for {
		m := s.maxRetries.Load()
		if retries <= m || s.maxRetries.CompareAndSwap(m, retries) {
			return
		}
	}
}

func (s *progressStats) String() string {
	return fmt.Sprintf("%d transactions, %d back-offs (at most %d in one)",
		s.txns.Load(), s.retries.Load(), s.maxRetries.Load())
}

// runProgress runs progressWorkers goroutines of progressIters transactions each;
// txn runs one transaction on the locks with the given indices, calling inside
// when it holds them all, and returns its retry count.
func runProgress(t *testing.T, txn func(ctx context.Context, set []int, inside func() error) (int64, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	var holders [progressLocks]atomic.Int32
	inside := func(set []int) func() error {
		return func() error {
			for _, i := range set {
				if n := holders[i].Add(1); n != 1 {
					return fmt.Errorf("lock %d held by %d transactions at once", i, n)
				}
			}
			for _, i := range set {
				holders[i].Add(-1)
			}
			return nil
		}
	}
	var stats progressStats
	errs := make([]error, progressWorkers)
	var wg sync.WaitGroup
	for w := range progressWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(progressLocks, uint64(w)))
			for range progressIters {
				set := progressSet(rng)
				retries, err := txn(ctx, set, inside(set))
				if err != nil {
					errs[w] = err
					return
				}
				stats.add(retries)
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		require.NoError(t, err, "worker %d", w)
	}
	require.EqualValues(t, progressWorkers*progressIters, stats.txns.Load(), "every transaction finished")
	t.Log(&stats)
}

// Wound-wait and wait-die ww mutexes, with the hand-written back-off; retries
// read from AcquireCtx.Retries.
func TestProgressWW(t *testing.T) {
	perClass(t, func(t *testing.T, c *resv.WWClass) {
		chk := lockdeptest.New(t)
		locks := newMutexes(c, chk, progressLocks)
		runProgress(t, func(ctx context.Context, set []int, inside func() error) (int64, error) {
			want := make([]*resv.WWMutex, len(set))
			for i, j := range set {
				want[i] = locks[j]
			}
			a := resv.NewAcquireCtx(c, chk)
			held, err := wwLock(ctx, a, nil, want, -1)
			if err == nil {
				a.AcquireDone()
				err = inside()
			}
			unlockAll(held)
			if ferr := a.Fini(); err == nil {
				err = ferr
			}
			return a.Retries(), err
		})
		for i, m := range locks {
			require.False(t, m.IsLocked(), "lock %d", i)
		}
	})
}

// Reservation objects (wait-die) locked by Execs; retries read from
// Exec.Retries.
func TestProgressExec(t *testing.T) {
	chk := lockdeptest.New(t)
	objs := newObjects(chk, progressLocks)
	runProgress(t, func(ctx context.Context, set []int, inside func() error) (int64, error) {
		e := resv.NewExec(0, chk)
		defer e.Fini()
		err := e.Run(ctx, func(ctx context.Context) error {
			for _, j := range set {
				if err := e.Lock(ctx, objs[j]); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = inside()
		}
		return int64(e.Retries()), err
	})
	requireUnlocked(t, objs...)
}
