// Package schedtest provides a mock hardware ring for testing code built on sched,
// modelled on the kernel's KUnit mock scheduler (drivers/gpu/drm/scheduler/tests/
// mock_scheduler.c). Jobs complete after a set duration of virtual time (run tests in
// a testing/synctest bubble), or hang until Advance, or fail with an error;
// completion is always in ring order, back to back, as on real hardware.
package schedtest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/sched"
)

// Config tunes a Ring. The zero value is the kernel's mock: an unlimited credit
// limit, no timeout, the fair policy.
type Config struct {
	Name        string
	CreditLimit uint32        // 0: effectively unlimited (the kernel's U32_MAX)
	Timeout     time.Duration // 0: no TDR
	Policy      sched.Policy
	Tracer      sched.Tracer
	Checker     *lockdep.Checker
	HangLimit   int
}

// A Ring is a mock GPU ring with its scheduler. Models struct drm_mock_scheduler.
type Ring struct {
	Sched *sched.Scheduler
	hw    *fence.Context

	// sigMu is held from taking jobs off the ring until their hardware fences
	// have signalled, so that completions by the timer, Advance and the TDR signal
	// in ring order even when they race (the kernel's mock signals under its
	// lock). Taken before mu.
	sigMu sync.Mutex

	mu        sync.Mutex
	next, cur uint64      // hardware seqnos: last assigned, last completed
	onGPU     []*Job      // in ring order
	timer     *time.Timer // fires at the earliest finishAt
	closed    bool
}

// A Job is a mock job. Models struct drm_mock_sched_job.
type Job struct {
	*sched.Job
	ring *Ring

	// Set before Submit:
	Duration  time.Duration // 0: the job never completes by itself (hang), see Advance
	Err       error         // the error the hardware fence completes with, if any
	DontReset bool          // TimedOutJob answers StatusNoHang (DRM_MOCK_SCHED_JOB_DONT_RESET)

	mu           sync.Mutex
	hw           *fence.Fence
	finishAt     time.Time
	timedOut     bool
	resetSkipped bool
	canceled     bool
	done         chan struct{} // closed on normal completion only
}

// New makes a ring and its scheduler, closed when tb ends. Models
// drm_mock_sched_new().
func New(tb testing.TB, cfg Config) *Ring {
	tb.Helper()
	r := &Ring{}
	chk := fence.WithChecker(cfg.Checker)
	if cfg.Checker == nil {
		chk = func(*fence.Context) {}
	}
	name := cfg.Name
	if name == "" {
		name = "drm-mock-scheduler"
	}
	r.hw = fence.NewContext("drm_mock_sched", name, chk)
	limit := cfg.CreditLimit
	if limit == 0 {
		limit = ^uint32(0)
	}
	s, err := sched.New(sched.Config{
		Name:        name,
		CreditLimit: limit,
		Timeout:     cfg.Timeout,
		HangLimit:   cfg.HangLimit,
		Policy:      cfg.Policy,
		Tracer:      cfg.Tracer,
		Checker:     cfg.Checker,
		Ops: sched.Ops{
			RunJob:      r.runJob,
			TimedOutJob: r.timedOutJob,
			FreeJob:     func(*sched.Job) {},
			CancelJob:   r.cancelJob,
		},
	})
	if err != nil {
		tb.Fatalf("schedtest: %v", err)
	}
	r.Sched = s
	tb.Cleanup(r.Close)
	return r
}

// Close stops the ring's timer and closes the scheduler. Idempotent.
func (r *Ring) Close() {
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	r.Sched.Close()
}

// NewEntity makes an entity on this ring, destroyed when tb ends (flushed for at
// most a second, then killed, as drm_mock_sched_entity_free does). Models
// drm_mock_sched_entity_new().
func (r *Ring) NewEntity(tb testing.TB, p sched.Priority) *sched.Entity {
	tb.Helper()
	e, err := r.Sched.NewEntity(p)
	if err != nil {
		tb.Fatalf("schedtest: %v", err)
	}
	tb.Cleanup(func() {
		// drm_mock_sched_entity_free is drm_sched_entity_destroy, which waits at
		// most MAX_WAIT_SCHED_ENTITY_Q_EMPTY (a second) for the queue to drain and
		// then kills what is left: a test that ends with a job stuck behind a hung
		// one must end, not wait forever.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = e.Destroy(ctx)
	})
	return e
}

// NewJob makes a one-credit job on e. Models drm_mock_sched_job_new().
func (r *Ring) NewJob(tb testing.TB, e *sched.Entity) *Job {
	tb.Helper()
	return r.NewJobCredits(tb, e, 1)
}

// NewJobCredits makes a job on e taking the given credits.
func (r *Ring) NewJobCredits(tb testing.TB, e *sched.Entity, credits uint32) *Job {
	tb.Helper()
	j := &Job{ring: r, done: make(chan struct{})}
	sj, err := e.NewJob(credits, j)
	if err != nil {
		tb.Fatalf("schedtest: %v", err)
	}
	j.Job = sj
	return j
}

// Submit arms and pushes the job. Models drm_mock_sched_job_submit().
func (j *Job) Submit() error {
	if err := j.Arm(); err != nil {
		return err
	}
	return j.Push()
}

func mockJob(sj *sched.Job) *Job { return sj.Payload.(*Job) }

// runJob puts the job on the mock GPU: a hardware fence on the ring's timeline and,
// with a duration, a finish time right after the job before it.
func (r *Ring) runJob(sj *sched.Job) (*fence.Fence, error) {
	j := mockJob(sj)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	hw := r.hw.New(r.next)
	j.mu.Lock()
	j.hw = hw
	if j.Duration > 0 {
		start := time.Now()
		for i := len(r.onGPU) - 1; i >= 0; i-- {
			if p := r.onGPU[i]; p.Duration > 0 {
				if p.finishAt.After(start) {
					start = p.finishAt
				}
				break
			}
		}
		j.finishAt = start.Add(j.Duration)
	}
	j.mu.Unlock()
	r.onGPU = append(r.onGPU, j)
	r.armLocked()
	return hw, nil
}

// armLocked points the timer at the first due job.
func (r *Ring) armLocked() {
	if r.closed || len(r.onGPU) == 0 || r.onGPU[0].Duration == 0 {
		return
	}
	d := time.Until(r.onGPU[0].finishAt)
	if r.timer == nil {
		r.timer = time.AfterFunc(d, r.tick)
	} else {
		r.timer.Reset(d)
	}
}

// tick completes, in ring order, every job whose duration has passed, stopping at
// the first that is not due or has no duration.
func (r *Ring) tick() {
	r.sigMu.Lock()
	defer r.sigMu.Unlock()
	now := time.Now()
	r.mu.Lock()
	var due []*Job
	for len(r.onGPU) > 0 {
		j := r.onGPU[0]
		if j.Duration == 0 || j.finishAt.After(now) {
			break
		}
		r.onGPU = r.onGPU[1:]
		r.cur = j.hw.Seqno()
		due = append(due, j)
	}
	r.armLocked()
	r.mu.Unlock()
	for _, j := range due {
		j.complete()
	}
}

func (j *Job) complete() {
	if j.Err != nil {
		_ = j.hw.SetError(j.Err)
	}
	_ = j.hw.Signal()
	close(j.done)
}

// Advance completes the next n jobs on the ring, in order, whatever their
// duration, and returns how many it completed. Completions are serialised, so it
// must not be called from a callback on one of this ring's fences. Models
// drm_mock_sched_advance().
func (r *Ring) Advance(n int) int {
	r.sigMu.Lock()
	defer r.sigMu.Unlock()
	r.mu.Lock()
	k := min(n, len(r.onGPU))
	due := slices.Clone(r.onGPU[:k])
	r.onGPU = r.onGPU[k:]
	if k > 0 {
		r.cur = due[k-1].hw.Seqno()
	}
	r.armLocked()
	r.mu.Unlock()
	for _, j := range due {
		j.complete()
	}
	return k
}

// OnGPU returns how many jobs are on the mock hardware.
func (r *Ring) OnGPU() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.onGPU)
}

// timedOutJob is the mock's TDR handler: a DontReset job is a false alarm
// (StatusNoHang); otherwise its hardware fence is completed with ErrTimedOut and the
// ring is "reset" (StatusReset).
func (r *Ring) timedOutJob(sj *sched.Job) sched.Status {
	j := mockJob(sj)
	if j.DontReset {
		j.mu.Lock()
		j.resetSkipped = true
		j.mu.Unlock()
		return sched.StatusNoHang
	}
	r.sigMu.Lock()
	defer r.sigMu.Unlock()
	if r.unlink(j) {
		j.mu.Lock()
		j.timedOut = true
		j.mu.Unlock()
		_ = j.hw.SetError(sched.ErrTimedOut)
		_ = j.hw.Signal()
	}
	return sched.StatusReset
}

// cancelJob is used by Close for jobs still on the GPU.
func (r *Ring) cancelJob(sj *sched.Job) {
	j := mockJob(sj)
	r.sigMu.Lock()
	defer r.sigMu.Unlock()
	if r.unlink(j) {
		j.mu.Lock()
		j.canceled = true
		j.mu.Unlock()
		_ = j.hw.SetError(sched.ErrCanceled)
		_ = j.hw.Signal()
	}
}

func (r *Ring) unlink(j *Job) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.Index(r.onGPU, j)
	if i < 0 {
		return false
	}
	r.onGPU = slices.Delete(r.onGPU, i, i+1)
	r.armLocked()
	return true
}

// WaitScheduled waits until the job reached the hardware. Models
// drm_mock_sched_job_wait_scheduled().
func (j *Job) WaitScheduled(ctx context.Context) error { return j.Scheduled().Wait(ctx) }

// WaitFinished waits for the job's normal completion (by its duration or Advance;
// not a timeout or a cancel) and reports whether it came before ctx ended. Models
// drm_mock_sched_job_wait_finished().
func (j *Job) WaitFinished(ctx context.Context) bool {
	select {
	case <-j.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// IsFinished reports normal completion. Models drm_mock_sched_job_is_finished().
func (j *Job) IsFinished() bool {
	select {
	case <-j.done:
		return true
	default:
		return false
	}
}

// TimedOut reports whether the TDR ended the job (DRM_MOCK_SCHED_JOB_TIMEDOUT).
func (j *Job) TimedOut() bool { j.mu.Lock(); defer j.mu.Unlock(); return j.timedOut }

// ResetSkipped reports whether the TDR fired and the job asked not to be reset
// (DRM_MOCK_SCHED_JOB_RESET_SKIPPED).
func (j *Job) ResetSkipped() bool { j.mu.Lock(); defer j.mu.Unlock(); return j.resetSkipped }

// Canceled reports whether Close cancelled the job on the GPU.
func (j *Job) Canceled() bool { j.mu.Lock(); defer j.mu.Unlock(); return j.canceled }

// Hardware returns the job's hardware fence, or nil before it ran.
func (j *Job) Hardware() *fence.Fence { j.mu.Lock(); defer j.mu.Unlock(); return j.hw }
