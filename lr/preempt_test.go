package lr_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// The preempt-fence state machine: armed -> triggered -> signalled -> replaced by
// a fresh armed fence (re-armed), with or without an error on the old one; a
// timeout error kills the VM instead.
// Every test runs in a synctest bubble: synctest.Wait lets the preempt and rebind
// workers settle, with no sleeps.

func TestPreemptFenceArmedIsBookkeepInEveryReservation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 4)
		late := resv.NewObject(r.chk) // bound after the queue: gets the current fence too
		require.NoError(t, r.vm.AddBuffer(ctx, late))

		pf := r.vm.PreemptFence(r.q)
		require.NotNil(t, pf)
		assert.Same(t, r.q, pf.Queue())
		assert.False(t, pf.IsLongRunning(), "a preempt fence is an ordinary, bounded dma fence")
		for _, bo := range append(r.objects(), late) {
			assert.Equal(t, map[*fence.Fence]resv.Usage{pf.Fence: resv.Bookkeep}, fencesOf(t, bo))
			assert.Empty(t, bo.GetFences(resv.Read), "implicit sync must not see a preempt fence")
		}

		j, err := r.q.Push(ctx, "kernel")
		require.NoError(t, err)
		synctest.Wait()
		assert.False(t, pf.Triggered())
		assert.False(t, pf.IsSignaled())
		s, w, res := r.eng.counts()
		assert.Equal(t, [3]int{0, 0, 0}, [3]int{s, w, res}, "nobody waited: the queue runs undisturbed")
		assert.Equal(t, []*lr.Job{j}, r.eng.runs())
		assert.NoError(t, r.q.Err())
		assert.Equal(t, 0, r.vm.Rebinds())

		other := newQueue(t, r.chk, &engine{}, 1)
		assert.Nil(t, r.vm.PreemptFence(other), "a queue not in the VM has no preempt fence")
	})
}

func TestPreemptFenceTriggerSuspendsOnce(t *testing.T) {
	triggers := []struct {
		name string
		do   func(t *testing.T, r *rig, pf *lr.PreemptFence)
	}{
		{"EnableSignaling", func(_ *testing.T, _ *rig, pf *lr.PreemptFence) { pf.EnableSignaling() }},
		{"Wait", func(_ *testing.T, _ *rig, pf *lr.PreemptFence) {
			go func() { _ = pf.Wait(context.Background()) }()
		}},
		{"Done", func(_ *testing.T, _ *rig, pf *lr.PreemptFence) { _ = pf.Done() }},
		{"AddCallback", func(t *testing.T, _ *rig, pf *lr.PreemptFence) {
			require.NoError(t, pf.AddCallback(new(fence.Callback), func(*fence.Fence, *fence.Callback) {}))
		}},
		{"resv.Wait(Bookkeep)", func(_ *testing.T, r *rig, _ *lr.PreemptFence) {
			go func() { _ = r.bo.Wait(context.Background(), resv.Bookkeep) }()
		}},
	}
	for _, tc := range triggers {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				hold := make(chan struct{})
				r := newRig(t, lockdeptest.New(t), 4, func(r *rig) { r.eng.hold = hold })
				pf := r.vm.PreemptFence(r.q)

				tc.do(t, r, pf)
				synctest.Wait()
				s, w, res := r.eng.counts()
				assert.Equal(t, [3]int{1, 1, 0}, [3]int{s, w, res}, "suspend called, waiting for the queue to get off")
				assert.True(t, pf.Triggered())
				assert.False(t, pf.IsSignaled(), "not before the queue is suspended")

				// More waiters start nothing new.
				pf.EnableSignaling()
				go func() { _ = pf.Wait(context.Background()) }()
				synctest.Wait()
				s, _, _ = r.eng.counts()
				assert.Equal(t, 1, s, "Suspend is called exactly once per preempt fence")

				close(hold)
				synctest.Wait()
				assert.True(t, pf.IsSignaled())
				assert.NoError(t, pf.Error())
			})
		})
	}
}

// Triggering a preempt fence never blocks, however many are queued behind a slow
// suspension: EnableSignaling queues the work with the fence's lock held, as
// queue_work() does, and the worker then signals them in trigger order (the
// ordered preempt_fence_wq).
func TestPreemptFenceTriggerNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 100 // beyond any fixed buffer a worker channel might have
		ctx := context.Background()
		hold := make(chan struct{})
		r := newRig(t, lockdeptest.New(t), 1, func(r *rig) { r.eng.hold = hold })
		queues := []*lr.Queue{r.q}
		for range n - 1 {
			q := newQueue(t, r.chk, r.eng, 1)
			require.NoError(t, r.vm.AddQueue(ctx, q))
			queues = append(queues, q)
		}
		var mu sync.Mutex
		var order []int
		triggered := make(chan struct{})
		go func() {
			// A callback is a waiter: adding it triggers the fence.
			for i, q := range queues {
				_ = r.vm.PreemptFence(q).AddCallback(new(fence.Callback), func(*fence.Fence, *fence.Callback) {
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
				})
			}
			close(triggered)
		}()
		synctest.Wait() // the first suspension holds the worker
		select {
		case <-triggered:
		default:
			t.Fatal("triggering a preempt fence blocked behind the preempt worker")
		}
		s, w, _ := r.eng.counts()
		assert.Equal(t, [2]int{n, 1}, [2]int{s, w}, "every queue is being suspended; the worker waits on the first")

		close(hold)
		synctest.Wait()
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		assert.Equal(t, want, order, "signalled in trigger order")
		assert.Equal(t, 1, r.vm.Rebinds())
	})
}

func TestPreemptFenceWaitThatGivesUpChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		r := newRig(t, lockdeptest.New(t), 4, func(r *rig) { r.eng.hold = hold })
		pf := r.vm.PreemptFence(r.q)

		ctx, cancel := context.WithTimeout(context.Background(), 1)
		defer cancel()
		assert.ErrorIs(t, r.bo.Wait(ctx, resv.Bookkeep), context.DeadlineExceeded)
		synctest.Wait()
		// The preemption it started goes on: a preempt fence that was asked to
		// signal must signal.
		assert.True(t, pf.Triggered())
		close(hold)
		synctest.Wait()
		assert.True(t, pf.IsSignaled())
		assert.Equal(t, 1, r.vm.Rebinds())
	})
}

func TestPreemptFenceSignalResumesWithFreshFence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		hold := make(chan struct{})
		r := newRig(t, lockdeptest.New(t), 4, func(r *rig) { r.eng.hold = hold })
		j, err := r.q.Push(ctx, "kernel")
		require.NoError(t, err)
		old := r.vm.PreemptFence(r.q)

		old.EnableSignaling()
		synctest.Wait()
		_, _, res := r.eng.counts()
		assert.Equal(t, 0, res, "no resume before the queue is off the hardware")
		assert.Same(t, old, r.vm.PreemptFence(r.q))

		close(hold)
		synctest.Wait()
		require.True(t, old.IsSignaled())
		assert.NoError(t, old.Error())
		s, w, res := r.eng.counts()
		assert.Equal(t, [3]int{1, 1, 1}, [3]int{s, w, res})
		assert.Equal(t, 1, r.vm.Rebinds())

		fresh := r.vm.PreemptFence(r.q)
		require.NotSame(t, old, fresh)
		assert.Equal(t, old.Context().ID(), fresh.Context().ID(), "same preempt timeline")
		assert.Equal(t, old.Seqno()+1, fresh.Seqno())
		assert.False(t, fresh.Triggered())
		assert.False(t, fresh.IsSignaled())
		for _, bo := range r.objects() {
			assert.Equal(t, map[*fence.Fence]resv.Usage{fresh.Fence: resv.Bookkeep}, fencesOf(t, bo),
				"the fresh fence replaces the old one")
		}

		// The job was preempted, not killed: it still runs and completes normally.
		assert.False(t, j.Done().IsSignaled())
		assert.NoError(t, r.q.Err())
		assert.Empty(t, r.mem.moves(), "nothing was evicted: nothing to revalidate")
		j2, err := r.q.Push(ctx, "next")
		require.NoError(t, err)
		j.Complete(nil)
		j2.Complete(nil)
		assert.NoError(t, j.Done().Error())
		assert.NoError(t, j2.Done().Error())
	})
}

func TestPreemptFenceRearms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 4)
		j, err := r.q.Push(ctx, "kernel")
		require.NoError(t, err)
		first := r.vm.PreemptFence(r.q)

		for cycle := 1; cycle <= 3; cycle++ {
			pf := r.vm.PreemptFence(r.q)
			require.NoError(t, r.vm.Evict(ctx, r.bo))
			assert.True(t, pf.IsSignaled(), "cycle %d: eviction returns once the queue is suspended", cycle)
			synctest.Wait()

			s, w, res := r.eng.counts()
			assert.Equal(t, [3]int{cycle, cycle, cycle}, [3]int{s, w, res}, "cycle %d", cycle)
			assert.Equal(t, cycle, r.vm.Rebinds())
			fresh := r.vm.PreemptFence(r.q)
			assert.Equal(t, first.Seqno()+uint64(cycle), fresh.Seqno(), "cycle %d", cycle)
			assert.Equal(t, first.Context().ID(), fresh.Context().ID())
			for _, bo := range r.objects() {
				assert.Equal(t, map[*fence.Fence]resv.Usage{fresh.Fence: resv.Bookkeep}, fencesOf(t, bo), "cycle %d", cycle)
			}
			assert.False(t, r.vm.IsEvicted(r.bo), "cycle %d: revalidated before the resume", cycle)
			assert.Len(t, r.mem.moves(), cycle)
		}
		assert.False(t, j.Done().IsSignaled(), "three preemptions, the job still runs")
	})
}

// A SuspendWait that returns ErrAgain (-EAGAIN) is retried: the fence's work goes
// back to the end of the ordered preempt queue, behind work queued meanwhile, and
// the fence signals without an error once a later wait succeeds. Nothing is
// banned. Models the re-queue in preempt_fence_work_func().
func TestPreemptFenceSuspendWaitErrAgainIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		hold := make(chan struct{})
		r := newRig(t, chk, 2, func(r *rig) { r.eng.waitErr, r.eng.hold = lr.ErrAgain, hold })
		e2 := &engine{}
		q2 := newQueue(t, chk, e2, 2)
		require.NoError(t, r.vm.AddQueue(ctx, q2))
		j, err := r.q.Push(ctx, "a")
		require.NoError(t, err)
		pf1, pf2 := r.vm.PreemptFence(r.q), r.vm.PreemptFence(q2)
		var mu sync.Mutex
		var signalled []*lr.PreemptFence
		for _, pf := range []*lr.PreemptFence{pf1, pf2} {
			require.NoError(t, pf.AddCallback(new(fence.Callback), func(*fence.Fence, *fence.Callback) {
				mu.Lock()
				signalled = append(signalled, pf)
				mu.Unlock()
			}))
			synctest.Wait() // pf1: the worker waits in its first SuspendWait
		}

		close(hold) // the first wait returns ErrAgain
		synctest.Wait()
		_, w, _ := r.eng.counts()
		assert.Equal(t, 2, w, "SuspendWait is called again")
		assert.Equal(t, []*lr.PreemptFence{pf2, pf1}, signalled, "the retry went behind the work queued meanwhile")
		assert.NoError(t, pf1.Error(), "a retry is not a failure")
		assert.NoError(t, r.q.Err())
		assert.NoError(t, r.vm.Err())
		assert.False(t, j.Done().IsSignaled())
		for i, e := range []*engine{r.eng, e2} {
			_, _, res := e.counts()
			assert.Equal(t, 1, res, "queue %d resumed", i)
		}
		assert.Equal(t, 1, r.vm.Rebinds())
	})
}

// A preemption that fails with anything but a timeout gives its fence the error,
// and that is all: the queue is not banned, its jobs go on, and the rebind worker
// resumes it with a fresh fence, as Xe's preempt_fence_work_func() only sets the
// error and wait_for_existing_preempt_fences() kills the VM for -ETIME alone.
func TestPreemptFenceErrorIsKeptAndQueueResumes(t *testing.T) {
	cases := []struct {
		name      string
		inject    func(e *engine)
		wantWaits int
	}{
		{"Suspend fails", func(e *engine) { e.suspendErr = errInjected }, 0},
		{"SuspendWait fails", func(e *engine) { e.waitErr = errInjected }, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				r := newRig(t, lockdeptest.New(t), 4)
				j, err := r.q.Push(ctx, "a")
				require.NoError(t, err)
				synctest.Wait()
				pf := r.vm.PreemptFence(r.q)

				tc.inject(r.eng)
				pf.EnableSignaling()
				synctest.Wait()

				require.True(t, pf.IsSignaled())
				assert.ErrorIs(t, pf.Error(), errInjected, "the preempt fence carries the failure")
				s, w, res := r.eng.counts()
				assert.Equal(t, [3]int{1, tc.wantWaits, 1}, [3]int{s, w, res}, "suspend, wait, resume calls")
				assert.NoError(t, r.q.Err(), "only a timeout kills")
				assert.NoError(t, r.vm.Err())
				assert.False(t, j.Done().IsSignaled(), "the job goes on")
				assert.Equal(t, 1, r.vm.Rebinds())
				fresh := r.vm.PreemptFence(r.q)
				require.NotSame(t, pf, fresh)
				assert.Equal(t, pf.Seqno()+1, fresh.Seqno())
				for _, bo := range r.objects() {
					assert.Equal(t, []*fence.Fence{fresh.Fence}, bo.GetFences(resv.Bookkeep))
				}
				j2, err := r.q.Push(ctx, "b")
				require.NoError(t, err)
				j.Complete(nil)
				j2.Complete(nil)
				assert.NoError(t, j.Done().Error())
			})
		})
	}
}

// A queue reset before its preemption (a hardware fault banned it) gets a preempt
// fence with ErrQueueReset and no suspend wait; being banned, it is not resumed,
// and the failed fence stays, signalled, so eviction no longer waits for it.
func TestPreemptFenceOfResetQueueFailsWithErrQueueReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 4)
		j, err := r.q.Push(ctx, "a")
		require.NoError(t, err)
		synctest.Wait()
		pf := r.vm.PreemptFence(r.q)

		r.q.Fail(errInjected)
		pf.EnableSignaling()
		synctest.Wait()

		require.True(t, pf.IsSignaled())
		assert.ErrorIs(t, pf.Error(), lr.ErrQueueReset)
		s, w, res := r.eng.counts()
		assert.Equal(t, [3]int{1, 0, 0}, [3]int{s, w, res}, "suspend, wait, resume calls")
		assert.ErrorIs(t, r.q.Err(), errInjected)
		assert.ErrorIs(t, j.Done().Error(), errInjected)
		assert.NoError(t, r.vm.Err(), "a reset queue does not kill the VM")
		_, err = r.q.Push(ctx, "b")
		assert.ErrorIs(t, err, lr.ErrBanned)
		assert.ErrorIs(t, err, errInjected, "the ban says why")

		assert.Same(t, pf, r.vm.PreemptFence(r.q))
		assert.Equal(t, 0, r.vm.Rebinds())
		for _, bo := range r.objects() {
			assert.True(t, bo.TestSignaled(resv.Bookkeep))
		}
		require.NoError(t, r.vm.Evict(ctx, r.bo))
		synctest.Wait()
		s, _, res = r.eng.counts()
		assert.Equal(t, [2]int{1, 0}, [2]int{s, res}, "a banned queue is not preempted again")
	})
}

// A preemption that times out kills the whole VM: the rebind worker bans every
// queue on it, the one that timed out and its sibling alike, and resumes none.
// Models wait_for_existing_preempt_fences() returning -ETIME, and xe_vm_kill().
func TestPreemptFenceTimeoutKillsTheVM(t *testing.T) {
	for _, timeout := range []error{lr.ErrTimedOut, context.DeadlineExceeded} {
		t.Run(timeout.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				chk := lockdeptest.New(t)
				r := newRig(t, chk, 2, func(r *rig) { r.eng.waitErr = timeout })
				e2 := &engine{}
				q2 := newQueue(t, chk, e2, 2)
				require.NoError(t, r.vm.AddQueue(ctx, q2))
				j1, err := r.q.Push(ctx, "a")
				require.NoError(t, err)
				j2, err := q2.Push(ctx, "b")
				require.NoError(t, err)
				pf1, pf2 := r.vm.PreemptFence(r.q), r.vm.PreemptFence(q2)

				require.NoError(t, r.vm.Evict(ctx, r.bo), "a timed-out fence signals too: the kill makes it true")
				synctest.Wait()
				assert.ErrorIs(t, pf1.Error(), timeout)
				assert.NoError(t, pf2.Error(), "the sibling was suspended fine")
				assert.ErrorIs(t, r.vm.Err(), timeout)
				for i, q := range []*lr.Queue{r.q, q2} {
					assert.ErrorIs(t, q.Err(), timeout, "queue %d", i)
					_, err := q.Push(ctx, "c")
					assert.ErrorIs(t, err, lr.ErrBanned, "queue %d", i)
				}
				for i, j := range []*lr.Job{j1, j2} {
					assert.ErrorIs(t, j.Done().Error(), timeout, "job %d", i)
				}
				for i, e := range []*engine{r.eng, e2} {
					_, _, res := e.counts()
					assert.Equal(t, 0, res, "queue %d: a killed VM resumes nothing", i)
				}
				assert.Equal(t, 0, r.vm.Rebinds())
				assert.True(t, r.vm.IsEvicted(r.bo), "never brought back")

				// A killed VM takes nothing new.
				assert.ErrorIs(t, r.vm.AddQueue(ctx, newQueue(t, chk, &engine{}, 1)), lr.ErrBanned)
				assert.ErrorIs(t, r.vm.AddBuffer(ctx, resv.NewObject(chk)), lr.ErrBanned)
			})
		})
	}
}
