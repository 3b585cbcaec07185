package lr_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/sched"
)

func TestNewQueueRejectsBadConfig(t *testing.T) {
	run := func(*lr.Job) error { return nil }
	cases := []struct {
		name string
		cfg  lr.QueueConfig
	}{
		{"nil Run", lr.QueueConfig{RingSize: 4}},
		{"zero ring", lr.QueueConfig{Ops: lr.QueueOps{Run: run}}},
		{"negative ring", lr.QueueConfig{RingSize: -1, Ops: lr.QueueOps{Run: run}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := lr.NewQueue(tc.cfg)
			assert.ErrorIs(t, err, sched.ErrInvalid)
			assert.Nil(t, q)
		})
	}
}

func TestNewQueueDefaults(t *testing.T) {
	q, err := lr.NewQueue(lr.QueueConfig{RingSize: 1, Ops: lr.QueueOps{Run: func(*lr.Job) error { return nil }}})
	require.NoError(t, err)
	defer q.Close()
	assert.Equal(t, "lr-queue", q.Name())
	require.NotNil(t, q.Scheduler())
	assert.Equal(t, uint32(1), q.Scheduler().CreditLimit())
	assert.NoError(t, q.Err())
	assert.Equal(t, 0, q.Inflight())
}

func TestTryPushOnFullRingWouldBlockAndChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := &engine{}
		q := newQueue(t, lockdeptest.New(t), e, 2)
		a, err := q.TryPush("a")
		require.NoError(t, err)
		_, err = q.TryPush("b")
		require.NoError(t, err)
		synctest.Wait()

		j, err := q.TryPush("c")
		assert.ErrorIs(t, err, lr.ErrWouldBlock)
		assert.Nil(t, j)
		synctest.Wait()
		assert.Equal(t, 2, q.Inflight())
		assert.Len(t, e.runs(), 2, "the refused job never reached the ring")

		a.Complete(nil)
		assert.Equal(t, 1, q.Inflight())
		c, err := q.TryPush("c")
		require.NoError(t, err)
		assert.Equal(t, "c", c.Data)
		_, err = q.TryPush("d")
		assert.ErrorIs(t, err, lr.ErrWouldBlock)
	})
}

func TestPushBlocksUntilAJobCompletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := &engine{}
		q := newQueue(t, lockdeptest.New(t), e, 1)
		first, err := q.Push(ctx, "first")
		require.NoError(t, err)

		type result struct {
			j   *lr.Job
			err error
		}
		got := make(chan result, 1)
		go func() {
			j, err := q.Push(ctx, "second")
			got <- result{j, err}
		}()
		synctest.Wait() // the pusher is durably blocked on ring space
		select {
		case r := <-got:
			t.Fatalf("Push returned %v, %v on a full ring", r.j, r.err)
		default:
		}
		assert.Equal(t, 1, q.Inflight())

		first.Complete(nil)
		synctest.Wait()
		r := <-got
		require.NoError(t, r.err)
		assert.Equal(t, "second", r.j.Data)
		assert.Equal(t, 1, q.Inflight())
		assert.Equal(t, []*lr.Job{first, r.j}, e.runs())
	})
}

func TestPushGivesUpWhenContextEnds(t *testing.T) {
	cases := []struct {
		name string
		full bool
		push func(t *testing.T, q *lr.Queue) error
		want error
	}{
		{"deadline", true, func(t *testing.T, q *lr.Queue) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := q.Push(ctx, "late")
			assert.Equal(t, 10*time.Millisecond, time.Since(start), "gave up exactly at the deadline")
			return err
		}, context.DeadlineExceeded},
		{"cancelled while blocked", true, func(t *testing.T, q *lr.Queue) error {
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { _, err := q.Push(ctx, "late"); errc <- err }()
			synctest.Wait()
			cancel()
			return <-errc
		}, context.Canceled},
		{"cancelled before, ring not full", false, func(t *testing.T, q *lr.Queue) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := q.Push(ctx, "late")
			return err
		}, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const ring = 2
				e := &engine{}
				q := newQueue(t, lockdeptest.New(t), e, ring)
				var held []*lr.Job
				n := ring
				if !tc.full {
					n = ring - 1
				}
				for i := range n {
					j, err := q.Push(context.Background(), i)
					require.NoError(t, err)
					held = append(held, j)
				}
				synctest.Wait()

				assert.ErrorIs(t, tc.push(t, q), tc.want)
				synctest.Wait()
				assert.Equal(t, n, q.Inflight(), "nothing was submitted")
				assert.Len(t, e.runs(), n)

				// No slot was left taken: after the completions the whole ring is free.
				for _, j := range held {
					j.Complete(nil)
				}
				for i := range ring {
					_, err := q.TryPush(i)
					require.NoError(t, err, "slot %d", i)
				}
				_, err := q.TryPush("one too many")
				assert.ErrorIs(t, err, lr.ErrWouldBlock)
			})
		})
	}
}

func TestCompleteTwiceIsHarmless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueue(t, lockdeptest.New(t), &engine{}, 1)
		j, err := q.Push(context.Background(), "a")
		require.NoError(t, err)
		j.Complete(nil)
		j.Complete(errInjected) // late, and with an error: ignored
		assert.NoError(t, j.Done().Error())
		assert.Equal(t, 0, q.Inflight())

		// The slot was given back once: one push fits, a second does not.
		_, err = q.TryPush("b")
		require.NoError(t, err)
		_, err = q.TryPush("c")
		assert.ErrorIs(t, err, lr.ErrWouldBlock)
	})
}

func TestJobDoneIsLongRunningAndFinishedMeansOnTheRing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := &engine{}
		q := newQueue(t, lockdeptest.New(t), e, 2)
		j, err := q.Push(ctx, "payload")
		require.NoError(t, err)
		assert.Same(t, q, j.Queue())
		assert.Equal(t, "payload", j.Data)
		synctest.Wait()

		require.NotNil(t, j.Done())
		assert.True(t, j.Done().IsLongRunning())
		assert.False(t, j.Finished().IsLongRunning(), "the scheduler's fences stay dma fences")
		assert.Equal(t, []*lr.Job{j}, e.runs())
		assert.True(t, j.Scheduled().IsSignaled())
		require.True(t, j.Finished().IsSignaled(), "finished means written to the ring")
		assert.NoError(t, j.Finished().Error())
		assert.Nil(t, j.Parent(), "no hardware fence is exported")
		assert.False(t, j.Done().IsSignaled(), "the work itself is still running")
		assert.Equal(t, 1, q.Inflight())

		// An LR fence takes callbacks only with the explicit opt-in.
		var cb fence.Callback
		assert.ErrorIs(t, j.Done().AddCallback(&cb, func(*fence.Fence, *fence.Callback) {}), fence.ErrLongRunning)
		called := make(chan struct{})
		require.NoError(t, j.Done().AddCallbackUnbounded(&cb, func(*fence.Fence, *fence.Callback) { close(called) }))

		j.Complete(nil)
		<-called
		assert.True(t, j.Done().IsSignaled())
		assert.NoError(t, j.Done().Error())
		assert.Equal(t, 0, q.Inflight())
	})
}

func TestRunErrorCompletesTheJobWithIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := &engine{onRun: func(j *lr.Job) error {
			if j.Data == "bad" {
				return errInjected
			}
			return nil
		}}
		q := newQueue(t, lockdeptest.New(t), e, 2)
		bad, err := q.Push(context.Background(), "bad")
		require.NoError(t, err)
		good, err := q.Push(context.Background(), "good")
		require.NoError(t, err)
		synctest.Wait()

		assert.ErrorIs(t, bad.Done().Error(), errInjected)
		assert.ErrorIs(t, bad.Finished().Error(), errInjected)
		assert.False(t, good.Done().IsSignaled())
		assert.NoError(t, q.Err(), "one failed job does not ban the queue")
		assert.Equal(t, 1, q.Inflight())
	})
}

func TestFailCompletesQueuedAndInflightJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := &engine{}
		q := newQueue(t, lockdeptest.New(t), e, 2)
		running, err := q.Push(ctx, "running")
		require.NoError(t, err)
		synctest.Wait()
		q.Scheduler().WQueueStop() // the next job stays queued in the scheduler
		queued, err := q.Push(ctx, "queued")
		require.NoError(t, err)
		blocked := make(chan error, 1)
		go func() { _, err := q.Push(ctx, "blocked"); blocked <- err }()
		synctest.Wait()
		require.Equal(t, []*lr.Job{running}, e.runs())

		q.Fail(errInjected)
		synctest.Wait()
		for _, j := range []*lr.Job{running, queued} {
			require.True(t, j.Done().IsSignaled(), "job %v", j.Data)
			assert.ErrorIs(t, j.Done().Error(), errInjected, "job %v", j.Data)
		}
		assert.True(t, queued.Finished().IsSignaled(), "the scheduler killed the queued job")
		assert.Error(t, queued.Finished().Error())
		assert.Equal(t, []*lr.Job{running}, e.runs(), "a killed job never reaches the ring")
		assert.Equal(t, 0, q.Inflight())
		assert.ErrorIs(t, q.Err(), errInjected)

		err = <-blocked
		assert.ErrorIs(t, err, lr.ErrBanned, "a push waiting for space when the queue died")
		assert.ErrorIs(t, err, errInjected)
		_, err = q.Push(ctx, "after")
		assert.ErrorIs(t, err, lr.ErrBanned)
		assert.ErrorIs(t, err, errInjected)
		_, err = q.TryPush("after")
		assert.ErrorIs(t, err, lr.ErrBanned)

		q.Fail(fmt.Errorf("second: %w", lr.ErrQueueReset))
		assert.ErrorIs(t, q.Err(), errInjected, "the first error stays")
	})
}

// TestCloseCompletesEverything runs outside a bubble, so that goleak sees the
// scheduler's goroutines go.
func TestCloseCompletesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	e := &engine{}
	q, err := lr.NewQueue(lr.QueueConfig{RingSize: 2, Checker: lockdeptest.New(t), Ops: e.ops()})
	require.NoError(t, err)
	a, err := q.Push(ctx, "a")
	require.NoError(t, err)
	b, err := q.Push(ctx, "b")
	require.NoError(t, err)
	blocked := make(chan error, 1)
	go func() { _, err := q.Push(ctx, "blocked"); blocked <- err }()

	q.Close()
	for _, j := range []*lr.Job{a, b} {
		require.NoError(t, j.Done().Wait(ctx))
		assert.ErrorIs(t, j.Done().Error(), lr.ErrClosed)
		require.NoError(t, j.Finished().Wait(ctx))
	}
	assert.ErrorIs(t, <-blocked, lr.ErrClosed)
	_, err = q.Push(ctx, "c")
	assert.ErrorIs(t, err, lr.ErrClosed)
	_, err = q.TryPush("c")
	assert.ErrorIs(t, err, lr.ErrClosed)
	assert.Equal(t, 0, q.Inflight())
	q.Close() // twice: harmless
}

// TestConcurrentPushesRunInSeqnoOrder: the scheduler must see jobs in the order
// of their seqnos (the order of their LR fences on the queue's timeline), however
// many goroutines push at once.
func TestConcurrentPushesRunInSeqnoOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pushers, each = 8, 50
		e := &engine{onRun: func(j *lr.Job) error { go j.Complete(nil); return nil }}
		q := newQueue(t, lockdeptest.New(t), e, 4)

		var wg sync.WaitGroup
		for range pushers {
			wg.Go(func() {
				for i := range each {
					if _, err := q.Push(context.Background(), i); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		runs := e.runs()
		require.Len(t, runs, pushers*each)
		for i := 1; i < len(runs); i++ {
			require.Less(t, runs[i-1].Seqno(), runs[i].Seqno(), "run %d", i)
			require.Less(t, runs[i-1].Done().Seqno(), runs[i].Done().Seqno(), "run %d", i)
		}
	})
}

// A push after the queue's scheduler closed (as Close does while a push waits for
// ring space) is refused with the queue's own error, never a scheduler error.
func TestPushAfterTheSchedulerClosedIsRefusedByTheQueue(t *testing.T) {
	q, err := lr.NewQueue(lr.QueueConfig{Name: "q", RingSize: 1, Ops: lr.QueueOps{Run: func(*lr.Job) error { return nil }}})
	require.NoError(t, err)
	defer q.Close()
	q.Scheduler().Close()
	_, err = q.Push(context.Background(), "a")
	require.ErrorIs(t, err, lr.ErrBanned)
	require.NotErrorIs(t, err, sched.ErrNoRunQueue)
}
