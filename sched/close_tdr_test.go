package sched_test

import (
	"context"
	"errors"
	"sync"
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
