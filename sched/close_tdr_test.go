package sched_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/schedtest"
)

// Close cancels the jobs still on the hardware newest first, as drm_sched_fini
// does, yet one entity's finished fences still signal in seqno order, with
// ErrCanceled.
func TestCloseCompletesJobsOnTheHardwareInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := schedtest.New(t, schedtest.Config{Checker: lockdeptest.New(t)})
		e, err := r.Sched.NewEntity(sched.PriorityNormal)
		require.NoError(t, err)
		var mu sync.Mutex
		var order []uint64
		var jobs []*schedtest.Job
		cbs := make([]fence.Callback, 4)
		for i := range cbs {
			j := r.NewJob(t, e) // no duration: they stay on the hardware
			require.NoError(t, j.Submit())
			require.NoError(t, j.Finished().AddCallback(&cbs[i], func(f *fence.Fence, _ *fence.Callback) {
				mu.Lock()
				order = append(order, f.Seqno())
				mu.Unlock()
			}))
			jobs = append(jobs, j)
		}
		synctest.Wait()
		require.Equal(t, len(jobs), r.OnGPU())
		r.Close()
		require.Equal(t, []uint64{1, 2, 3, 4}, order)
		for _, j := range jobs {
			require.ErrorIs(t, j.Finished().Error(), sched.ErrCanceled)
		}
		e.Kill()
	})
}

// After StatusDeviceGone the timer stays off until a job reaches the hardware
// again; then the job at the head gets a full timeout from that moment, as
// drm_sched_start_timeout() gives it, not what was left of its old one.
func TestDeviceGoneRestartsTheTimeoutFromTheNextJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		chk := lockdeptest.New(t)
		hw := fence.NewContext("test", "hw", fence.WithChecker(chk))
		var mu sync.Mutex
		var timedOut []time.Time
		s, err := sched.New(sched.Config{
			Name: "gone", CreditLimit: 8, Timeout: timeout, Checker: chk,
			Ops: sched.Ops{
				RunJob: func(*sched.Job) (*fence.Fence, error) { return hw.Next(), nil }, // all hang
				TimedOutJob: func(j *sched.Job) sched.Status {
					mu.Lock()
					timedOut = append(timedOut, time.Now())
					mu.Unlock()
					if j.Seqno() == 1 {
						return sched.StatusDeviceGone
					}
					p := j.Parent()
					require.NoError(t, p.SetError(errors.New("reset")))
					require.NoError(t, p.Signal())
					return sched.StatusReset
				},
				FreeJob: func(*sched.Job) {},
			},
		})
		require.NoError(t, err)
		defer s.Close()
		e, err := s.NewEntity(sched.PriorityNormal)
		require.NoError(t, err)
		push := func() *sched.Job {
			j, err := e.NewJob(1, nil)
			require.NoError(t, err)
			require.NoError(t, j.Arm())
			require.NoError(t, j.Push())
			return j
		}
		start := time.Now()
		push() // job 1: times out, the device is gone
		b := push()
		time.Sleep(3 * timeout) // far past job 2's original deadline: the timer is off
		synctest.Wait()
		mu.Lock()
		require.Len(t, timedOut, 1)
		mu.Unlock()
		cBegan := time.Now()
		c := push() // reaches the hardware: the timer runs again, for job 2 at the head
		require.NoError(t, b.Finished().Wait(context.Background()))
		mu.Lock()
		require.Len(t, timedOut, 2)
		require.Equal(t, timeout, timedOut[0].Sub(start))
		require.Equal(t, timeout, timedOut[1].Sub(cBegan), "a full timeout from when job 3 began")
		mu.Unlock()
		_ = c
		e.Kill()
		s.Close()
		require.NoError(t, c.Finished().Wait(context.Background()))
	})
}

// A job that completed but was not freed yet (the free worker is paused) is not
// a hang: the timeout handler leaves it alone instead of calling TimedOutJob.
func TestTimeoutSkipsAJobThatAlreadyCompleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		chk := lockdeptest.New(t)
		hw := fence.NewContext("test", "hw", fence.WithChecker(chk))
		var timedOut, freed int
		var mu sync.Mutex
		s, err := sched.New(sched.Config{
			Name: "paused", CreditLimit: 8, Timeout: timeout, Checker: chk,
			Ops: sched.Ops{
				RunJob: func(*sched.Job) (*fence.Fence, error) { return hw.Next(), nil },
				TimedOutJob: func(*sched.Job) sched.Status {
					mu.Lock()
					timedOut++
					mu.Unlock()
					return sched.StatusNoHang
				},
				FreeJob: func(*sched.Job) { mu.Lock(); freed++; mu.Unlock() },
			},
		})
		require.NoError(t, err)
		defer s.Close()
		e, err := s.NewEntity(sched.PriorityNormal)
		require.NoError(t, err)
		j, err := e.NewJob(1, nil)
		require.NoError(t, err)
		require.NoError(t, j.Arm())
		require.NoError(t, j.Push())
		require.NoError(t, j.Scheduled().Wait(context.Background()))
		s.WQueueStop() // the free worker cannot retire the job
		require.NoError(t, j.Parent().Signal())
		time.Sleep(3 * timeout)
		synctest.Wait()
		mu.Lock()
		require.Zero(t, timedOut, "a completed job is no hang")
		require.Zero(t, freed)
		mu.Unlock()
		s.WQueueStart()
		synctest.Wait()
		mu.Lock()
		require.Equal(t, 1, freed)
		mu.Unlock()
		e.Kill()
	})
}

// Close never frees a job before its finished fence signalled, even when the job's
// completion is running in the hardware fence's callback as Close looks at it: the
// job is marked done before its finished fence signals, and Close must wait that
// window out, as drm_sched_stop waits on the finished fence before it frees. A
// tracer that blocks on the job's done event (against the Tracer contract) holds
// the completion inside that window.
func TestCloseWaitsForACompletionInProgress(t *testing.T) {
	chk := lockdeptest.New(t)
	hw := fence.NewContext("test", "hw", fence.WithChecker(chk))
	ran := make(chan *fence.Fence, 1)
	inDone, release := make(chan struct{}), make(chan struct{})
	var canceledEarly, freedUnsignalled atomic.Bool
	s, err := sched.New(sched.Config{
		Name: "close", CreditLimit: 8, Checker: chk,
		Tracer: sched.TracerFunc(func(e sched.Event) {
			if e.Kind == sched.EventDone {
				close(inDone)
				<-release
			}
		}),
		Ops: sched.Ops{
			RunJob: func(*sched.Job) (*fence.Fence, error) {
				f := hw.Next()
				ran <- f
				return f, nil
			},
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
			CancelJob: func(j *sched.Job) {
				select {
				case <-release:
				default:
					canceledEarly.Store(true) // Close went past the job while it completed
				}
			},
			FreeJob: func(j *sched.Job) {
				if !j.Finished().IsSignaled() {
					freedUnsignalled.Store(true)
				}
			},
		},
	})
	require.NoError(t, err)
	e, err := s.NewEntity(sched.PriorityNormal)
	require.NoError(t, err)
	j, err := e.NewJob(1, nil)
	require.NoError(t, err)
	require.NoError(t, j.Arm())
	require.NoError(t, j.Push())
	hwf := <-ran
	signalled := make(chan error)
	go func() { signalled <- hwf.Signal() }() // the hardware completes the job
	<-inDone

	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	// Give a Close that does not wait every chance to run ahead; one that waits
	// spins on the hardware fence's lock until release.
	for i := 0; i < 10_000 && !canceledEarly.Load(); i++ {
		runtime.Gosched()
	}
	close(release)
	<-closed
	require.NoError(t, <-signalled)
	require.False(t, canceledEarly.Load(), "Close went on while a job's completion was running")
	require.False(t, freedUnsignalled.Load(), "FreeJob ran before the finished fence signalled")
	require.True(t, j.Finished().IsSignaled())
	require.NoError(t, e.Destroy(context.Background()))
}

// Score is what drm_sched_pick_best compares: the entities on the scheduler's run
// queue, idle ones included (from an entity's first push there until it is killed
// or moves away), plus the jobs pushed and not yet completed. An idle entity moves
// to the scheduler with the lowest score when it arms its next job.
func TestScoreCountsEntitiesAndJobsNotDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		a := schedtest.New(t, schedtest.Config{Name: "a", Checker: chk})
		b := schedtest.New(t, schedtest.Config{Name: "b", Checker: chk})
		scores := func() [2]int64 { return [2]int64{a.Sched.Score(), b.Sched.Score()} }
		lb, err := sched.NewEntity(sched.PriorityNormal, a.Sched, b.Sched)
		require.NoError(t, err)
		pinned := a.NewEntity(t, sched.PriorityNormal)
		require.Equal(t, [2]int64{0, 0}, scores(), "entities that never pushed do not count")

		require.NoError(t, a.NewJob(t, lb).Submit()) // hangs on a until Advance
		synctest.Wait()
		require.Same(t, a.Sched, lb.Scheduler(), "ties go to the first scheduler")
		require.Equal(t, [2]int64{2, 0}, scores(), "the entity and its job")

		require.Equal(t, 1, a.Advance(1))
		synctest.Wait()
		require.Equal(t, [2]int64{1, 0}, scores(), "an idle entity stays on the run queue")

		for range 2 {
			require.NoError(t, a.NewJob(t, pinned).Submit())
		}
		synctest.Wait()
		require.Equal(t, [2]int64{4, 0}, scores())

		// lb is idle: its next job moves it to b, the lower score, and a loses it.
		moved := a.NewJob(t, lb)
		require.NoError(t, moved.Submit())
		synctest.Wait()
		require.Same(t, b.Sched, lb.Scheduler())
		require.Equal(t, [2]int64{3, 2}, scores())

		require.Equal(t, 1, b.Advance(1))
		require.Equal(t, 2, a.Advance(2))
		synctest.Wait()
		require.Equal(t, [2]int64{1, 1}, scores())
		require.NoError(t, lb.Destroy(context.Background()))
		pinned.Kill()
		require.Equal(t, [2]int64{0, 0}, scores(), "killed entities leave the run queue")
	})
}

// An entity destroyed after its scheduler closed does not wait for a queue that
// will never drain: drm_sched_fini stops every entity, so the flush returns (one
// already waiting too), and the kill that follows completes the queued jobs.
func TestDestroyAfterCloseKillsTheQueuedJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := schedtest.New(t, schedtest.Config{Checker: lockdeptest.New(t)})
		e := r.NewEntity(t, sched.PriorityNormal)
		dep := fence.NewContext("test", "dep").New(1) // never signals: the job stays queued
		j := r.NewJob(t, e)
		require.NoError(t, j.AddDependency(dep))
		require.NoError(t, j.Submit())
		synctest.Wait()

		flushed := make(chan error)
		go func() { flushed <- e.Flush(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-flushed:
			t.Fatalf("Flush returned %v with a job queued", err)
		default:
		}

		r.Sched.Close()
		require.NoError(t, <-flushed, "a Flush waiting when the scheduler closed")
		require.NoError(t, e.Destroy(context.Background()))
		// Killed, it still completes after its dependency, as the kernel's
		// drm_sched_entity_kill_jobs_cb waits for every dependency first.
		require.False(t, j.Finished().IsSignaled())
		require.NoError(t, dep.Signal())
		synctest.Wait()
		require.True(t, j.Finished().IsSignaled())
		require.ErrorIs(t, j.Finished().Error(), sched.ErrSearch)
	})
}

// An idle entity moving between schedulers skips a closed one, as
// drm_sched_pick_best skips a scheduler that is not ready, even when the closed
// one has the lower score; once all its schedulers are closed, NewJob refuses
// with ErrNoRunQueue (the kernel's -ENOENT).
func TestLoadBalancingSkipsClosedSchedulers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		a := schedtest.New(t, schedtest.Config{Name: "a", Checker: chk})
		b := schedtest.New(t, schedtest.Config{Name: "b", Checker: chk})
		e, err := sched.NewEntity(sched.PriorityNormal, a.Sched, b.Sched)
		require.NoError(t, err)
		defer e.Kill()
		busy := b.NewEntity(t, sched.PriorityNormal)
		require.NoError(t, b.NewJob(t, busy).Submit()) // b's score is above a's
		synctest.Wait()

		a.Sched.Close()
		j := b.NewJob(t, e)
		require.NoError(t, j.Submit(), "the open scheduler takes the job")
		require.Same(t, b.Sched, e.Scheduler())
		synctest.Wait()
		require.Equal(t, 2, b.Advance(2))
		synctest.Wait()
		require.True(t, j.IsFinished())
		require.NoError(t, j.Finished().Error())

		b.Sched.Close()
		_, err = e.NewJob(1, nil)
		require.ErrorIs(t, err, sched.ErrNoRunQueue)
		_, err = busy.NewJob(1, nil)
		require.ErrorIs(t, err, sched.ErrNoRunQueue, "a pinned entity whose scheduler closed")
	})
}

// Close after Stop and ResubmitJobs without Start: the resubmitted jobs have new
// hardware fences that nothing follows yet (Start would). Close still completes
// each one and frees it after its finished fence signalled (the test driver's
// FreeJob checks that).
func TestCloseAfterStopAndResubmitWithoutStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: 100 * time.Millisecond}, func(x *drv) {
			x.timedOut = func(j *sched.Job) sched.Status {
				d.s.Stop(j)
				d.reset()
				d.s.ResubmitJobs()
				return sched.StatusDeviceGone // and no Start: the device is gone
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		var jobs []*sched.Job
		for range 3 {
			j := d.job(t, e, 0)
			submit(t, j)
			jobs = append(jobs, j)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		d.close()
		for _, j := range jobs {
			require.True(t, j.Finished().IsSignaled(), "job %d", j.Seqno())
			require.Equal(t, int32(1), payload(j).freed.Load(), "job %d", j.Seqno())
		}
	})
}

// Close after Stop without Start: Stop gave the detached jobs' credits back, and
// completing them in Close must not take them off a second time.
func TestCloseAfterStopKeepsCreditsBalanced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		hw := fence.NewContext("test", "hw", fence.WithChecker(chk))
		s, err := sched.New(sched.Config{Name: "r", CreditLimit: 8, Checker: chk, Ops: sched.Ops{
			RunJob:      func(*sched.Job) (*fence.Fence, error) { return hw.Next(), nil },
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
			FreeJob:     func(*sched.Job) {},
		}})
		require.NoError(t, err)
		e, err := s.NewEntity(sched.PriorityNormal)
		require.NoError(t, err)
		var jobs []*sched.Job
		for range 3 {
			j, err := e.NewJob(2, nil)
			require.NoError(t, err)
			require.NoError(t, j.Arm())
			require.NoError(t, j.Push())
			jobs = append(jobs, j)
		}
		synctest.Wait()
		require.EqualValues(t, 6, s.Credits())
		s.Stop(nil)
		require.Zero(t, s.Credits(), "Stop gives the credits back")
		s.Close()
		require.Zero(t, s.Credits())
		for _, j := range jobs {
			require.ErrorIs(t, j.Finished().Error(), sched.ErrCanceled)
		}
		require.NoError(t, e.Destroy(context.Background()))
	})
}

// IncreaseKarma marks the guilty flag only of an entity still on the bad job's
// scheduler, as drm_sched_increase_karma finds it among the run queue's entities:
// blaming a job of an entity killed since sets nothing, so the other entities of
// its context are not cancelled.
func TestIncreaseKarmaSkipsAKilledEntity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		r := schedtest.New(t, schedtest.Config{Checker: chk})
		var ctxGuilty atomic.Bool
		a, b := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityNormal)
		a.ShareGuilty(&ctxGuilty)
		b.ShareGuilty(&ctxGuilty)
		j := r.NewJob(t, a)
		require.NoError(t, j.Submit())
		synctest.Wait()
		a.Kill() // the process exited: a left the run queue
		r.Sched.IncreaseKarma(j.Job)
		require.Equal(t, 1, j.Karma())
		require.False(t, ctxGuilty.Load(), "a killed entity was marked guilty")
		require.False(t, b.IsGuilty())
		require.Equal(t, 1, r.Advance(1))
	})
}
