package lr

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/semaphore"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/sched"
)

// QueueOps are the driver's hooks for an LR queue. Models the suspend, suspend_wait
// and resume members of Xe's struct xe_exec_queue_ops, plus running a job.
type QueueOps struct {
	// Run writes the job to the ring; the hardware then runs it for as long as it
	// takes, and the driver calls Job.Complete when it finished. Run is called from
	// the scheduler's RunJob, inside a fence signalling section. To report a
	// failure, return an error (the job completes with it); Run must not call
	// Queue.Fail or Close, which wait for the scheduler's run worker it runs on.
	Run func(j *Job) error
	// Suspend starts preempting the queue off the hardware; it must not block.
	Suspend func(q *Queue) error
	// SuspendWait blocks until the queue is off the hardware (or ctx ends). It
	// returns ErrAgain to be called again later, ErrTimedOut if the queue did not
	// get off the hardware in time (which kills the VM), or another error, which
	// the preempt fence carries.
	SuspendWait func(ctx context.Context, q *Queue) error
	// Resume puts the queue back on the hardware after a preemption.
	Resume func(q *Queue)
}

// QueueConfig describes an LR queue: what xe_exec_queue_create() is given for a
// queue on a VM in LR mode.
type QueueConfig struct {
	Name string
	// RingSize is how many jobs fit in the ring at once. A push beyond it waits
	// (Push) or fails (TryPush) until the oldest job completes.
	RingSize int
	Ops      QueueOps
	Checker  *lockdep.Checker
	Tracer   sched.Tracer
}

// A Queue is a long-running (compute) exec queue: jobs go through a scheduler for
// ordering and submission, but their completion is an LR fence, which is never a
// dma fence. Models an Xe exec queue in LR mode.
//
// What the scheduler job's finished fence means here: it signals when the job has
// been written to the ring and handed to the firmware (RunJob returns no hardware
// fence), exactly as in Xe's LR mode; it says nothing about when the work ends. The
// work's completion is Job.Done(), an LR fence. Flow control is ring space, not
// scheduler credits: a job holds one ring slot from Push until it completes.
//
// Invariants: inflight holds the pushed jobs whose LR fence has not signalled, in
// push order; each holds one slot of ring. Once banned the queue accepts nothing.
type Queue struct {
	cfg   QueueConfig
	sched *sched.Scheduler
	ent   *sched.Entity
	done  *fence.Context // LR completion fences
	ring  *semaphore.Weighted

	mu       sync.Mutex
	inflight []*Job
	banned   error
	closed   bool
}

// A Job is one LR submission. Models struct xe_sched_job on a long-running queue,
// whose fence is an LR completion fence rather than a dma_fence.
type Job struct {
	*sched.Job
	// Data is the payload given to Push.
	Data any

	q    *Queue
	done *fence.Fence // LR
	once sync.Once
}

// NewQueue makes an LR queue with its own scheduler (the 1:1 mode). Its
// scheduler's timeout is off: LR work may run forever; errors are cleaned up by
// Fail. Models xe_exec_queue_create() for a VM in LR mode, with its
// xe_gpu_scheduler.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	if cfg.RingSize <= 0 || cfg.Ops.Run == nil {
		return nil, fmt.Errorf("%w: an LR queue needs a ring size and a Run hook", sched.ErrInvalid)
	}
	if cfg.Name == "" {
		cfg.Name = "lr-queue"
	}
	q := &Queue{cfg: cfg, ring: semaphore.NewWeighted(int64(cfg.RingSize))}
	var chk []fence.ContextOption
	if cfg.Checker != nil {
		chk = append(chk, fence.WithChecker(cfg.Checker))
	}
	q.done = NewContext("lr", cfg.Name, chk...)
	s, err := sched.New(sched.Config{
		Name:        cfg.Name,
		CreditLimit: uint32(cfg.RingSize),
		Checker:     cfg.Checker,
		Tracer:      cfg.Tracer,
		Ops: sched.Ops{
			RunJob:      q.runJob,
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusNoHang },
			FreeJob:     func(*sched.Job) {},
		},
	})
	if err != nil {
		return nil, err
	}
	q.sched = s
	q.ent, _ = s.NewEntity(sched.PriorityNormal)
	return q, nil
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.cfg.Name }

// Scheduler returns the queue's scheduler.
func (q *Queue) Scheduler() *sched.Scheduler { return q.sched }

// Err returns why the queue was banned, or nil.
func (q *Queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.banned
}

// Inflight returns how many jobs hold ring slots.
func (q *Queue) Inflight() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.inflight)
}

// Push submits a job, waiting for ring space until ctx ends (then ctx.Err(), and
// nothing was submitted). Models the Xe exec ioctl for an LR queue, with the wait
// the kernel leaves to userspace.
func (q *Queue) Push(ctx context.Context, payload any) (*Job, error) {
	if err := q.usable(); err != nil {
		return nil, err
	}
	if err := q.ring.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return q.submit(payload)
}

// TryPush submits a job if there is ring space, else returns ErrWouldBlock. Models
// the Xe exec ioctl's -EWOULDBLOCK when the LR ring is full.
func (q *Queue) TryPush(payload any) (*Job, error) {
	if err := q.usable(); err != nil {
		return nil, err
	}
	if !q.ring.TryAcquire(1) {
		return nil, ErrWouldBlock
	}
	return q.submit(payload)
}

func (q *Queue) usable() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return ErrClosed
	case q.banned != nil:
		return fmt.Errorf("%w: %w", ErrBanned, q.banned)
	}
	return nil
}

// submit runs with one ring slot held; every failure gives it back.
func (q *Queue) submit(payload any) (*Job, error) {
	sj, err := q.ent.NewJob(1, nil)
	if err != nil {
		q.ring.Release(1)
		// The entity was killed, or the scheduler closed, by Fail or Close racing
		// this push: report it as the queue's state, not the scheduler's.
		if errors.Is(err, sched.ErrKilled) || errors.Is(err, sched.ErrNoRunQueue) {
			return nil, q.refusal()
		}
		return nil, err
	}
	j := &Job{Job: sj, Data: payload, q: q}
	sj.Payload = j
	q.mu.Lock()
	if q.banned != nil || q.closed {
		q.mu.Unlock()
		q.ring.Release(1)
		_ = sj.Cleanup()
		return nil, q.refusal()
	}
	_ = sj.Arm() // the point of no return
	j.done = q.done.NewWithData(sj.Seqno(), j)
	q.inflight = append(q.inflight, j)
	// Push under the same lock as Arm (drm_sched_job_arm's rule): otherwise two
	// pushers can queue their jobs out of seqno order, and the LR fences of the
	// queue's timeline would complete out of order.
	err = sj.Push()
	q.mu.Unlock()
	if err != nil {
		j.Complete(ErrBanned)
		return nil, q.refusal()
	}
	return j, nil
}

// refusal is the error of a push that got ring space but found the queue closed
// or banned meanwhile (say, while it waited): it says which, and why.
func (q *Queue) refusal() error {
	if err := q.usable(); err != nil {
		return err
	}
	return ErrBanned
}

// runJob writes the job to the ring and returns no hardware fence: the scheduler's
// finished fence means "submitted" (see Queue).
func (q *Queue) runJob(sj *sched.Job) (*fence.Fence, error) {
	j := sj.Payload.(*Job)
	if err := sj.Finished().Error(); err != nil {
		j.Complete(err) // cancelled before it reached the ring
		return nil, nil
	}
	if err := q.cfg.Ops.Run(j); err != nil {
		j.Complete(err)
		return nil, err
	}
	return nil, nil
}

// Done returns the job's LR completion fence.
func (j *Job) Done() *fence.Fence { return j.done }

// Queue returns the job's queue.
func (j *Job) Queue() *Queue { return j.q }

// Complete signals the job's LR fence (with err, if any) and frees its ring slot.
// The driver calls it when the hardware finished the job; later calls do nothing.
// Models the completion of an LR job's hardware fence (xe_hw_fence signalled
// from the ring's interrupt).
func (j *Job) Complete(err error) {
	j.once.Do(func() {
		q := j.q
		q.mu.Lock()
		for i, x := range q.inflight {
			if x == j {
				q.inflight = append(q.inflight[:i], q.inflight[i+1:]...)
				break
			}
		}
		q.mu.Unlock()
		if err != nil {
			_ = j.done.SetError(err)
		}
		_ = j.done.Signal()
		q.ring.Release(1)
	})
}

// Fail bans the queue after an error (a hardware fault, its VM killed): jobs
// not yet submitted are killed, and every job in flight completes with err. Models
// Xe's LR queue clean-up (the TDR fired at once with drm_sched_tdr_queue_imm), which
// kills the queue and errors its fences.
func (q *Queue) Fail(err error) {
	q.mu.Lock()
	if q.banned == nil {
		q.banned = err
	}
	jobs := append([]*Job(nil), q.inflight...)
	q.mu.Unlock()
	q.ent.Kill()
	for _, j := range jobs {
		j.Complete(err)
	}
}

// Close bans the queue with ErrClosed, completing what is in flight with it, and
// stops its scheduler. Models xe_exec_queue_kill() followed by the queue's
// final put.
func (q *Queue) Close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	q.Fail(ErrClosed)
	_ = q.ent.Destroy(context.Background())
	q.sched.Close()
}
