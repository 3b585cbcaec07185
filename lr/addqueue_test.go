package lr_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// A queue added while another queue of the VM is being preempted must not start
// running on buffers that are about to move: its preempt fence is triggered at
// once, and the rebind worker resumes both, as xe_vm_add_compute_exec_queue() does.
func TestAddQueueDuringPreemptionIsPreemptedToo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		release := make(chan struct{})
		suspended := map[string]int{}
		resumed := map[string]int{}
		newQueue := func(name string) *lr.Queue {
			q, err := lr.NewQueue(lr.QueueConfig{Name: name, RingSize: 2, Checker: chk, Ops: lr.QueueOps{
				Run:         func(*lr.Job) error { return nil },
				Suspend:     func(q *lr.Queue) error { suspended[q.Name()]++; return nil },
				SuspendWait: func(ctx context.Context, _ *lr.Queue) error { <-release; return nil },
				Resume:      func(q *lr.Queue) { resumed[q.Name()]++ },
			}})
			require.NoError(t, err)
			t.Cleanup(q.Close)
			return q
		}
		vm := lr.NewVM(lr.VMOps{}, chk)
		t.Cleanup(vm.Close)
		ctx := context.Background()
		bo := resv.NewObject(chk)
		require.NoError(t, vm.AddBuffer(ctx, bo))
		first := newQueue("first")
		require.NoError(t, vm.AddQueue(ctx, first))

		vm.PreemptFence(first).EnableSignaling() // eviction starts preempting first
		synctest.Wait()                          // first's suspension is in flight
		second := newQueue("second")
		require.NoError(t, vm.AddQueue(ctx, second))
		require.True(t, vm.PreemptFence(second).Triggered(), "the newcomer is preempted at once")

		close(release) // both suspensions complete
		synctest.Wait()
		require.Equal(t, 1, suspended["first"])
		require.Equal(t, 1, suspended["second"])
		require.Equal(t, 1, resumed["first"], "the rebind worker resumes both")
		require.Equal(t, 1, resumed["second"])
	})
}

// AddBuffer and AddQueue that give up (the context ends while another holder has
// a reservation locked) change nothing: the buffer is not bound, the queue has not
// joined, and no object holds a fence of theirs. Eviction and the next rebind then
// see the VM as it was.
func TestAddBufferAndAddQueueGivingUpChangeNothing(t *testing.T) {
	t.Run("AddBuffer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t, lockdeptest.New(t), 2)
			_, err := r.q.Push(ctx, "job")
			require.NoError(t, err)
			bo2 := resv.NewObject(r.chk)
			release := holdLocked(t, bo2)
			gaveUp, cancel := context.WithTimeout(ctx, time.Millisecond)
			defer cancel()
			require.ErrorIs(t, r.vm.AddBuffer(gaveUp, bo2), context.DeadlineExceeded)
			release()
			require.Empty(t, fencesOf(t, bo2))

			// bo2 is not the VM's: evicting it preempts nothing, and the rebind
			// after evicting the VM's own buffer puts no fence in it.
			require.NoError(t, r.vm.Evict(ctx, bo2))
			synctest.Wait()
			suspends, _, _ := r.eng.counts()
			require.Zero(t, suspends, "evicting a buffer the VM does not have preempted a queue")
			require.NoError(t, r.vm.Evict(ctx, r.bo))
			synctest.Wait()
			require.Equal(t, 1, r.vm.Rebinds())
			require.Empty(t, fencesOf(t, bo2))

			// Binding it again, with nobody in the way, works.
			require.NoError(t, r.vm.AddBuffer(ctx, bo2))
			require.Contains(t, fencesOf(t, bo2), r.vm.PreemptFence(r.q).Fence)
		})
	})
	t.Run("AddQueue", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx := context.Background()
			r := newRig(t, lockdeptest.New(t), 2)
			q2 := newQueue(t, r.chk, &engine{}, 1)
			before := map[*resv.Object]int{r.vm.Resv: len(fencesOf(t, r.vm.Resv)), r.bo: len(fencesOf(t, r.bo))}
			release := holdLocked(t, r.bo)
			gaveUp, cancel := context.WithTimeout(ctx, time.Millisecond)
			defer cancel()
			require.ErrorIs(t, r.vm.AddQueue(gaveUp, q2), context.DeadlineExceeded)
			release()
			require.Nil(t, r.vm.PreemptFence(q2), "a queue whose AddQueue gave up joined the VM")
			for bo, n := range before {
				require.Len(t, fencesOf(t, bo), n, "AddQueue gave up and left a fence behind")
			}

			require.NoError(t, r.vm.AddQueue(ctx, q2))
			pf := r.vm.PreemptFence(q2)
			require.NotNil(t, pf)
			require.Contains(t, fencesOf(t, r.vm.Resv), pf.Fence)
			require.Contains(t, fencesOf(t, r.bo), pf.Fence)
		})
	})
	t.Run("closed", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newRig(t, lockdeptest.New(t), 2)
			r.vm.Close()
			require.ErrorIs(t, r.vm.AddBuffer(context.Background(), resv.NewObject(r.chk)), lr.ErrClosed)
			require.ErrorIs(t, r.vm.AddQueue(context.Background(), newQueue(t, r.chk, &engine{}, 1)), lr.ErrClosed)
		})
	})
}

// holdLocked has another goroutine lock bo and hold it until release is called.
func holdLocked(t *testing.T, bo *resv.Object) (release func()) {
	t.Helper()
	locked, unlock, done := make(chan error), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		err := bo.Lock(context.Background(), nil)
		locked <- err
		if err == nil {
			<-unlock
			bo.Unlock()
		}
	}()
	require.NoError(t, <-locked)
	return func() {
		close(unlock)
		<-done
	}
}

// Binding a buffer twice, or the VM's own reservation object, does nothing, as
// drm_gpuvm lists an external object once however often it is mapped: the next
// eviction rebinds as usual, queues still join, and no object holds a preempt
// fence twice.
func TestAddBufferTwiceOrTheVMsOwnIsANoOp(t *testing.T) {
	for _, own := range []bool{false, true} {
		t.Run(map[bool]string{false: "same buffer", true: "VM's reservation"}[own], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				r := newRig(t, lockdeptest.New(t), 2)
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				bo := r.bo
				if own {
					bo = r.vm.Resv
				}
				before := len(fencesOf(t, bo))
				require.NoError(t, r.vm.AddBuffer(ctx, bo))
				require.Len(t, fencesOf(t, bo), before, "a second binding added fences")

				require.NoError(t, r.vm.Evict(ctx, r.bo))
				synctest.Wait()
				require.NoError(t, r.vm.Err())
				require.NoError(t, r.q.Err())
				require.Equal(t, 1, r.vm.Rebinds())
				require.False(t, j.Done().IsSignaled(), "the job ended: %v", j.Done().Error())

				q2 := newQueue(t, r.chk, &engine{}, 1)
				require.NoError(t, r.vm.AddQueue(ctx, q2))
			})
		})
	}
}

// Close bans every queue still attached, including one that was preempted and is
// waiting for a rebind that Close cancels: it would never run again, and must not
// take pushes as if it would.
func TestVMCloseBansAQueueWaitingForItsRebind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 4)
		j, err := r.q.Push(ctx, "a")
		require.NoError(t, err)
		release := holdLocked(t, r.bo) // the rebind worker cannot lock bo
		pf := r.vm.PreemptFence(r.q)
		pf.EnableSignaling()
		synctest.Wait()
		require.True(t, pf.IsSignaled(), "suspended")

		r.vm.Close()
		release()
		synctest.Wait()
		_, _, resumes := r.eng.counts()
		require.Zero(t, resumes)
		require.ErrorIs(t, r.q.Err(), lr.ErrClosed)
		require.True(t, j.Done().IsSignaled())
		require.ErrorIs(t, j.Done().Error(), lr.ErrClosed)
		_, err = r.q.Push(ctx, "b")
		require.Error(t, err, "a push to a queue that will never run again")
	})
}

// A queue joins a VM once: a second AddQueue leaves it as it is, so an eviction
// suspends and resumes it once and its preempt fence is the one in the buffers.
func TestAddQueueTwiceIsANoOp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 2)
		pf := r.vm.PreemptFence(r.q)
		before := len(fencesOf(t, r.bo))
		require.NoError(t, r.vm.AddQueue(ctx, r.q))
		require.Same(t, pf, r.vm.PreemptFence(r.q))
		require.Len(t, fencesOf(t, r.bo), before)

		require.NoError(t, r.vm.Evict(ctx, r.bo))
		synctest.Wait()
		suspends, _, resumes := r.eng.counts()
		require.Equal(t, 1, suspends)
		require.Equal(t, 1, resumes)
		require.Contains(t, fencesOf(t, r.bo), r.vm.PreemptFence(r.q).Fence)
	})
}
