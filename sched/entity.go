package sched

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/fence"
)

var entityIDs atomic.Uint64

// An Entity is a queue of jobs from one client context for one kind of engine: its
// jobs run in the order they were pushed, on one of its schedulers, and its fences
// form one timeline. Models struct drm_sched_entity.
//
// Invariants: the queue (head, tail, linked through Job.next) holds the pushed jobs
// not yet popped, in push order; it changes under mu, with queued its length, and
// only the run worker (holding popMu) and Kill (holding popMu too) take jobs off
// it, so that the run worker may read head without mu, as the kernel's
// spsc_queue lets it peek. Once stopped (killed) the entity never runs a job again.
// sched, stopped and priority change under mu and are read without it where the
// kernel reads them without entity->lock (job init and arm).
// Lock order: Entity.mu, then Scheduler.mu; no fence method is called with either
// held.
type Entity struct {
	id          uint64
	schedCtx    *fence.Context              // scheduled fences (context ctx)
	finCtx      *fence.Context              // finished fences (context ctx+1)
	schedList   []*Scheduler                // nil if pinned; immutable
	creditLimit uint32                      // the smallest credit limit of the entity's schedulers
	guilty      atomic.Pointer[atomic.Bool] // the driver's guilty flag, nil for none (see ShareGuilty)
	queued      atomic.Int64
	seq         atomic.Uint64 // last seqno handed out by Arm: fence_seq
	sched       atomic.Pointer[Scheduler]
	stopped     atomic.Bool
	priority    atomic.Uint32 // a Priority

	popMu sync.Mutex // held by the run worker while it pops and runs a job of this entity

	mu            sync.Mutex
	head          atomic.Pointer[Job] // the oldest queued job; see the invariants
	tail          *Job                // the newest queued job
	lastScheduled *fence.Fence        // finished fence of the last popped job
	lastPushed    *fence.Fence        // finished fence of the last job pushed: a job killed at Push follows it
	changed       chan struct{}       // made by a waiting Flush; closed and cleared when the queue shrinks or the entity stops
	waiting       bool                // guarded by sched.mu: a dependency callback is pending
	depFence      *fence.Fence        // the pending dependency (run worker and its callback)
	depCb         fence.Callback      // one pending dependency at a time
	rq            rqState             // guarded by sched.mu
	scored        bool                // counted in sched's score as an entity of its run queue; guarded by mu
	stats         entityStats
}

// NewEntity returns an entity at priority p that runs its jobs on one of scheds,
// chosen by load when the entity is idle (one scheduler: pinned, the 1:1 mode of
// firmware-scheduled drivers). Models drm_sched_entity_init().
func NewEntity(p Priority, scheds ...*Scheduler) (*Entity, error) {
	if len(scheds) == 0 || scheds[0] == nil || p >= numPriorities {
		return nil, fmt.Errorf("%w: an entity needs a scheduler and a valid priority", ErrInvalid)
	}
	ctx := fence.AllocContexts(2)
	name := scheds[0].cfg.Name
	chk := fence.WithChecker(scheds[0].checker)
	e := &Entity{
		id:          entityIDs.Add(1),
		schedCtx:    fence.NewContext("drm_sched", name, fence.WithID(ctx), chk),
		finCtx:      fence.NewContext("drm_sched", name, fence.WithID(ctx+1), chk),
		creditLimit: scheds[0].cfg.CreditLimit,
	}
	e.sched.Store(scheds[0])
	e.priority.Store(uint32(p))
	registerContexts(e)
	e.rq.index = -1
	e.rq.prio = p
	if len(scheds) > 1 {
		e.schedList = slices.Clone(scheds)
		for _, s := range scheds {
			// Arm may move an idle entity to any scheduler of its list: a job that
			// does not fit the smallest ring would wait for credits forever there,
			// and stall every entity behind it.
			e.creditLimit = min(e.creditLimit, s.cfg.CreditLimit)
		}
	}
	return e, nil
}

// NewEntity is the 1:1 shortcut: an entity pinned to s.
func (s *Scheduler) NewEntity(p Priority) (*Entity, error) { return NewEntity(p, s) }

// ID returns the entity's id, as events name it.
func (e *Entity) ID() uint64 { return e.id }

// FenceContext returns the context of the entity's scheduled fences; finished
// fences use the next one.
func (e *Entity) FenceContext() uint64 { return e.schedCtx.ID() }

// Scheduler returns the scheduler the entity runs on now.
func (e *Entity) Scheduler() *Scheduler { return e.sched.Load() }

// Priority returns the entity's priority.
func (e *Entity) Priority() Priority { return Priority(e.priority.Load()) }

// SetPriority changes the entity's priority; queued jobs are picked by the new one.
// Models drm_sched_entity_set_priority(). Under the fair policy the kernel reads
// the new priority at the next pick, as here. Under FIFO and round robin, whose
// kernels keep one run queue per priority, the kernel only stores the value and
// moves the entity to the new priority's run queue when drm_sched_entity_select_rq
// next runs for it, which never happens for an entity with one scheduler; the
// model applies the new priority at once under every policy, which is what the
// call asks for.
func (e *Entity) SetPriority(p Priority) error {
	if p >= numPriorities {
		return fmt.Errorf("%w: priority %d", ErrInvalid, p)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.priority.Store(uint32(p))
	s := e.sched.Load()
	s.mu.Lock()
	s.rq.setPriority(e, p)
	s.rqChanged()
	s.mu.Unlock()
	return nil
}

// ShareGuilty gives the entity the driver's guilty flag: IncreaseKarma sets it
// when one of the entity's jobs is blamed for a hang, and once it is set the
// entity's later jobs get ErrCanceled on their finished fence before RunJob (which
// should then skip the hardware). Entities of one context may share a flag, as
// amdgpu's share ctx->guilty. An entity without one, as most drivers' and the
// KUnit mock's are, is never marked: IncreaseKarma only counts karma. Models the
// guilty argument of drm_sched_entity_init(); call it before the entity's first
// job, as the kernel fixes it at init.
func (e *Entity) ShareGuilty(flag *atomic.Bool) { e.guilty.Store(flag) }

// SetGuilty sets the entity's guilty flag, giving the entity a flag of its own if
// it has none, as a driver that finds a context guilty does with
// atomic_set(entity->guilty, 1).
func (e *Entity) SetGuilty() {
	if e.guilty.Load() == nil {
		e.guilty.CompareAndSwap(nil, new(atomic.Bool))
	}
	e.guilty.Load().Store(true)
}

// IsGuilty reports whether the entity's guilty flag is set (false if it has none).
func (e *Entity) IsGuilty() bool {
	g := e.guilty.Load()
	return g != nil && g.Load()
}

// Error returns the error of the entity's last scheduled job, or nil: drivers use
// it to refuse new submissions after a failed job. Racy by design. Models
// drm_sched_entity_error().
func (e *Entity) Error() error {
	e.mu.Lock()
	f := e.lastScheduled
	e.mu.Unlock()
	if f == nil {
		return nil
	}
	return f.Error()
}

// push appends j to the queue and reports whether it is the only job there. Called
// with mu held. Models spsc_queue_push().
// The job ahead of j keeps j's push time, submitTS: the run queue needs it as
// the FIFO key when that job is popped, and reading it there from j, pushed long
// before and cold with many entities, would cost a cache miss per job, where the
// job ahead is the one being popped.
func (e *Entity) push(j *Job, submitTS int64) bool {
	if e.tail == nil {
		e.head.Store(j)
	} else {
		e.tail.next = j
		e.tail.nextSubmit = submitTS
	}
	e.tail = j
	return e.queued.Add(1) == 1
}

// pop takes the head job off the queue and returns the next one, or nil. Called
// with popMu and mu held.
func (e *Entity) pop() *Job {
	j := e.head.Load()
	next := j.next
	e.head.Store(next)
	if next == nil {
		e.tail = nil
	} else {
		j.next = nil // a popped job must not keep the queue alive
	}
	e.queued.Add(-1)
	return next
}

// notifyLocked wakes Flush waiters. The channel is made only when someone waits,
// so a pop costs no allocation.
func (e *Entity) notifyLocked() {
	if e.changed != nil {
		close(e.changed)
		e.changed = nil
	}
}

// selectScheduler moves an idle entity to the least loaded of its schedulers.
// Models drm_sched_entity_select_rq(), called at arm.
func (e *Entity) selectScheduler() {
	list := e.schedList
	if list == nil {
		return // pinned
	}
	e.mu.Lock()
	last, cur := e.lastScheduled, e.sched.Load()
	busy := e.queued.Load() > 0
	e.mu.Unlock()
	if busy || (last != nil && !last.IsSignaled()) {
		return
	}
	var best *Scheduler
	for _, s := range list {
		if s.closed.Load() {
			continue // drm_sched_pick_best skips a scheduler that is not ready
		}
		if best == nil || s.score.Load() < best.score.Load() {
			best = s
		}
	}
	if best == nil || best == cur {
		return // none open: the job is refused at Push (ErrClosed), the next at NewJob
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queued.Load() > 0 || e.stopped.Load() {
		return
	}
	cur.mu.Lock()
	cur.rq.remove(e)
	cur.rqChanged()
	cur.mu.Unlock()
	e.unscoreLocked(cur)
	e.sched.Store(best)
}

// scoreLocked counts e in s's score as an entity of s's run queue, once: from its
// first push there until it moves or is killed, as drm_sched_rq_add_entity counts
// an entity it adds to rq->entities (an idle entity stays on that list).
func (e *Entity) scoreLocked(s *Scheduler) {
	if !e.scored {
		e.scored = true
		s.score.Add(1)
	}
}

// unscoreLocked takes e out of s's score, as drm_sched_rq_remove_entity does.
func (e *Entity) unscoreLocked(s *Scheduler) {
	if e.scored {
		e.scored = false
		s.score.Add(-1)
	}
}

// noReadyScheduler reports whether every scheduler e may run on is closed.
func (e *Entity) noReadyScheduler() bool {
	if e.schedList == nil {
		return e.sched.Load().closed.Load()
	}
	for _, s := range e.schedList {
		if !s.closed.Load() {
			return false
		}
	}
	return true
}

// Flush waits until the entity has no queued job (or was killed, or its scheduler
// closed), or ctx ends. Models drm_sched_entity_flush(); the kernel's "killed
// process" shortcut is Kill. A closed scheduler runs nothing more, so waiting for
// the queue to drain would never end: drm_sched_fini marks every entity of its run
// queue stopped, which makes the flush return at once, and the kill that follows
// (Destroy, Kill) completes the queued jobs.
func (e *Entity) Flush(ctx context.Context) error {
	for {
		e.mu.Lock()
		// An entity with queued jobs does not move, so s stays its scheduler while
		// this waits.
		s := e.sched.Load()
		if e.queued.Load() == 0 || e.stopped.Load() || s.closed.Load() {
			e.mu.Unlock()
			return nil
		}
		if e.changed == nil {
			e.changed = make(chan struct{})
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-s.stop:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Kill stops the entity: it leaves the run queue, and every job still queued
// completes with ErrSearch without running, in push order, each after the job
// before it and after its own dependencies. A later Push is refused (ErrKilled).
// Models drm_sched_entity_kill() and drm_sched_entity_fini().
func (e *Entity) Kill() {
	e.mu.Lock()
	if e.stopped.Load() {
		e.mu.Unlock()
		return
	}
	e.stopped.Store(true)
	s := e.sched.Load()
	s.mu.Lock()
	s.rq.remove(e)
	s.rqChanged()
	s.mu.Unlock()
	e.unscoreLocked(s)
	e.mu.Unlock()

	e.popMu.Lock() // wait for the run worker to be done with this entity
	e.mu.Lock()
	var jobs []*Job
	for e.head.Load() != nil {
		jobs = append(jobs, e.head.Load())
		e.pop()
	}
	prev := e.lastScheduled
	e.notifyLocked()
	e.mu.Unlock()
	if d := e.depFence; d != nil {
		d.RemoveCallback(&e.depCb)
	}
	e.popMu.Unlock()

	s.score.Add(-int64(len(jobs)))
	for _, j := range jobs {
		prev = j.kill(prev)
	}
}

// Destroy flushes the entity (waiting for its queue to drain, or until ctx ends)
// and then kills it. It returns the flush's error. Models
// drm_sched_entity_destroy().
func (e *Entity) Destroy(ctx context.Context) error {
	err := e.Flush(ctx)
	e.Kill()
	return err
}

// entityStats is the GPU time the entity used: the drm-engine-* keys of fdinfo.
// Atomics: completions account from fence callbacks on any goroutine, and the
// run worker reads the runtime for the fair policy at every pop.
type entityStats struct {
	jobs    atomic.Int64
	errors  atomic.Int64
	runtime atomic.Int64 // ns
	avgNs   atomic.Int64 // EWMA of job GPU time
}

// account adds one completed job of GPU time d. A figure that does not change is
// not written: with near-instant jobs the runtime and the average stay put, and
// an atomic write would still take the cache line from its readers.
func (e *Entity) account(d time.Duration, err error) {
	e.stats.jobs.Add(1)
	if err != nil {
		e.stats.errors.Add(1)
	}
	if d != 0 {
		e.stats.runtime.Add(d.Nanoseconds())
	}
	ewmaAdd(&e.stats.avgNs, d.Nanoseconds())
}

// ewmaAdd folds v into the average in avg, unless that leaves it unchanged.
func ewmaAdd(avg *atomic.Int64, v int64) {
	for {
		old := avg.Load()
		n := ewma(old, v)
		if n == old || avg.CompareAndSwap(old, n) {
			return
		}
	}
}

// Stats is an entity's usage. Models struct drm_sched_entity_stats and the
// drm-engine-* keys drivers print from it in fdinfo.
type Stats struct {
	Jobs    int64         // jobs completed (their finished fence signalled or is about to)
	Errors  int64         // of those, completed with an error (one a driver set on the finished fence itself: counted just after the fence signalled)
	Runtime time.Duration // GPU time: finished minus start, summed
}

// Stats returns the entity's usage so far.
func (e *Entity) Stats() Stats {
	return Stats{Jobs: e.stats.jobs.Load(), Errors: e.stats.errors.Load(), Runtime: time.Duration(e.stats.runtime.Load())}
}

// Fdinfo returns the entity's GPU time as the drm-engine key of
// Documentation/gpu/drm-usage-stats.rst reports it: "drm-engine-<ring>:\t<ns> ns".
func (e *Entity) Fdinfo() string {
	st := e.Stats()
	return fmt.Sprintf("drm-engine-%s:\t%d ns\n", e.Scheduler().Name(), st.Runtime.Nanoseconds())
}
