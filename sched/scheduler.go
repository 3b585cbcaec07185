package sched

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sync/errgroup"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
)

// Ops are the driver's hooks. Models struct drm_sched_backend_ops.
type Ops struct {
	// PrepareJob (optional) is called when the job's own dependencies have all
	// signalled; it may return one more fence to wait for, or nil when the job is
	// ready. It is called again after that fence signals.
	PrepareJob func(j *Job, e *Entity) *fence.Fence
	// RunJob hands the job to the hardware and returns the hardware fence, which
	// signals when the job is done (the job's finished fence follows it). A nil
	// fence means the job is already done; an error completes it with that error.
	// RunJob runs inside a fence signalling section: it must not wait on fences nor
	// allocate in a reclaim-capable way.
	RunJob func(j *Job) (*fence.Fence, error)
	// TimedOutJob is called by the TDR when the job at the head of the hardware
	// queue exceeded the timeout, with submission stopped only if the driver stops
	// it (Stop). It reports what happened.
	TimedOutJob func(j *Job) Status
	// FreeJob releases the job after its finished fence signalled.
	FreeJob func(j *Job)
	// CancelJob (optional) is called by Close for each job still on the hardware,
	// newest first, to make its hardware fence signal (usually with ErrCanceled).
	CancelJob func(j *Job)
}

// Config describes a scheduler. Models struct drm_sched_init_args.
type Config struct {
	// Name names the ring; it is the timeline name of the fences and appears in
	// traces and fdinfo keys.
	Name string
	Ops  Ops
	// CreditLimit is the ring's capacity: the sum of the credits of the jobs on the
	// hardware never exceeds it. Must be at least 1.
	CreditLimit uint32
	// Timeout is the TDR timeout: how long the job at the head of the hardware queue
	// may run. Zero disables the timer (MAX_SCHEDULE_TIMEOUT); Fault still works.
	Timeout time.Duration
	// HangLimit is the karma above which ResubmitJobs treats a job as guilty.
	HangLimit int
	// Policy picks the next entity; the default is the kernel's current fair policy.
	Policy Policy
	// Tracer receives events; nil means none.
	Tracer Tracer
	// Checker is the lockdep checker of the scheduler's annotations; nil: default.
	Checker *lockdep.Checker
}

// A Scheduler feeds one hardware ring (or one firmware queue) from its entities'
// job queues, in the order its policy chooses, limited by credits, and watches the
// jobs on the hardware with a timeout. Models struct drm_gpu_scheduler.
//
// A Scheduler owns two goroutines, started by New and stopped by Close: the submit
// worker, which runs both the run-job and the free-job work items in order (the
// kernel's ordered submit_wq), and the TDR worker (timeout_wq).
//
// Invariants (under mu): pending holds the jobs handed to RunJob and not yet
// freed, in RunJob order; credits is the sum of their credits (minus those whose
// hardware callback Stop detached); the run queue holds exactly the entities with a
// queued job, no pending dependency, that are not stopped.
type Scheduler struct {
	cfg     Config
	checker *lockdep.Checker

	score   atomic.Int64 // load-balancing score: entities on the rq plus queued jobs
	credits atomic.Int64 // credits charged (kept outside mu: completions run in fence callbacks)
	closed  atomic.Bool  // Close was called: Push refuses

	mu         sync.Mutex
	rq         *runQueue
	pending    []*Job
	paused     bool // pause_submit
	freeGuilty bool
	tdrOff     bool // not re-armed (device gone) or stopped, until the next begin or Start
	fault      bool // Fault: fire the TDR now
	avgJobNs   int64
	lastDone   time.Time // when the last job completed: the next one's GPU time starts no earlier

	workMu sync.Mutex // held while a work item runs; wqueue stop waits on it
	runK   chan struct{}
	freeK  chan struct{}
	tdrK   chan struct{}
	stop   chan struct{}
	g      errgroup.Group
}

// New validates cfg and returns a running scheduler. Models drm_sched_init().
func New(cfg Config) (*Scheduler, error) {
	switch {
	case cfg.CreditLimit == 0:
		return nil, fmt.Errorf("%w: credit limit 0", ErrInvalid)
	case cfg.Ops.RunJob == nil || cfg.Ops.FreeJob == nil || cfg.Ops.TimedOutJob == nil:
		return nil, fmt.Errorf("%w: RunJob, TimedOutJob and FreeJob are required", ErrInvalid)
	case cfg.Policy > PolicyRoundRobin:
		return nil, fmt.Errorf("%w: policy %d", ErrInvalid, cfg.Policy)
	}
	if cfg.Name == "" {
		cfg.Name = "gpu-sched"
	}
	s := &Scheduler{
		cfg:     cfg,
		checker: cfg.Checker,
		rq:      newRunQueue(cfg.Policy),
		runK:    make(chan struct{}, 1),
		freeK:   make(chan struct{}, 1),
		tdrK:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	if s.checker == nil {
		s.checker = lockdep.Default
	}
	s.g.Go(s.submitWorker)
	s.g.Go(s.tdrWorker)
	return s, nil
}

// Name returns the scheduler's name.
func (s *Scheduler) Name() string { return s.cfg.Name }

// CreditLimit returns the ring's capacity in credits.
func (s *Scheduler) CreditLimit() uint32 { return s.cfg.CreditLimit }

// Credits returns the credits of the jobs on the hardware now.
func (s *Scheduler) Credits() int64 { return s.credits.Load() }

// Score returns the load-balancing score (entities on the run queue plus queued
// jobs), the figure drm_sched_pick_best compares.
func (s *Scheduler) Score() int64 { return s.score.Load() }

// IsStopped reports whether submission is paused (Stop or WQueueStop). Models
// drm_sched_wqueue_ready's counterpart, pause_submit.
func (s *Scheduler) IsStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

// Pending returns the jobs on the hardware, oldest first. Models pending_list.
func (s *Scheduler) Pending() []*Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending)
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *Scheduler) trace(e Event) {
	if s.cfg.Tracer != nil {
		e.Sched = s.cfg.Name
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		s.cfg.Tracer.Trace(e)
	}
}

// submitWorker runs the run-job and free-job work items, one at a time, in the
// order they were queued: the kernel's ordered submit workqueue.
func (s *Scheduler) submitWorker() error {
	for {
		select {
		case <-s.stop:
			return nil
		case <-s.freeK:
			s.work(s.freeWork)
		case <-s.runK:
			s.work(s.runWork)
		}
	}
}

// work runs one work item unless submission is paused: queueing work while paused
// is a no-op in the kernel, and WQueueStart queues both items again.
func (s *Scheduler) work(item func()) {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	if !paused {
		item()
	}
}

// WQueueStop pauses submission and waits for a running work item to finish.
// Models drm_sched_wqueue_stop().
func (s *Scheduler) WQueueStop() {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	s.workMu.Lock() // cancel_work_sync: wait out the item in flight
	s.workMu.Unlock()
}

// WQueueStart resumes submission and queues both work items. Models
// drm_sched_wqueue_start().
func (s *Scheduler) WQueueStart() {
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
	kick(s.runK)
	kick(s.freeK)
}

// runWork is drm_sched_run_job_work: while an entity is ready and its head job
// fits in the free credits, pop it and hand it to the hardware.
func (s *Scheduler) runWork() {
	for {
		s.mu.Lock()
		e := s.rq.peek()
		paused := s.paused
		s.mu.Unlock()
		if e == nil || paused {
			return
		}
		if !s.runOne(e) {
			return
		}
	}
}

// runOne tries the selected entity. It returns false when the worker should stop
// (not enough credits: wait for a completion, which queues the work again).
func (s *Scheduler) runOne(e *Entity) bool {
	e.popMu.Lock() // entity_idle: Kill waits for this
	head := e.peek()
	if head == nil {
		e.popMu.Unlock()
		s.mu.Lock()
		if e.queued.Load() == 0 {
			s.rq.remove(e)
		}
		s.mu.Unlock()
		return true
	}
	if int64(head.credits) > int64(s.cfg.CreditLimit)-s.credits.Load() {
		e.popMu.Unlock()
		return false // -ENOSPC: wait, do not skip to a smaller job (fairness)
	}
	job := s.popJob(e, head)
	if job == nil {
		e.popMu.Unlock()
		return true // waiting on a dependency; the entity left the run queue
	}
	s.credits.Add(int64(job.credits))
	job.startTS = time.Now() // before RunJob: its fence may signal at once
	s.begin(job)
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventRun, Entity: e.id, FenceContext: e.schedCtx.ID(), Job: job.seqno, Credits: job.credits, Time: job.startTS})
	}
	var hw *fence.Fence
	var err error
	cookie := s.checker.BeginSignalling()
	job.traceRun(func() { hw, err = s.cfg.Ops.RunJob(job) })
	s.checker.EndSignalling(cookie)
	e.popMu.Unlock()
	if err == nil && hw != nil && !hw.IsLongRunning() {
		// drm_sched_fence_scheduled() stores the parent before it signals: whoever
		// waited for the scheduled fence may read Parent.
		s.mu.Lock()
		job.parent = hw
		s.mu.Unlock()
	}
	_ = job.scheduled.SignalTimestamp(job.startTS)
	s.attachHW(job, hw, err)
	return true
}

// attachHW makes the job's completion follow its hardware fence. Models the tail
// of drm_sched_run_job_work.
func (s *Scheduler) attachHW(job *Job, hw *fence.Fence, err error) {
	switch {
	case err != nil:
		s.jobDone(job, err)
	case hw == nil:
		s.jobDone(job, nil)
	case hw.IsLongRunning():
		// The finished fence is a dma fence: following a long-running fence would
		// export unbounded work as one. LR drivers return nil (see package lr).
		s.jobDone(job, errLongRunningHW)
	default: // job.parent is hw already (runOne)
		if hw.AddCallbackUnbounded(&job.hwCb, hwDone) != nil {
			s.jobDone(job, hw.Error())
		}
	}
}

// begin puts job on the pending list and starts its timeout if it is the head.
// Models drm_sched_job_begin().
func (s *Scheduler) begin(job *Job) {
	s.mu.Lock()
	job.tdrStart = job.startTS // one clock read per job: it reached the ring now
	if s.tdrOff && len(s.pending) > 0 {
		// The timer was off (device gone): starting it again gives the head a
		// full timeout from now, as drm_sched_start_timeout() does.
		s.pending[0].tdrStart = job.tdrStart
	}
	s.pending = append(s.pending, job)
	s.tdrOff = false
	s.mu.Unlock()
	kick(s.tdrK)
}

// hwDone is the hardware fence's callback: it runs in the goroutine that signalled
// the hardware fence, with that fence's lock held. A plain function that finds the
// job from its Callback, as container_of does, so that queueing it allocates no
// closure. The job completes at the hardware fence's timestamp. Models
// drm_sched_job_done_cb().
func hwDone(f *fence.Fence, cb *fence.Callback) {
	j := (*Job)(unsafe.Add(unsafe.Pointer(cb), -int(unsafe.Offsetof(Job{}.hwCb))))
	at, ok := f.Timestamp()
	if !ok {
		at = time.Now()
	}
	j.sched.jobDoneAt(j, f.Error(), at)
}

// jobDone returns the job's credits and signals its finished fence with result.
// It runs at most once per job. Models drm_sched_job_done().
func (s *Scheduler) jobDone(j *Job, result error) { s.jobDoneAt(j, result, time.Now()) }

// jobDoneAt is jobDone for a completion at the given time.
func (s *Scheduler) jobDoneAt(j *Job, result error, now time.Time) {
	if !j.done.CompareAndSwap(false, true) {
		return
	}
	cookie := s.checker.BeginSignalling()
	// GPU time: from when the job reached the ring, or when the job ahead of it
	// finished if that was later (the ring runs in order), to now. The kernel
	// accounts it in the free worker; doing it here makes Stats current as soon as
	// the finished fence has signalled.
	s.mu.Lock()
	start := j.startTS
	if s.lastDone.After(start) {
		start = s.lastDone
	}
	s.lastDone = now
	gpu := max(now.Sub(start), 0)
	s.avgJobNs = ewma(s.avgJobNs, gpu.Nanoseconds())
	s.mu.Unlock()
	if result != nil {
		_ = j.finished.SetError(result)
	}
	final := j.finished.Error() // result, or what was set before (ErrCanceled)
	j.entity.account(gpu, final)
	s.credits.Add(-int64(j.credits))
	s.score.Add(-1)
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventDone, Entity: j.entity.id, FenceContext: j.entity.schedCtx.ID(), Job: j.seqno, Credits: j.credits, Err: final, Time: now})
	}
	_ = j.finished.SignalTimestamp(now)
	s.checker.EndSignalling(cookie)
	j.traceEnd(final)
	kick(s.freeK)
}

// freeWork retires finished jobs from the head of the pending list and frees them. Models drm_sched_free_job_work() with
// drm_sched_get_finished_job().
func (s *Scheduler) freeWork() {
	var done []*Job
	s.mu.Lock()
	for len(s.pending) > 0 && s.pending[0].finished.IsSignaled() {
		j := s.pending[0]
		s.pending[0] = nil
		s.pending = s.pending[1:]
		done = append(done, j)
	}
	if len(done) > 0 && len(s.pending) > 0 {
		s.pending[0].tdrStart = time.Now() // the new head's timeout starts now
	}
	s.mu.Unlock()
	if len(done) == 0 {
		// A job the TDR took off the pending list returned its credits when its
		// fence signalled, with nothing here to retire: drm_sched_free_job_work
		// queues the run work whether or not it freed a job.
		kick(s.runK)
		return
	}
	kick(s.tdrK)
	for _, j := range done {
		s.cfg.Ops.FreeJob(j)
	}
	kick(s.runK) // credits may have freed up
}

func ewma(avg, v int64) int64 {
	if avg == 0 {
		return v
	}
	return avg + (v-avg)/8
}

// Close stops the scheduler: it pauses submission, stops and joins its goroutines,
// asks the driver to cancel each job still on the hardware (CancelJob, newest
// first), completes any that still did not finish with ErrCanceled, and frees them.
// Entities must be destroyed by their owners first; a job pushed later is refused.
// Models drm_sched_fini(), which warns and leaks where this completes and frees.
func (s *Scheduler) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	s.WQueueStop()
	close(s.stop)
	_ = s.g.Wait()
	s.mu.Lock()
	jobs := s.pending
	s.pending = nil
	s.mu.Unlock()
	// Detach the jobs from their hardware fences first, so that the driver's
	// cancellations (newest first, as drm_sched_fini calls cancel_job) cannot
	// complete one entity's jobs out of seqno order; then complete them oldest first.
	detached := make([]bool, len(jobs))
	for i, j := range jobs {
		if !j.done.Load() {
			p := j.Parent()
			detached[i] = p == nil || p.RemoveCallback(&j.hwCb)
		}
	}
	if cancel := s.cfg.Ops.CancelJob; cancel != nil {
		for i := len(jobs) - 1; i >= 0; i-- {
			cancel(jobs[i])
		}
	}
	for i, j := range jobs {
		if detached[i] {
			err := error(ErrCanceled)
			if p := j.Parent(); p != nil && p.IsSignaled() {
				err = p.Error() // the hardware finished it after all, or said how it ended
			}
			s.jobDone(j, err)
		}
		s.cfg.Ops.FreeJob(j)
	}
}
