package sched

import (
	"fmt"
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
	// it (Stop). It reports what happened. Unlike the kernel, the TDR does not call
	// it for a head job whose hardware fence has signalled but which is not freed
	// yet (the free work is paused or behind): it restarts the timer instead. The
	// kernel hands such a job to timedout_job, and drivers check the hardware fence
	// themselves; the model makes that check for them.
	TimedOutJob func(j *Job) Status
	// FreeJob releases the job after its finished fence signalled. When it returns,
	// the scheduler drops the job's dependencies, as drm_sched_job_cleanup() does.
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
	// may run, counted from when it reached the hardware or the job ahead of it
	// finished, whichever is later (see the package doc for how the kernel's one
	// timer differs). Zero disables the timer (MAX_SCHEDULE_TIMEOUT); Fault still works.
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
// queued job, no pending dependency, that are not stopped; tdrAt is never later
// than the deadline of the job at the head of pending (the TDR worker may wake
// early and sleep again, never late). An entity on the run queue has run work
// queued or running, or waits for credits or for WQueueStart, which queue it.
type Scheduler struct {
	cfg     Config
	checker *lockdep.Checker

	score    atomic.Int64  // load-balancing score: entities on the rq plus jobs not completed (see Score)
	credits  atomic.Int64  // credits charged (kept outside mu: completions run in fence callbacks)
	closed   atomic.Bool   // Close was called: Push refuses
	paused   atomic.Bool   // pause_submit: work items do nothing
	work     atomic.Uint32 // queued work items (workRun, workFree) and workIdle
	lastDone atomic.Int64  // clock reading of the last completion: the next job's GPU time starts no earlier
	avgJobNs atomic.Int64  // EWMA of job GPU time, for the fair policy
	rqGen    atomic.Uint64 // bumped under mu by every change of rq but the run worker's pop (see runWork)

	mu         sync.Mutex
	rq         *runQueue
	pending    jobRing
	freeGuilty bool
	tdrOff     bool   // not re-armed (device gone) or stopped, until the next begin or Start
	tdrArms    uint64 // times a begin or Start armed the timer: a DeviceGone answer leaves an arming made meanwhile
	fault      bool   // Fault: fire the TDR now
	tdrAt      int64  // the deadline the TDR worker sleeps until; never when it has none

	workMu  sync.Mutex // held while a work item runs; wqueue stop waits on it
	freeBuf []*Job     // the free work's batch, reused (submit worker only)
	wake    chan struct{}
	tdrK    chan struct{}
	stop    chan struct{}
	g       errgroup.Group
}

// The submit worker's work items, in Scheduler.work: a set bit is a queued item,
// as WORK_STRUCT_PENDING is for a work_struct, so that queueing an item already
// queued is one atomic load. workIdle says the worker found nothing to do and
// sleeps on wake: whoever queues an item then clears it and wakes the worker.
const (
	workRun uint32 = 1 << iota
	workFree
	workIdle
)

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
		tdrAt:   never,
		wake:    make(chan struct{}, 1),
		tdrK:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	s.lastDone.Store(longAgo)
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

// Score returns the load-balancing score, the figure drm_sched_pick_best
// compares: the entities on the scheduler's run queue (from an entity's first
// push there until it is killed or moves to another scheduler; an idle entity
// still counts, as it stays on rq->entities) plus the jobs pushed and not yet
// completed. Models drm_gpu_scheduler's score.
func (s *Scheduler) Score() int64 { return s.score.Load() }

// IsStopped reports whether submission is paused (Stop or WQueueStop). Models
// drm_sched_wqueue_ready's counterpart, pause_submit.
func (s *Scheduler) IsStopped() bool { return s.paused.Load() }

// Pending returns the jobs on the hardware, oldest first. Models pending_list.
func (s *Scheduler) Pending() []*Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending.jobs()
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

// queueWork queues the work items in bits. Models queue_work() on the submit
// workqueue: an item already queued is not queued twice, and the worker wakes only
// if it was idle, so that the common case (the worker is busy and will look again)
// costs one atomic load.
func (s *Scheduler) queueWork(bits uint32) {
	for {
		old := s.work.Load()
		if old&bits == bits && old&workIdle == 0 {
			return
		}
		if s.work.CompareAndSwap(old, (old|bits)&^workIdle) {
			if old&workIdle != 0 {
				kick(s.wake) // only the goroutine that cleared workIdle sends
			}
			return
		}
	}
}

// submitWorker runs the queued work items until Close: the free-job item first,
// then the run-job item, which the free-job item always queues (credits may have
// come back), as drm_sched_free_job_work() queues the run work. One goroutine for
// both keeps them in order, as the kernel's ordered submit workqueue does.
func (s *Scheduler) submitWorker() error {
	for {
		w := s.work.Swap(0)
		if w == 0 {
			// Nothing queued: go idle, unless an item came in meanwhile.
			if s.work.CompareAndSwap(0, workIdle) {
				select {
				case <-s.wake:
				case <-s.stop:
					return nil
				}
			}
			continue
		}
		s.workMu.Lock()
		// Queueing work while paused is a no-op in the kernel, and WQueueStart
		// queues both items again: an item taken while paused is dropped.
		if !s.paused.Load() {
			if w&workFree != 0 {
				s.freeWork()
			}
			s.runWork() // queued, or queued by the free work
		}
		s.workMu.Unlock()
	}
}

// WQueueStop pauses submission and waits for a running work item to finish.
// Models drm_sched_wqueue_stop().
func (s *Scheduler) WQueueStop() {
	s.paused.Store(true)
	s.workMu.Lock() // cancel_work_sync: wait out the item in flight
	s.workMu.Unlock()
}

// WQueueStart resumes submission and queues both work items. Models
// drm_sched_wqueue_start().
func (s *Scheduler) WQueueStart() {
	s.paused.Store(false)
	s.queueWork(workRun | workFree)
}

// runWork is drm_sched_run_job_work: while an entity is ready and its head job
// fits in the free credits, pop it and hand it to the hardware.
//
// The kernel selects the entity under the run queue's lock for every job. Here
// the pop, which holds that lock to update the run queue, also reads the next
// pick, and the next round takes it without locking again if nothing else changed
// the run queue since (rqGen): the same entity the kernel would select, picked a
// little earlier, as if the selection had run right after the pop. Each run of the
// work starts with a fresh pick, so a change made before queueing the work is
// always seen.
func (s *Scheduler) runWork() {
	var next pick
	for !s.paused.Load() {
		e := next.e
		if !next.ok || s.rqGen.Load() != next.gen {
			s.mu.Lock()
			e = s.rq.peek()
			s.mu.Unlock()
		}
		if e == nil {
			return
		}
		var more bool
		if more, next = s.runOne(e); !more {
			return
		}
	}
}

// A pick is the run queue's choice of the next entity (nil: none ready), read
// under mu when rqGen was gen; ok says it was made at all.
type pick struct {
	e   *Entity
	gen uint64
	ok  bool
}

// rqChanged records a change of the run queue that the run worker's next pick
// must see. Called with mu held after every change but the pop's own.
func (s *Scheduler) rqChanged() { s.rqGen.Add(1) }

// runOne tries the selected entity. It returns false when the worker should stop
// (not enough credits: wait for a completion, which queues the work again), and
// the next pick if the pop made one.
func (s *Scheduler) runOne(e *Entity) (bool, pick) {
	e.popMu.Lock()        // entity_idle: Kill waits for this
	head := e.head.Load() // only this worker and Kill, both under popMu, take it off
	if head == nil {
		e.popMu.Unlock()
		s.mu.Lock()
		if e.queued.Load() == 0 {
			s.rq.remove(e)
			s.rqChanged()
		}
		s.mu.Unlock()
		return true, pick{}
	}
	if int64(head.credits) > int64(s.cfg.CreditLimit)-s.credits.Load() {
		e.popMu.Unlock()
		return false, pick{} // -ENOSPC: wait, do not skip to a smaller job (fairness)
	}
	job, next := s.popJob(e, head)
	if job == nil {
		e.popMu.Unlock()
		return true, pick{} // waiting on a dependency; the entity left the run queue
	}
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventRun, Entity: e.id, FenceContext: e.schedCtx.ID(), Job: job.Seqno(), Credits: job.credits, Time: at(now())})
	}
	cookie := s.checker.BeginSignalling()
	hw, err := job.run(s.cfg.Ops.RunJob)
	s.checker.EndSignalling(cookie)
	e.popMu.Unlock()
	// The job's one clock reading on the run worker, after RunJob returned, as
	// drm_sched_fence_scheduled() stamps the scheduled fence after run_job: the
	// scheduled time, the start of its GPU time and, if the hardware was already
	// done, its completion time too (see attachHW).
	t := now()
	job.startTS = t
	if err == nil && hw != nil && !hw.IsLongRunning() {
		// drm_sched_fence_scheduled() stores the parent before it signals: whoever
		// waited for the scheduled fence may read Parent.
		job.parent.Store(hw)
	}
	_ = job.scheduled.SignalTimestamp(at(t))
	s.attachHW(job, hw, err, t)
	return true, next
}

// attachHW makes the job's completion follow its hardware fence; t is when RunJob
// returned. A job that RunJob already finished (an error, no hardware fence, or
// one that signalled already) completes at t, or at its hardware fence's
// timestamp if it has a later one: its GPU time is then about zero, as the
// kernel's finished-minus-scheduled is for hardware that was done before
// drm_sched_fence_scheduled() ran, and its finished fence is never dated before
// its scheduled fence. Models the tail of drm_sched_run_job_work.
func (s *Scheduler) attachHW(job *Job, hw *fence.Fence, err error, t int64) {
	switch {
	case err != nil:
		s.jobDoneAt(job, err, t)
	case hw == nil:
		s.jobDoneAt(job, nil, t)
	case hw.IsLongRunning():
		// The finished fence is a dma fence: following a long-running fence would
		// export unbounded work as one. LR drivers return nil (see package lr).
		s.jobDoneAt(job, errLongRunningHW, t)
	default: // job.parent is hw already (runOne)
		if hw.AddCallbackUnbounded(&job.hwCb, hwDone) != nil { // signalled already
			if ts, ok := hw.Timestamp(); ok {
				t = max(t, reading(ts))
			}
			s.jobDoneAt(job, hw.Error(), t)
		}
	}
}

// beginLocked puts job on the pending list and reports whether the TDR worker
// must be woken to time it. Called with mu held, before RunJob. Models
// drm_sched_job_begin(), which starts the timer there.
//
// Only the head's tdrStart is ever read (tdrDeadline), and whoever makes a job
// the head sets it: here, when the list was empty; freeWork, when the job ahead
// is freed; timedOut and Start, when they re-arm the timer. So the clock is read
// here only when job becomes the head or the timer was off: once per burst of
// work, not once per job. (The kernel counts in jiffies, where a reading is free.)
func (s *Scheduler) beginLocked(job *Job) bool {
	if s.pending.len() == 0 || s.tdrOff {
		t := now()
		job.tdrStart = t
		if s.pending.len() > 0 {
			// The timer was off (device gone): starting it again gives the head a
			// full timeout from now, as drm_sched_start_timeout() does.
			s.pending.front().tdrStart = t
		}
	}
	s.pending.pushBack(job)
	s.tdrOff = false
	s.tdrArms++
	return s.tdrEarlierLocked()
}

// hwDone is the hardware fence's callback: it runs in the goroutine that signalled
// the hardware fence, with that fence's lock held. A plain function that finds the
// job from its Callback, as container_of does, so that queueing it allocates no
// closure. The job completes at the hardware fence's timestamp, if it has one.
// Models drm_sched_job_done_cb().
func hwDone(f *fence.Fence, cb *fence.Callback) {
	j := (*Job)(unsafe.Add(unsafe.Pointer(cb), -int(unsafe.Offsetof(Job{}.hwCb))))
	j.sched.jobDoneAt(j, f.Error(), doneTime(f))
}

// doneTime is when the job of hardware fence f completed: f's timestamp if it has
// one, else now.
func doneTime(f *fence.Fence) int64 {
	if t, ok := f.Timestamp(); ok {
		return reading(t)
	}
	return now()
}

// jobDone returns the job's credits and signals its finished fence with result.
// It runs at most once per job. Models drm_sched_job_done().
func (s *Scheduler) jobDone(j *Job, result error) { s.jobDoneAt(j, result, now()) }

// jobDoneAt is jobDone for a completion at clock reading t.
//
// The job's final error is result, else an error set on the finished fence
// before: by the scheduler (ErrCanceled for a guilty entity's job, ResubmitJobs),
// which says so in j.errSet, or by the driver (as amdgpu's run_job cancels a job
// on its finished fence). Reading a pending fence's error takes its lock, so it is
// read before signalling only when the scheduler set one or a tracer needs it for
// the done event; otherwise it is read after signalling, where the read is one
// load, and an error found there is counted in Stats then, just after the fence
// signalled rather than just before.
func (s *Scheduler) jobDoneAt(j *Job, result error, t int64) {
	if !j.done.CompareAndSwap(false, true) {
		return
	}
	cookie := s.checker.BeginSignalling()
	// GPU time: from when the job reached the ring, or when the job ahead of it
	// finished if that was later (the ring runs in order), to t. The kernel
	// accounts it in the free worker; doing it here makes Stats current as soon as
	// the finished fence has signalled.
	last := s.lastDone.Load()
	for last < t && !s.lastDone.CompareAndSwap(last, t) {
		last = s.lastDone.Load()
	}
	gpu := time.Duration(max(t-max(j.startTS, last), 0))
	ewmaAdd(&s.avgJobNs, gpu.Nanoseconds())
	final := result
	if result != nil {
		_ = j.finished.SetError(result)
	} else if j.errSet || s.cfg.Tracer != nil {
		final = j.finished.Error() // what was set before (ErrCanceled), under the fence lock
	}
	j.entity.account(gpu, final)
	s.credits.Add(-int64(j.credits))
	s.score.Add(-1)
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventDone, Entity: j.entity.id, FenceContext: j.entity.schedCtx.ID(), Job: j.Seqno(), Credits: j.credits, Err: final, Time: at(t)})
	}
	_ = j.finished.SignalTimestamp(at(t))
	s.checker.EndSignalling(cookie)
	if final == nil {
		// Signalled: reading the error is lock-free now. One the driver set on the
		// finished fence itself counts from here.
		if final = j.finished.Error(); final != nil {
			j.entity.stats.errors.Add(1)
		}
	}
	j.traceEnd(final)
	s.queueWork(workFree)
}

// freeWork retires finished jobs from the head of the pending list and frees them.
// Models drm_sched_free_job_work() with drm_sched_get_finished_job(); the submit
// worker runs the run work after it, for the credits the jobs returned.
func (s *Scheduler) freeWork() {
	done := s.freeBuf[:0]
	s.mu.Lock()
	for s.pending.len() > 0 && s.pending.front().finished.IsSignaled() {
		done = append(done, s.pending.popFront())
	}
	if len(done) > 0 && s.pending.len() > 0 {
		// The new head's timeout starts now: a later deadline, which the TDR
		// worker finds when it wakes for the old one.
		s.pending.front().tdrStart = now()
	}
	s.mu.Unlock()
	for i, j := range done {
		s.free(j)
		done[i] = nil
	}
	s.freeBuf = done[:0]
}

// free hands j to the driver's FreeJob and then drops its dependencies, as the
// drm_sched_job_cleanup() a kernel driver calls from free_job drops its references:
// a job's finished fence may be kept long after (in reservation objects, in the
// next job's dependencies), and through the dependencies it would keep every job
// before it alive.
func (s *Scheduler) free(j *Job) {
	s.cfg.Ops.FreeJob(j)
	j.deps = nil
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
// Entities should be destroyed by their owners first; a job pushed later is
// refused, and an entity destroyed later does not wait (its flush returns at once,
// as drm_sched_fini stops every entity of its run queue): its queued jobs are
// killed. Models drm_sched_fini(), which warns and leaks where this completes and
// frees.
func (s *Scheduler) Close() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	s.WQueueStop()
	close(s.stop)
	_ = s.g.Wait()
	s.mu.Lock()
	jobs := s.pending.jobs()
	s.pending.set(nil)
	s.mu.Unlock()
	// Detach the jobs from their hardware fences first, so that the driver's
	// cancellations (newest first, as drm_sched_fini calls cancel_job) cannot
	// complete one entity's jobs out of seqno order; then complete them oldest first.
	// RemoveCallback is called even for a job already marked done: a completion
	// still running in the hardware fence's callback has marked the job done but
	// may not have signalled its finished fence yet, and RemoveCallback returns
	// only once that callback has finished, so no job is freed before its
	// finished fence signalled (drm_sched_stop waits on the finished fence for
	// the same reason).
	detached := make([]bool, len(jobs))
	for i, j := range jobs {
		// Taken off its hardware fence, or never put on one (RunJob not called,
		// Stop detached it, or ResubmitJobs gave it a new fence that only Start
		// would follow): either way it still needs completing. RemoveCallback
		// comes first because it waits out a completion running now, which has
		// marked the job done by the time it returns.
		p := j.Parent()
		removed := p != nil && p.RemoveCallback(&j.hwCb)
		detached[i] = removed || !j.done.Load()
	}
	if cancel := s.cfg.Ops.CancelJob; cancel != nil {
		for i := len(jobs) - 1; i >= 0; i-- {
			cancel(jobs[i])
		}
	}
	for i, j := range jobs {
		if detached[i] {
			s.recharge(j) // completing takes the credits off again
			err := error(ErrCanceled)
			if p := j.Parent(); p != nil && p.IsSignaled() {
				err = p.Error() // the hardware finished it after all, or said how it ended
			}
			s.jobDone(j, err)
		}
		s.free(j)
	}
}
