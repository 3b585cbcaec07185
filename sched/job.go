package sched

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/resv"
)

// A Job is one submission: work for the hardware, with the fences it waits for
// and the two fences it publishes. Models struct drm_sched_job with its
// drm_sched_fence.
//
// Lifecycle: NewJob (fallible: validate, take dependencies), Arm (the point of no
// return: the fences exist from here and may be published), Push (queued on the
// entity), then the scheduler runs it once its dependencies signalled and credits
// allow, its finished fence follows the hardware fence, and FreeJob releases it.
// A job dropped before Arm must be released with Cleanup.
//
// The job is one allocation, fences included: fields are ordered so that it fits
// the 320-byte size class.
type Job struct {
	// Payload is the driver's data, for its hooks.
	Payload any

	entity *Entity
	sched  *Scheduler // set at Arm
	deps   []*fence.Fence
	next   *Job // the next job in the entity's queue; guarded by entity.mu

	// The job's two fences, made by Arm, live in the job as the kernel's live in
	// one struct drm_sched_fence. The seqno of both is the job's.
	scheduled fence.Fence                 // signalled when the job is handed to RunJob
	finished  fence.Fence                 // signalled when the job is done; carries its error
	parent    atomic.Pointer[fence.Fence] // the hardware fence
	hwCb      fence.Callback

	// Clock readings (see now).
	nextSubmit int64 // Push time of the next job in the entity's queue, the FIFO key once this one is popped; guarded by entity.mu
	startTS    int64 // RunJob returned: the scheduled fence's time, the start of its GPU time (run worker)
	tdrStart   int64 // the timeout counts from here, once the job heads the pending list; guarded by sched.mu

	rt *jobTrace // runtime/trace task, when tracing was on at Push

	credits  uint32
	state    atomic.Uint32
	depIdx   int32 // next dependency to look at (run worker only)
	karma    atomic.Int32
	done     atomic.Bool
	priority Priority
	detached bool // Stop took the hardware callback off and returned the credits
	errSet   bool // the scheduler set an error on the finished fence before completing it (see jobDoneAt)

	// DontPipeline stops a job on the same scheduler that depends on this one from
	// waiting only for it to be scheduled (DRM_SCHED_FENCE_DONT_PIPELINE).
	DontPipeline bool
}

const (
	jobInit uint32 = iota
	jobArmed
	jobPushed
	jobCleaned
)

// NewJob makes a job of the given credits for entity e. Zero credits, or more than
// the limit of a scheduler the entity may run on, is an error wrapping ErrInvalid
// (the kernel clamps an oversized job when it is picked; refusing it here names the
// bug where it is made). On a killed entity it returns ErrKilled, and when every
// scheduler the entity may run on is closed, ErrNoRunQueue (the kernel's
// drm_sched_job_init has neither check: it fails with -ENOENT only once
// drm_sched_entity_select_rq found no ready scheduler, and a push to a stopped
// entity is refused later). Models drm_sched_job_init().
func (e *Entity) NewJob(credits uint32, payload any) (*Job, error) {
	switch limit := e.creditLimit; {
	case e.stopped.Load(): // before the schedulers: the entity's own state is the clearer answer
		return nil, ErrKilled
	case e.noReadyScheduler():
		return nil, ErrNoRunQueue
	case credits == 0:
		return nil, errCreditsZero
	case credits > limit:
		return nil, fmt.Errorf("%w: %d credits above the limit of %d", ErrInvalid, credits, limit)
	}
	return &Job{Payload: payload, entity: e, credits: credits}, nil
}

// Entity returns the job's entity. It stays valid for the job's whole life here;
// the kernel's drm_sched_entity_pop_job clears sched_job->entity when the job
// leaves the entity's queue ("jobs and entities might have different
// lifecycles"), so a driver's run_job, timedout_job and free_job must not use it:
// code meant for the kernel should not call this from RunJob, TimedOutJob or
// FreeJob.
func (j *Job) Entity() *Entity { return j.entity }

// Scheduler returns the scheduler the job was armed on, or nil before Arm.
func (j *Job) Scheduler() *Scheduler { return j.sched }

// Credits returns the credits the job takes on the ring.
func (j *Job) Credits() uint32 { return j.credits }

// Seqno returns the job's seqno on its entity's timeline (0 before Arm).
func (j *Job) Seqno() uint64 { return j.finished.Seqno() }

// Scheduled returns the fence that signals when the job reaches the hardware (nil
// before Arm).
func (j *Job) Scheduled() *fence.Fence {
	if j.sched == nil {
		return nil
	}
	return &j.scheduled
}

// Finished returns the fence that signals when the job is done, with its error: the
// fence drivers publish (nil before Arm).
func (j *Job) Finished() *fence.Fence {
	if j.sched == nil {
		return nil
	}
	return &j.finished
}

// Parent returns the hardware fence RunJob returned, or nil (before RunJob, or
// after Stop dropped it).
func (j *Job) Parent() *fence.Fence { return j.parent.Load() }

// Karma returns how often the job was blamed for a hang.
func (j *Job) Karma() int { return int(j.karma.Load()) }

// JobOf returns the job whose scheduled or finished fence f is, or nil. Models
// to_drm_sched_fence(), which recognises a scheduler fence by its ops and finds
// the drm_sched_fence around it with container_of: here the fence's context says
// whether it is an entity's (see entityContexts), and the job is found from the
// fence's place in it. f must not be a fence made with New or Next on the context
// of a job's fence: that is a job's fence only by its context, as a fence with
// the scheduler's ops would be in the kernel.
func JobOf(f *fence.Fence) *Job {
	if f == nil {
		return nil
	}
	c := f.Context()
	v, ok := entityContexts.Load(c.ID())
	if !ok {
		return nil
	}
	switch e := v.(weak.Pointer[Entity]).Value(); {
	case e == nil: // cannot be: a job's fence keeps its job, which keeps its entity
		return nil
	case c == e.schedCtx:
		return (*Job)(unsafe.Add(unsafe.Pointer(f), -int(unsafe.Offsetof(Job{}.scheduled))))
	case c == e.finCtx:
		return (*Job)(unsafe.Add(unsafe.Pointer(f), -int(unsafe.Offsetof(Job{}.finished))))
	}
	return nil // a context made with fence.WithID(an entity's context id)
}

// entityContexts maps the id of each entity's two fence contexts to the entity,
// weakly, so that an entity is garbage collected as before and its entries go with
// it (registerContexts).
var entityContexts sync.Map // uint64 -> weak.Pointer[Entity]

// registerContexts makes e's fence contexts known to JobOf until e is collected.
func registerContexts(e *Entity) {
	w := weak.Make(e)
	ids := [2]uint64{e.schedCtx.ID(), e.finCtx.ID()}
	for _, id := range ids {
		entityContexts.Store(id, w)
	}
	runtime.AddCleanup(e, func(ids [2]uint64) {
		for _, id := range ids {
			entityContexts.Delete(id)
		}
	}, ids)
}

// AddDependency makes the job wait for f. Of several fences of one context only the
// later is kept, so the list grows with the number of timelines, not of buffers. A
// nil f is ignored. Only before Arm. Models drm_sched_job_add_dependency().
func (j *Job) AddDependency(f *fence.Fence) error {
	if j.state.Load() != jobInit {
		return ErrState
	}
	if f == nil {
		return nil
	}
	if f.IsLongRunning() {
		return fmt.Errorf("%w: a job cannot depend on a long-running fence", ErrInvalid)
	}
	for i, d := range j.deps {
		if d.Context().ID() != f.Context().ID() {
			continue
		}
		if fence.IsLater(f, d) {
			j.deps[i] = f
		}
		return nil
	}
	j.deps = append(j.deps, f)
	return nil
}

// AddResvDependencies makes the job wait for every fence of o with usage u or
// stronger. o must be locked. Models drm_sched_job_add_resv_dependencies().
func (j *Job) AddResvDependencies(o *resv.Object, u resv.Usage) error {
	if !o.IsLocked() {
		return resv.ErrNotLocked
	}
	for f := range o.Fences(u) {
		if err := j.AddDependency(f); err != nil {
			return err
		}
	}
	return nil
}

// AddImplicitDependencies adds what implicit synchronisation requires for a job
// that reads (write false) or writes o: a reader waits for writers, a writer for
// readers and writers. Call it after locking, before adding the job's own fence.
// Models drm_sched_job_add_implicit_dependencies().
func (j *Job) AddImplicitDependencies(o *resv.Object, write bool) error {
	return j.AddResvDependencies(o, resv.UsageRW(write))
}

// Dependencies returns the fences the job waits for, until FreeJob returns: then
// the scheduler drops them (see Ops.FreeJob).
func (j *Job) Dependencies() []*fence.Fence { return j.deps }

// Cleanup releases a job that will not be armed. After Arm it is an error
// (ErrState): an armed job must be pushed. Models drm_sched_job_cleanup() on the
// abort path.
func (j *Job) Cleanup() error {
	if !j.state.CompareAndSwap(jobInit, jobCleaned) {
		return ErrState
	}
	j.deps = nil
	return nil
}

// Arm is the point of no return: it picks the scheduler (load balancing an idle
// entity), gives the job the next seqno on its entity's timeline and creates its
// scheduled and finished fences, which may be published from here on. The job must
// then be pushed. Hold one lock across Arm and Push so that seqno order is queue
// order. Models drm_sched_job_arm().
func (j *Job) Arm() error {
	if !j.state.CompareAndSwap(jobInit, jobArmed) {
		return ErrState
	}
	e := j.entity
	e.selectScheduler()
	// As drm_sched_job_arm(), without the entity lock: the caller serialises Arm
	// and Push on the entity.
	j.sched = e.sched.Load()
	j.priority = Priority(e.priority.Load())
	seqno := e.seq.Add(1)
	_ = e.schedCtx.Init(&j.scheduled, seqno) // a job is armed once: cannot fail
	_ = e.finCtx.Init(&j.finished, seqno)
	return nil
}

// Push queues the armed job on its entity. If the entity was killed, or its
// scheduler closed, the job is not run: its fences signal with ErrSearch after the
// entity's earlier jobs, FreeJob releases it, and Push returns ErrKilled (or
// ErrClosed). Models drm_sched_entity_push_job(), which has no error path and
// leaves such a job for drm_sched_entity_fini to kill.
func (j *Job) Push() error {
	if !j.state.CompareAndSwap(jobArmed, jobPushed) {
		return ErrState
	}
	e, s := j.entity, j.sched
	var submitTS int64
	if s.cfg.Policy == PolicyFIFO || s.cfg.Tracer != nil {
		submitTS = now() // the FIFO key and the queued event's time; skipped otherwise
	}
	j.traceStart()
	// Traced before the job is visible, as drm_sched_entity_push_job traces
	// drm_sched_job_queue first: once queued, the run worker may pick it at once.
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventQueued, Entity: e.id, FenceContext: e.schedCtx.ID(), Job: j.Seqno(), Credits: j.credits, Time: at(submitTS)})
	}
	e.mu.Lock()
	// A job killed here follows the job pushed before it, whatever became of
	// that one: still queued (a Kill in progress kills it), killed, or running.
	prev := e.lastPushed
	e.lastPushed = &j.finished
	if stopped, closed := e.stopped.Load(), s.closed.Load(); stopped || closed {
		e.mu.Unlock()
		j.kill(prev)
		if !stopped {
			return ErrClosed
		}
		return ErrKilled
	}
	// Only the first job wakes the scheduler, as in the kernel: with jobs queued
	// before it, the entity is on the run queue (or waits for a dependency, whose
	// callback puts it back), and the run work goes on until the queue is empty.
	first := e.push(j, submitTS)
	if first {
		e.scoreLocked(s)
		s.mu.Lock()
		if !e.waiting {
			s.rq.add(e, submitTS, e.avgNs(), s.avgJobNs.Load())
			s.rqChanged()
		}
		s.mu.Unlock()
	}
	e.mu.Unlock()
	s.score.Add(1)
	if first {
		s.queueWork(workRun)
	}
	return nil
}

func (e *Entity) avgNs() int64 { return e.stats.avgNs.Load() }

// nextDependency returns the next fence the job waits for: its own dependencies in
// order, then whatever PrepareJob hands back. Run worker only.
func (j *Job) nextDependency(s *Scheduler) *fence.Fence {
	if int(j.depIdx) < len(j.deps) {
		f := j.deps[j.depIdx]
		j.depIdx++
		return f
	}
	if s.cfg.Ops.PrepareJob != nil {
		return s.cfg.Ops.PrepareJob(j, j.entity)
	}
	return nil
}

// popJob resolves the head job's dependencies, pops it, charges its credits and
// puts it on the pending list, or returns nil if it must wait for a dependency
// (the entity then leaves the run queue until that fence signals). With the job it
// returns the run queue's next pick, made in the same critical section (see
// runWork). Run worker only, with e.popMu held. Models drm_sched_entity_pop_job(),
// drm_sched_entity_add_dependency_cb() and the start of drm_sched_run_job_work().
func (s *Scheduler) popJob(e *Entity, j *Job) (*Job, pick) {
	for {
		dep := j.nextDependency(s)
		if dep == nil {
			break
		}
		if id := dep.Context().ID(); id == e.schedCtx.ID() || id == e.finCtx.ID() {
			continue // the entity's own timeline: in order anyway
		}
		if dep.IsSignaled() {
			continue
		}
		if dj := JobOf(dep); dj != nil && dep == &dj.finished && dj.sched == s &&
			dep.Error() == nil && !dj.DontPipeline {
			// Same ring, executed in order: being submitted first is enough.
			dep = &dj.scheduled
			if dep.IsSignaled() {
				continue
			}
		}
		if s.cfg.Tracer != nil {
			s.trace(Event{Kind: EventDependency, Entity: e.id, FenceContext: e.schedCtx.ID(), Job: j.Seqno(),
				DepContext: dep.Context().ID(), DepSeqno: dep.Seqno()})
		}
		s.mu.Lock()
		e.waiting = true
		s.rq.remove(e)
		s.rqChanged()
		s.mu.Unlock()
		e.depFence = dep
		if dep.AddCallbackUnbounded(&e.depCb, dependencySignalled) == nil {
			return nil, pick{}
		}
		e.depFence = nil
		s.mu.Lock()
		e.waiting = false
		s.requeue(e)
		s.mu.Unlock()
	}
	if e.IsGuilty() { // drm_sched_entity_pop_job: skip jobs of a guilty entity
		_ = j.finished.SetError(ErrCanceled)
		j.errSet = true
	}
	var runtime int64
	if s.cfg.Policy == PolicyFair {
		runtime = e.stats.runtime.Load()
	}
	s.credits.Add(int64(j.credits))
	e.mu.Lock()
	e.lastScheduled = &j.finished
	next := e.pop()
	e.notifyLocked()
	s.mu.Lock()
	if next == nil {
		s.rq.remove(e)
	} else {
		s.rq.popped(e, runtime, j.nextSubmit)
	}
	wakeTDR := s.beginLocked(j)
	p := pick{e: s.rq.peek(), gen: s.rqGen.Load(), ok: true}
	s.mu.Unlock()
	e.mu.Unlock()
	if wakeTDR {
		kick(s.tdrK)
	}
	return j, p
}

// requeue puts e back on the run queue if it has work and may run. Called with
// s.mu held.
func (s *Scheduler) requeue(e *Entity) {
	if e.queued.Load() > 0 && !e.waiting && !s.rq.has(e) {
		s.rq.add(e, now(), 0, s.avgJobNs.Load())
		s.rqChanged()
	}
}

// dependencySignalled is the entity's dependency callback: it runs in the
// signalling goroutine and puts the entity back on its run queue. A plain function
// that finds the entity from its Callback, as container_of does, so that queueing
// it allocates no closure. Models drm_sched_entity_wakeup().
func dependencySignalled(_ *fence.Fence, cb *fence.Callback) {
	e := (*Entity)(unsafe.Add(unsafe.Pointer(cb), -int(unsafe.Offsetof(Entity{}.depCb))))
	s := e.sched.Load() // an entity with queued jobs does not move
	s.mu.Lock()
	e.waiting = false
	if !e.stopped.Load() {
		s.requeue(e)
	}
	s.mu.Unlock()
	s.queueWork(workRun)
}

// kill completes a job that will never run: after prev (the job before it) and
// each of its own dependencies, its fences signal with ErrSearch and FreeJob
// releases it. It returns the job's finished fence, for the next job to follow.
// Everything happens in fence callbacks, so no goroutine is left waiting. Models
// drm_sched_entity_kill_jobs_cb().
func (j *Job) kill(prev *fence.Fence) *fence.Fence {
	k := &jobKill{j: j}
	if prev != nil {
		k.deps = append(k.deps, prev)
	}
	for _, d := range j.deps {
		if dj := JobOf(d); dj != nil && d == &dj.scheduled {
			d = &dj.finished // wait for the work, not just its submission
		}
		k.deps = append(k.deps, d)
	}
	k.step() // k lives on in the callback it queues
	return &j.finished
}

// jobKill is a killed job's walk over the fences it must follow. Made only on
// the kill path, so that a job does not carry it.
type jobKill struct {
	j    *Job
	deps []*fence.Fence
	idx  int
	cb   fence.Callback
}

// killStepCB is step as a fence callback, finding the walk from its Callback.
func killStepCB(_ *fence.Fence, cb *fence.Callback) {
	(*jobKill)(unsafe.Add(unsafe.Pointer(cb), -int(unsafe.Offsetof(jobKill{}.cb)))).step()
}

func (k *jobKill) step() {
	for k.idx < len(k.deps) {
		d := k.deps[k.idx]
		k.idx++
		if d.AddCallbackUnbounded(&k.cb, killStepCB) == nil {
			return
		}
	}
	j := k.j
	if !j.done.CompareAndSwap(false, true) {
		return
	}
	s := j.sched
	_ = j.scheduled.Signal()
	_ = j.finished.SetError(ErrSearch)
	_ = j.finished.Signal()
	if s.cfg.Tracer != nil {
		s.trace(Event{Kind: EventDone, Entity: j.entity.id, FenceContext: j.entity.schedCtx.ID(), Job: j.Seqno(), Credits: j.credits, Err: ErrSearch})
	}
	j.entity.account(0, ErrSearch)
	j.traceEnd(ErrSearch)
	s.free(j)
}
