package lr_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// The eviction flow: evict -> preemption -> move -> revalidate -> resume, in
// virtual time. The queue takes 2ms to get off the hardware and bringing a
// buffer back takes 3ms, so each step has an exact time.
func TestEvictionFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const offHW, move = 2 * time.Millisecond, 3 * time.Millisecond
		ctx := context.Background()
		chk := lockdeptest.New(t) // any report fails the test
		chk.Prime()
		resumed := make(chan struct{}, 1)
		r := newRig(t, chk, 4, func(r *rig) {
			r.eng.waitFor = offHW
			r.eng.resumed = resumed
			r.mem.moveFor = move
			r.mem.events = r.eng
		})
		other := resv.NewObject(chk) // a buffer of the VM that is not evicted
		require.NoError(t, r.vm.AddBuffer(ctx, other))
		job, err := r.q.Push(ctx, "simulation")
		require.NoError(t, err)
		require.NoError(t, job.Scheduled().Wait(ctx))
		old := r.vm.PreemptFence(r.q)

		start := time.Now()
		require.NoError(t, r.vm.Evict(ctx, r.bo))
		assert.Equal(t, offHW, time.Since(start), "eviction waited for the preemption, not the job")
		assert.True(t, old.IsSignaled())
		assert.True(t, r.vm.IsEvicted(r.bo))
		assert.False(t, r.vm.IsEvicted(other))
		assert.False(t, job.Done().IsSignaled())

		<-resumed
		assert.Equal(t, offHW+move, time.Since(start), "resumed once the buffer was back")
		synctest.Wait()
		assert.False(t, r.vm.IsEvicted(r.bo))
		assert.Equal(t, []*resv.Object{r.bo}, r.mem.moves())
		assert.Equal(t, []string{"run +0s", "suspend +0s", "suspended +2ms", "revalidate +5ms", "resume +5ms"},
			r.eng.timeline(start))

		fresh := r.vm.PreemptFence(r.q)
		require.NotSame(t, old, fresh)
		for _, bo := range []*resv.Object{r.vm.Resv, r.bo, other} {
			assert.Equal(t, []*fence.Fence{fresh.Fence}, bo.GetFences(resv.Bookkeep), "only the fresh fence is pending")
		}

		// The job was preempted, not terminated: it goes on, and the queue takes
		// new work.
		assert.NoError(t, r.q.Err())
		next, err := r.q.Push(ctx, "next")
		require.NoError(t, err)
		job.Complete(nil)
		next.Complete(nil)
		require.NoError(t, job.Done().Wait(ctx))
		assert.NoError(t, job.Done().Error())

		// A second eviction, of the VM's own reservation, goes the same way.
		start = time.Now()
		require.NoError(t, r.vm.Evict(ctx, r.vm.Resv))
		<-resumed
		assert.Equal(t, offHW+move, time.Since(start))
		assert.Equal(t, 2, r.vm.Rebinds())
	})
}

// Eviction preempts every LR queue of the VM, and each is resumed once.
func TestEvictionPreemptsEveryQueueOfTheVM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		chk := lockdeptest.New(t)
		chk.Prime()
		r := newRig(t, chk, 2)
		e2 := &engine{}
		q2 := newQueue(t, chk, e2, 2)
		require.NoError(t, r.vm.AddQueue(ctx, q2))
		pf1, pf2 := r.vm.PreemptFence(r.q), r.vm.PreemptFence(q2)
		assert.NotEqual(t, pf1.Context().ID(), pf2.Context().ID(), "one preempt timeline per queue")
		for _, bo := range r.objects() {
			assert.Len(t, fencesOf(t, bo), 2)
		}

		require.NoError(t, r.vm.Evict(ctx, r.bo))
		synctest.Wait()
		for i, e := range []*engine{r.eng, e2} {
			s, w, res := e.counts()
			assert.Equal(t, [3]int{1, 1, 1}, [3]int{s, w, res}, "queue %d", i)
		}
		assert.False(t, r.vm.IsEvicted(r.bo))
		for _, q := range []*lr.Queue{r.q, q2} {
			pf := r.vm.PreemptFence(q)
			assert.Equal(t, uint64(2), pf.Seqno())
			for _, bo := range r.objects() {
				assert.Equal(t, resv.Bookkeep, fencesOf(t, bo)[pf.Fence])
			}
		}
	})
}

// One queue's preemption preempts every queue of the VM, even when nobody waited
// on the others' fences: the rebind worker waits on every live queue's preempt
// fence, which suspends the queues not yet suspended, and resumes none before all
// are off the hardware; then it re-arms and resumes them all. Models
// wait_for_existing_preempt_fences() and resume_and_reinstall_preempt_fences().
func TestRebindPreemptsEveryQueueBeforeResuming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const offHW = 2 * time.Millisecond
		ctx := context.Background()
		chk := lockdeptest.New(t)
		chk.Prime()
		r := newRig(t, chk, 2)
		e2 := &engine{waitFor: offHW}
		q2 := newQueue(t, chk, e2, 2)
		require.NoError(t, r.vm.AddQueue(ctx, q2))
		pf1, pf2 := r.vm.PreemptFence(r.q), r.vm.PreemptFence(q2)

		start := time.Now()
		pf1.EnableSignaling() // only the first queue's fence is asked to signal
		synctest.Wait()
		assert.True(t, pf2.Triggered(), "the rebind worker preempts the second queue too")
		assert.False(t, pf2.IsSignaled())
		_, _, res := r.eng.counts()
		assert.Equal(t, 0, res, "no resume while a queue is still on the hardware")

		time.Sleep(offHW)
		synctest.Wait()
		assert.True(t, pf2.IsSignaled())
		assert.Equal(t, []string{"suspend +0s", "suspended +0s", "resume +2ms"}, r.eng.timeline(start),
			"the first queue resumes only once the second is off the hardware")
		assert.Equal(t, []string{"suspend +0s", "suspended +2ms", "resume +2ms"}, e2.timeline(start))
		assert.Equal(t, 1, r.vm.Rebinds())
		for _, q := range []*lr.Queue{r.q, q2} {
			pf := r.vm.PreemptFence(q)
			assert.Equal(t, uint64(2), pf.Seqno(), "both re-armed")
			assert.False(t, pf.Triggered())
			for _, bo := range r.objects() {
				assert.Equal(t, resv.Bookkeep, fencesOf(t, bo)[pf.Fence])
			}
		}
		for _, bo := range r.objects() {
			assert.Len(t, bo.GetFences(resv.Bookkeep), 2, "only the fresh fences are pending")
		}
	})
}

// The classic mistakes, each with its named lockdep report. The checker is primed
// with the kernel's memory-management order and collects reports instead of
// failing the test.
func TestEvictionMistakesAreReported(t *testing.T) {
	cases := []struct {
		name string
		want lockdep.Kind
		// setup configures the rig before it runs; run makes the mistake.
		setup func(r *rig)
		run   func(t *testing.T, r *rig)
	}{
		{
			name: "wait for the LR job under the reservation lock (already complete)",
			want: lockdep.KindLRWaitUnderMM,
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				j.Complete(nil)
				require.NoError(t, r.bo.Lock(ctx, nil))
				require.NoError(t, j.Done().Wait(ctx)) // the bug: it might never return
				r.bo.Unlock()
			},
		},
		{
			name: "wait for the LR job under the reservation lock (completes later)",
			want: lockdep.KindLRWaitUnderMM,
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				time.AfterFunc(time.Second, func() { j.Complete(nil) })
				require.NoError(t, r.bo.Lock(ctx, nil))
				require.NoError(t, j.Done().Wait(ctx))
				r.bo.Unlock()
			},
		},
		{
			name: "add the LR fence to a reservation",
			want: lockdep.KindLRFenceInReservation,
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				before := fencesOf(t, r.bo)
				require.NoError(t, r.bo.Lock(ctx, nil))
				require.NoError(t, r.bo.Reserve(1))
				assert.ErrorIs(t, r.bo.AddFence(j.Done(), resv.Write), resv.ErrLongRunning)
				r.bo.Unlock()
				assert.Equal(t, before, fencesOf(t, r.bo), "the reservation is unchanged")
				j.Complete(nil)
			},
		},
		{
			name: "wait for the LR job in a signalling section",
			want: lockdep.KindLRWaitInSignalling,
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				j.Complete(nil)
				c := r.chk.BeginSignalling()
				require.NoError(t, j.Done().Wait(ctx))
				r.chk.EndSignalling(c)
			},
		},
		{
			name: "allocate in Run (inside the scheduler's signalling section)",
			want: lockdep.KindReclaimInSignalling,
			setup: func(r *rig) {
				r.eng.onRun = func(*lr.Job) error { r.chk.MightReclaim(); return nil }
			},
			run: func(t *testing.T, r *rig) {
				j, err := r.q.Push(context.Background(), "job")
				require.NoError(t, err)
				synctest.Wait()
				require.Len(t, r.eng.runs(), 1)
				j.Complete(nil)
			},
		},
		{
			name: "preempt by waiting for the LR job (SuspendWait drains instead)",
			want: lockdep.KindLRWaitInSignalling,
			setup: func(r *rig) {
				r.eng.onWait = func(ctx context.Context) error {
					r.eng.mu.Lock()
					j := r.eng.ran[0]
					r.eng.mu.Unlock()
					return j.Done().Wait(ctx)
				}
			},
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				synctest.Wait()
				time.AfterFunc(time.Second, func() { j.Complete(nil) })
				require.NoError(t, r.vm.Evict(ctx, r.bo))
				synctest.Wait()
			},
		},
		{
			name: "wait for the LR job while revalidating (reservations locked)",
			want: lockdep.KindLRWaitUnderMM,
			setup: func(r *rig) {
				r.mem.onMove = func(*resv.Object) error {
					r.eng.mu.Lock()
					j := r.eng.ran[0]
					r.eng.mu.Unlock()
					return j.Done().Wait(context.Background())
				}
			},
			run: func(t *testing.T, r *rig) {
				ctx := context.Background()
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				synctest.Wait()
				time.AfterFunc(time.Second, func() { j.Complete(nil) })
				require.NoError(t, r.vm.Evict(ctx, r.bo))
				time.Sleep(time.Second) // virtual: the job completes, the rebind goes on
				synctest.Wait()
				assert.Equal(t, 1, r.vm.Rebinds())
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				chk, col := lockdeptest.Collect(t)
				chk.Prime()
				var setup []func(*rig)
				if tc.setup != nil {
					setup = append(setup, tc.setup)
				}
				r := newRig(t, chk, 2, setup...)
				lockdeptest.RequireClean(t, col) // the set-up itself is correct

				tc.run(t, r)
				synctest.Wait()
				lockdeptest.RequireKinds(t, col, tc.want)
				assert.Equal(t, tc.want.Title(), col.Reports()[0].Kind.Title())
			})
		})
	}
}

// An eviction that gives up (its ctx ends while the queue is being preempted)
// moves nothing and leaves the buffer unlocked; the preemption it started still
// completes, and the rebind worker resumes the queue.
func TestEvictionGivesUpWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		r := newRig(t, lockdeptest.New(t), 2, func(r *rig) { r.eng.hold = hold })
		old := r.vm.PreemptFence(r.q)

		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, r.vm.Evict(ctx, r.bo), context.DeadlineExceeded)
		assert.False(t, r.vm.IsEvicted(r.bo))
		require.True(t, r.bo.TryLock(), "the buffer is unlocked again")
		r.bo.Unlock()

		close(hold)
		synctest.Wait()
		assert.True(t, old.IsSignaled())
		_, _, res := r.eng.counts()
		assert.Equal(t, 1, res)
		assert.NotSame(t, old, r.vm.PreemptFence(r.q))
		assert.Empty(t, r.mem.moves())
	})
}

// A rebind that fails (the evicted buffer cannot be brought back) bans every LR
// queue of the VM, as Xe's rebind worker kills the VM: nothing resumes.
func TestRebindFailureBansTheQueues(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, lockdeptest.New(t), 2, func(r *rig) {
			r.mem.onMove = func(*resv.Object) error { return errInjected }
		})
		j, err := r.q.Push(ctx, "job")
		require.NoError(t, err)
		old := r.vm.PreemptFence(r.q)

		require.NoError(t, r.vm.Evict(ctx, r.bo))
		synctest.Wait()
		assert.NoError(t, old.Error(), "the preemption itself worked")
		assert.ErrorIs(t, r.q.Err(), errInjected)
		assert.ErrorIs(t, r.vm.Err(), errInjected, "the VM is killed")
		assert.ErrorIs(t, j.Done().Error(), errInjected)
		_, err = r.q.Push(ctx, "next")
		assert.ErrorIs(t, err, lr.ErrBanned)
		_, _, res := r.eng.counts()
		assert.Equal(t, 0, res)
		assert.Same(t, old, r.vm.PreemptFence(r.q))
		assert.True(t, r.vm.IsEvicted(r.bo), "never brought back")
		assert.Equal(t, 0, r.vm.Rebinds())
	})
}

// A VM closed while its preempt worker waits for a queue to get off the hardware
// does not hand the interrupted wait's error to the fence as if the suspension had
// failed (that would leave the queue unbanned, without a VM): Close signals the
// fence with ErrClosed and bans the queue, as for any fence still pending.
func TestVMCloseDuringSuspensionBansTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		defer close(hold)
		r := newRig(t, lockdeptest.New(t), 2, func(r *rig) { r.eng.hold = hold })
		pf := r.vm.PreemptFence(r.q)
		pf.EnableSignaling()
		synctest.Wait()
		_, w, _ := r.eng.counts()
		require.Equal(t, 1, w, "the preempt worker waits for the queue")

		r.vm.Close()
		require.True(t, pf.IsSignaled())
		assert.ErrorIs(t, pf.Error(), lr.ErrClosed)
		assert.ErrorIs(t, r.q.Err(), lr.ErrClosed)
	})
}

func TestAddQueueToClosedVM(t *testing.T) {
	chk := lockdeptest.New(t)
	vm := lr.NewVM(lr.VMOps{}, chk)
	vm.Close()
	vm.Close() // twice: harmless
	q := newQueue(t, chk, &engine{}, 1)
	assert.ErrorIs(t, vm.AddQueue(context.Background(), q), lr.ErrClosed)
	assert.Nil(t, vm.PreemptFence(q))
}

// External buffers outlive the VM: evicting one after the VM closed must not wait
// forever for a preempt fence nobody will signal.
func TestEvictionAfterVMClose(t *testing.T) {
	for _, queueFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "VM closed first", true: "queue closed first"}[queueFirst], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				r := newRig(t, lockdeptest.New(t), 2)
				j, err := r.q.Push(ctx, "job")
				require.NoError(t, err)
				pf := r.vm.PreemptFence(r.q)
				if queueFirst {
					r.q.Close()
				}
				r.vm.Close()

				ectx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				require.NoError(t, r.bo.Lock(ectx, nil))
				assert.NoError(t, r.bo.Wait(ectx, resv.Bookkeep), "eviction of a buffer of a closed VM")
				r.bo.Unlock()
				assert.True(t, pf.IsSignaled())
				assert.Error(t, pf.Error(), "the queue was not preempted: it was shut down")
				assert.Error(t, r.q.Err(), "a queue that lost its VM cannot run")
				assert.Error(t, j.Done().Error())
			})
		})
	}
}
