package main

import (
	"sync"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/sched"
)

// ring is one simulated hardware ring: it executes what the scheduler hands it, in
// order, back to back, each job for its simulated duration. A hung job holds the
// ring until the driver's timeout handler resets it.
type ring struct {
	name  string
	hw    *fence.Context
	work  chan *hwJob
	wg    sync.WaitGroup
	sched *sched.Scheduler

	mu      sync.Mutex
	current *hwJob // on the engine now
}

type hwJob struct {
	fence *fence.Fence
	spec  *jobSpec
	reset chan struct{} // closed by the timeout handler to kill a hung job
}

// jobSpec is what a client asks the GPU to do; it travels as the job's payload.
type jobSpec struct {
	client *client
	dur    time.Duration
	hang   bool
}

func newRing(name string, timeout time.Duration, tracer sched.Tracer, chk *lockdep.Checker, stats *stats) (*ring, error) {
	r := &ring{name: name, hw: fence.NewContext("simgpu", name, fence.WithChecker(chk)), work: make(chan *hwJob, 1024)}
	s, err := sched.New(sched.Config{
		Name: name, CreditLimit: 4, Timeout: timeout, HangLimit: 0,
		Tracer: tracer, Checker: chk,
		Ops: sched.Ops{
			RunJob: r.runJob,
			TimedOutJob: func(bad *sched.Job) sched.Status {
				stats.timeout(bad)
				r.sched.IncreaseKarma(bad) // blame the client: its later jobs are cancelled
				r.resetHung()
				return sched.StatusReset
			},
			FreeJob: func(*sched.Job) {},
		},
	})
	if err != nil {
		return nil, err
	}
	r.sched = s
	r.wg.Go(r.engine)
	return r, nil
}

// runJob writes the job to the ring. It runs in a fence signalling section: no
// waiting, no allocation that could reclaim (the channel is pre-sized).
func (r *ring) runJob(j *sched.Job) (*fence.Fence, error) {
	spec := j.Payload.(*jobSpec)
	if j.Finished().Error() != nil {
		return nil, nil // cancelled (guilty client): skip the hardware
	}
	hj := &hwJob{fence: r.hw.Next(), spec: spec, reset: make(chan struct{})}
	r.work <- hj
	return hj.fence, nil
}

// engine executes jobs in ring order.
func (r *ring) engine() {
	for hj := range r.work {
		r.mu.Lock()
		r.current = hj
		r.mu.Unlock()
		if hj.spec.hang {
			<-hj.reset
			_ = hj.fence.SetError(sched.ErrTimedOut)
		} else {
			time.Sleep(hj.spec.dur)
			hj.spec.client.ran(hj.spec.dur)
		}
		r.mu.Lock()
		r.current = nil
		r.mu.Unlock()
		_ = hj.fence.Signal()
	}
}

// resetHung is the ring reset: the hung job is killed, the ring goes on.
func (r *ring) resetHung() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current != nil && r.current.spec.hang {
		close(r.current.reset)
	}
}

func (r *ring) close() {
	r.sched.Close()
	close(r.work)
	r.wg.Wait()
}
