package sched_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/sched"
)

// hwRing is the smallest possible hardware: RunJob returns a fence that a
// "hardware" goroutine signals once the job's work is done.
type hwRing struct {
	fences *fence.Context
	work   chan *fence.Fence
	wg     sync.WaitGroup
}

func newHWRing() *hwRing {
	r := &hwRing{fences: fence.NewContext("example", "hw-ring"), work: make(chan *fence.Fence, 16)}
	r.wg.Go(func() {
		for f := range r.work {
			f.Signal() // the job completed
		}
	})
	return r
}

func (r *hwRing) close() { close(r.work); r.wg.Wait() }

// A minimal driver: a scheduler over one ring, an entity, and jobs whose order
// follows the entity's queue.
func Example_driver() {
	hw := newHWRing()
	defer hw.close()

	s, err := sched.New(sched.Config{
		Name:        "gfx",
		CreditLimit: 4,
		Timeout:     time.Second,
		Ops: sched.Ops{
			RunJob: func(j *sched.Job) (*fence.Fence, error) {
				f := hw.fences.Next()
				hw.work <- f
				return f, nil
			},
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
			FreeJob:     func(*sched.Job) {},
		},
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	e, _ := s.NewEntity(sched.PriorityNormal)
	var last *sched.Job
	for i := range 3 {
		j, err := e.NewJob(1, fmt.Sprintf("draw %d", i))
		if err != nil {
			panic(err)
		}
		j.Arm()
		j.Push()
		last = j
	}
	last.Finished().Wait(context.Background())
	e.Destroy(context.Background())
	fmt.Println("job", last.Seqno(), last.Payload, "done, error:", last.Finished().Error())
	fmt.Println("jobs accounted:", e.Stats().Jobs)
	// Output:
	// job 3 draw 2 done, error: <nil>
	// jobs accounted: 3
}

// TDR: a job that never completes is caught by the timeout. The driver stops the
// scheduler, "resets" the hardware by completing the hung fence with an error,
// and starts it again; the guilty entity's later jobs are cancelled.
func Example_timeout() {
	ring := fence.NewContext("example", "compute")
	var s *sched.Scheduler
	s, _ = sched.New(sched.Config{
		Name:        "compute",
		CreditLimit: 8,
		Timeout:     10 * time.Millisecond,
		Ops: sched.Ops{
			RunJob: func(j *sched.Job) (*fence.Fence, error) {
				if j.Finished().Error() != nil {
					return nil, nil // cancelled (guilty entity): skip the hardware
				}
				return ring.Next(), nil // never signalled by itself: a hang
			},
			TimedOutJob: func(bad *sched.Job) sched.Status {
				hw := bad.Parent() // Stop drops it, as drm_sched_stop does
				s.Stop(bad)        // submission paused, jobs detached from the hardware
				s.IncreaseKarma(bad)
				hw.SetError(sched.ErrTimedOut) // the reset: the hung context is gone
				hw.Signal()
				s.Start(sched.ErrTimedOut) // jobs that lost their hardware fence end with it
				return sched.StatusReset
			},
			FreeJob: func(*sched.Job) {},
		},
	})
	defer s.Close()

	e, _ := s.NewEntity(sched.PriorityNormal)
	e.ShareGuilty(new(atomic.Bool)) // the context's guilty flag, as amdgpu keeps one
	j, _ := e.NewJob(1, nil)
	j.Arm()
	j.Push()
	j.Finished().Wait(context.Background())
	fmt.Println("hung job:", j.Finished().Error())
	fmt.Println("entity guilty:", e.IsGuilty())

	next, _ := e.NewJob(1, nil)
	next.Arm()
	next.Push()
	next.Finished().Wait(context.Background())
	fmt.Println("next job of the guilty entity:", next.Finished().Error())
	e.Destroy(context.Background())
	// Output:
	// hung job: sched: job timed out (ETIMEDOUT)
	// entity guilty: true
	// next job of the guilty entity: sched: job canceled (ECANCELED)
}

// Priorities with the strict FIFO policy: when a high and a low priority entity
// both have work and the ring takes one job at a time, the high one's jobs all go
// first.
func Example_priorities() {
	ring := fence.NewContext("example", "copy")
	var mu sync.Mutex
	var order []string
	var onGPU []*fence.Fence
	s, _ := sched.New(sched.Config{
		Name:        "copy",
		CreditLimit: 1,
		Policy:      sched.PolicyFIFO,
		Ops: sched.Ops{
			RunJob: func(j *sched.Job) (*fence.Fence, error) {
				mu.Lock()
				defer mu.Unlock()
				order = append(order, j.Payload.(string))
				f := ring.Next()
				onGPU = append(onGPU, f)
				return f, nil
			},
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
			FreeJob:     func(*sched.Job) {},
		},
	})
	defer s.Close()
	low, _ := s.NewEntity(sched.PriorityLow)
	high, _ := s.NewEntity(sched.PriorityHigh)

	// A blocker occupies the ring while both queues fill up.
	blocker, _ := low.NewJob(1, "blocker")
	blocker.Arm()
	blocker.Push()
	blocker.Scheduled().Wait(context.Background())
	var jobs []*sched.Job
	for i := range 2 {
		for _, e := range []*sched.Entity{low, high} {
			name := fmt.Sprintf("%s-%d", e.Priority(), i)
			j, _ := e.NewJob(1, name)
			j.Arm()
			j.Push()
			jobs = append(jobs, j)
		}
	}
	// Play the hardware: complete whatever is on the ring until all is done.
	for _, j := range jobs {
		for !j.Finished().IsSignaled() {
			mu.Lock()
			var f *fence.Fence
			if len(onGPU) > 0 {
				f, onGPU = onGPU[0], onGPU[1:]
			}
			mu.Unlock()
			if f != nil {
				f.Signal()
			} else {
				time.Sleep(time.Millisecond)
			}
		}
	}
	low.Destroy(context.Background())
	high.Destroy(context.Background())
	fmt.Println(order)
	// Output:
	// [blocker high-0 high-1 low-0 low-1]
}
