package sched_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/schedtest"
)

// drv is a driver written against sched.Ops, as a kernel driver is, for the
// tests that need to see or steer the hooks (schedtest hides them): a mock
// hardware ring whose fences complete after a duration of virtual time, in ring
// order, or when the test says so; and hooks a test may replace before the first
// job runs.
type drv struct {
	t  testing.TB
	s  *sched.Scheduler
	hw *fence.Context

	// sigMu is held from taking jobs off the ring until their hardware fences
	// signalled: completions that race still signal in ring order. Before mu.
	sigMu  sync.Mutex
	mu     sync.Mutex
	ring   []*sched.Job // on the hardware, in ring order
	seq    uint64
	timer  *time.Timer
	closed bool

	// Hooks; nil means the mock's behaviour.
	run      func(j *sched.Job) (*fence.Fence, error)
	onRun    func(j *sched.Job)
	timedOut func(j *sched.Job) sched.Status
	prepare  func(j *sched.Job) *fence.Fence
	noCancel bool

	cancelled []*sched.Job // CancelJob calls, in order (guarded by mu)
}

// work is the payload of a drv job.
type work struct {
	dur      time.Duration // 0: hangs until complete, a reset or Close
	err      error         // the hardware fence's error
	runs     atomic.Int32  // RunJob calls
	freed    atomic.Int32  // FreeJob calls, or cleaned up by the mock's reset
	timedOut atomic.Bool
	hw       atomic.Pointer[fence.Fence]
	finishAt time.Time // guarded by drv.mu
}

func payload(j *sched.Job) *work { return j.Payload.(*work) }

// newDrv makes a scheduler driven by a drv; setup sets hooks before it starts.
// A nil cfg.Checker becomes lockdeptest.New(t): any lockdep report fails the test.
// Call it inside a synctest bubble when jobs have durations or the TDR is on.
func newDrv(t testing.TB, cfg sched.Config, setup ...func(*drv)) *drv {
	t.Helper()
	if cfg.Checker == nil {
		cfg.Checker = lockdeptest.New(t)
	}
	if cfg.CreditLimit == 0 {
		cfg.CreditLimit = 1 << 20
	}
	d := &drv{t: t, hw: fence.NewContext("mockhw", cfg.Name, fence.WithChecker(cfg.Checker))}
	for _, f := range setup {
		f(d)
	}
	cfg.Ops = sched.Ops{RunJob: d.runJob, TimedOutJob: d.timedOutJob, FreeJob: d.freeJob}
	if !d.noCancel {
		cfg.Ops.CancelJob = d.cancelJob
	}
	if d.prepare != nil {
		cfg.Ops.PrepareJob = func(j *sched.Job, _ *sched.Entity) *fence.Fence { return d.prepare(j) }
	}
	s, err := sched.New(cfg)
	require.NoError(t, err)
	d.s = s
	t.Cleanup(d.close)
	return d
}

func (d *drv) close() {
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	d.s.Close()
}

// entity makes an entity on d's scheduler, killed when the test ends.
func (d *drv) entity(t testing.TB, p sched.Priority) *sched.Entity {
	t.Helper()
	e, err := d.s.NewEntity(p)
	require.NoError(t, err)
	t.Cleanup(e.Kill)
	return e
}

// job makes a one-credit job of duration dur (0: it hangs).
func (d *drv) job(t testing.TB, e *sched.Entity, dur time.Duration) *sched.Job {
	t.Helper()
	j, err := e.NewJob(1, &work{dur: dur})
	require.NoError(t, err)
	return j
}

// submit arms and pushes j.
func submit(t testing.TB, j *sched.Job) {
	t.Helper()
	require.NoError(t, j.Arm())
	require.NoError(t, j.Push())
}

func (d *drv) runJob(j *sched.Job) (*fence.Fence, error) {
	payload(j).runs.Add(1)
	if d.onRun != nil {
		d.onRun(j)
	}
	if d.run != nil {
		return d.run(j)
	}
	return d.put(j), nil
}

// put puts j on the mock ring: a hardware fence and, with a duration, a finish
// time right after the job before it.
func (d *drv) put(j *sched.Job) *fence.Fence {
	w := payload(j)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	hw := d.hw.New(d.seq)
	w.hw.Store(hw)
	if w.dur > 0 {
		start := time.Now()
		for i := len(d.ring) - 1; i >= 0; i-- {
			if p := payload(d.ring[i]); p.dur > 0 {
				if p.finishAt.After(start) {
					start = p.finishAt
				}
				break
			}
		}
		w.finishAt = start.Add(w.dur)
	}
	d.ring = append(d.ring, j)
	d.armLocked()
	return hw
}

func (d *drv) armLocked() {
	if d.closed || len(d.ring) == 0 || payload(d.ring[0]).dur == 0 {
		return
	}
	wait := time.Until(payload(d.ring[0]).finishAt)
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.tick)
	} else {
		d.timer.Reset(wait)
	}
}

// tick completes the due jobs at the head of the ring.
func (d *drv) tick() {
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	now := time.Now()
	d.mu.Lock()
	var due []*sched.Job
	for len(d.ring) > 0 {
		w := payload(d.ring[0])
		if w.dur == 0 || w.finishAt.After(now) {
			break
		}
		due = append(due, d.ring[0])
		d.ring = d.ring[1:]
	}
	d.armLocked()
	d.mu.Unlock()
	for _, j := range due {
		signalHW(j, payload(j).err)
	}
}

func signalHW(j *sched.Job, err error) {
	hw := payload(j).hw.Load()
	if err != nil {
		_ = hw.SetError(err)
	}
	_ = hw.Signal()
}

// complete completes the first n jobs on the ring, in order, with their errors.
func (d *drv) complete(n int) int {
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	d.mu.Lock()
	n = min(n, len(d.ring))
	due := slices.Clone(d.ring[:n])
	d.ring = d.ring[n:]
	d.armLocked()
	d.mu.Unlock()
	for _, j := range due {
		signalHW(j, payload(j).err)
	}
	return n
}

// completeJob completes j's hardware fence out of ring order.
func (d *drv) completeJob(j *sched.Job, err error) {
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	if d.unlink(j) {
		signalHW(j, err)
	}
}

// reset forgets every job on the ring, as a GPU reset does; their old hardware
// fences signal with ErrCanceled.
func (d *drv) reset() {
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	d.mu.Lock()
	lost := d.ring
	d.ring = nil
	d.mu.Unlock()
	for _, j := range lost {
		signalHW(j, sched.ErrCanceled)
	}
}

func (d *drv) onRing() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ring)
}

func (d *drv) unlink(j *sched.Job) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.Index(d.ring, j)
	if i < 0 {
		return false
	}
	d.ring = slices.Delete(d.ring, i, i+1)
	d.armLocked()
	return true
}

func (d *drv) timedOutJob(j *sched.Job) sched.Status {
	if d.timedOut != nil {
		return d.timedOut(j)
	}
	return d.resetJob(j)
}

// resetJob is the mock's timedout_job: a job still on the ring is taken off, its
// hardware fence signals ErrTimedOut and the driver cleans it up (the scheduler
// no longer has it); a job that completed meanwhile was a false alarm.
func (d *drv) resetJob(j *sched.Job) sched.Status {
	w := payload(j)
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	if !d.unlink(j) {
		return sched.StatusNoHang
	}
	w.timedOut.Store(true)
	signalHW(j, sched.ErrTimedOut)
	if w.freed.Add(1) != 1 {
		d.t.Errorf("job %d freed twice", j.Seqno())
	}
	return sched.StatusReset
}

func (d *drv) freeJob(j *sched.Job) {
	if !j.Finished().IsSignaled() {
		d.t.Errorf("FreeJob of job %d before its finished fence signalled", j.Seqno())
	}
	if payload(j).freed.Add(1) != 1 {
		d.t.Errorf("job %d freed twice", j.Seqno())
	}
}

func (d *drv) cancelJob(j *sched.Job) {
	d.mu.Lock()
	d.cancelled = append(d.cancelled, j)
	d.mu.Unlock()
	d.completeJob(j, sched.ErrCanceled)
}

// submitRun submits j and waits until it reached the hardware, so that the test
// decides the order jobs of different entities run in.
func submitRun(t *testing.T, j *sched.Job) {
	t.Helper()
	submit(t, j)
	require.True(t, signalled(t, j.Scheduled(), time.Second), "job %s did not run", name(j))
}

// name is "entity/seqno", to compare jobs in assertions without printing them.
func name(j *sched.Job) string { return fmt.Sprintf("%d/%d", j.Entity().ID(), j.Seqno()) }

func names(js []*sched.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = name(j)
	}
	return out
}

// within returns a context that ends after d of virtual time.
func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// signalled reports whether f signals within d of virtual time.
func signalled(t *testing.T, f *fence.Fence, d time.Duration) bool {
	return f.Wait(within(t, d)) == nil && f.IsSignaled()
}

// orderLog checks that each entity's finished fences signal in seqno order:
// when one signals, every fence watched before it on the same entity has
// signalled. It checks the fences' state, not the order its callbacks run in: a
// fence's callbacks run after it is marked signalled, so a later fence that
// waited only for that mark may run its own callbacks first.
type orderLog struct {
	mu   sync.Mutex
	ents map[uint64]*entityLog
	bad  []string // violations
	n    atomic.Int64
}

type entityLog struct {
	fences []*fence.Fence // watched, in seqno order
	done   int            // fences[:done] have all signalled
	seqs   []uint64       // seqnos in the order their callbacks ran
}

func newOrderLog() *orderLog { return &orderLog{ents: make(map[uint64]*entityLog)} }

// watch adds j, just armed, to its entity's log; jobs of one entity must be
// watched in seqno order.
func (o *orderLog) watch(t testing.TB, j *sched.Job) {
	t.Helper()
	id := j.Entity().ID()
	o.mu.Lock()
	el := o.ents[id]
	if el == nil {
		el = new(entityLog)
		o.ents[id] = el
	}
	i := len(el.fences)
	el.fences = append(el.fences, j.Finished())
	o.mu.Unlock()
	require.NoError(t, j.Finished().AddCallback(new(fence.Callback), func(f *fence.Fence, _ *fence.Callback) {
		o.mu.Lock()
		for el.done < len(el.fences) && el.fences[el.done].IsSignaled() {
			el.done++
		}
		if el.done <= i {
			o.bad = append(o.bad, fmt.Sprintf("entity %d: finished fence %d signalled before %d",
				id, f.Seqno(), el.fences[el.done].Seqno()))
		}
		el.seqs = append(el.seqs, f.Seqno())
		o.mu.Unlock()
		o.n.Add(1)
	}))
}

// of returns the seqnos of e's finished fences in the order their callbacks ran.
func (o *orderLog) of(e *sched.Entity) []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if el := o.ents[e.ID()]; el != nil {
		return slices.Clone(el.seqs)
	}
	return nil
}

func (o *orderLog) violations() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.bad)
}

func (o *orderLog) requireInOrder(t testing.TB) {
	t.Helper()
	require.Empty(t, o.violations(), "finished fences out of seqno order")
}

// events is a Tracer that keeps everything.
type events struct {
	mu  sync.Mutex
	all []sched.Event
}

func (ev *events) Trace(e sched.Event) {
	ev.mu.Lock()
	ev.all = append(ev.all, e)
	ev.mu.Unlock()
}

func (ev *events) get() []sched.Event {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return slices.Clone(ev.all)
}

// runs returns the entities of the EventRun events, in order.
func (ev *events) runs() []uint64 {
	var ids []uint64
	for _, e := range ev.get() {
		if e.Kind == sched.EventRun {
			ids = append(ids, e.Entity)
		}
	}
	return ids
}

var errHW = errors.New("test: hardware fault")

// ---- Construction and job init ----

func TestNewRejectsBadConfig(t *testing.T) {
	ops := sched.Ops{
		RunJob:      func(*sched.Job) (*fence.Fence, error) { return nil, nil },
		TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
		FreeJob:     func(*sched.Job) {},
	}
	for name, cfg := range map[string]sched.Config{
		"credit limit 0": {Ops: ops},
		"no RunJob":      {CreditLimit: 1, Ops: sched.Ops{TimedOutJob: ops.TimedOutJob, FreeJob: ops.FreeJob}},
		"no TimedOutJob": {CreditLimit: 1, Ops: sched.Ops{RunJob: ops.RunJob, FreeJob: ops.FreeJob}},
		"no FreeJob":     {CreditLimit: 1, Ops: sched.Ops{RunJob: ops.RunJob, TimedOutJob: ops.TimedOutJob}},
		"bad policy":     {CreditLimit: 1, Ops: ops, Policy: sched.PolicyRoundRobin + 1},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := sched.New(cfg)
			require.ErrorIs(t, err, sched.ErrInvalid)
			require.Nil(t, s)
		})
	}
}

func TestNewEntityRejectsBadArguments(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	_, err := sched.NewEntity(sched.PriorityNormal)
	require.ErrorIs(t, err, sched.ErrInvalid)
	_, err = sched.NewEntity(sched.PriorityNormal, nil, d.s)
	require.ErrorIs(t, err, sched.ErrInvalid)
	_, err = sched.NewEntity(sched.PriorityLow+1, d.s)
	require.ErrorIs(t, err, sched.ErrInvalid)

	e := d.entity(t, sched.PriorityHigh)
	require.ErrorIs(t, e.SetPriority(sched.PriorityLow+1), sched.ErrInvalid)
	require.Equal(t, sched.PriorityHigh, e.Priority(), "a refused SetPriority changed the priority")
	require.Same(t, d.s, e.Scheduler())
}

func TestNewJobErrors(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 4})
	e := d.entity(t, sched.PriorityNormal)

	_, err := e.NewJob(0, &work{})
	require.ErrorIs(t, err, sched.ErrInvalid, "zero credits")
	_, err = e.NewJob(5, &work{})
	require.ErrorIs(t, err, sched.ErrInvalid, "credits above the limit")

	j, err := e.NewJob(4, &work{})
	require.NoError(t, err, "credits at the limit")
	require.Equal(t, uint32(4), j.Credits())
	require.Same(t, e, j.Entity())
	require.NoError(t, j.Cleanup())

	e.Kill()
	_, err = e.NewJob(1, &work{})
	require.ErrorIs(t, err, sched.ErrKilled, "NewJob on a killed entity")

	// An entity that may move between rings takes jobs that fit the smallest:
	// Arm may move it there, and a bigger job would wait for credits forever.
	small := newDrv(t, sched.Config{Name: "small", CreditLimit: 2})
	lb, err := sched.NewEntity(sched.PriorityNormal, d.s, small.s)
	require.NoError(t, err)
	defer lb.Kill()
	_, err = lb.NewJob(3, &work{})
	require.ErrorIs(t, err, sched.ErrInvalid, "credits above the smaller ring's limit")
	j, err = lb.NewJob(2, &work{})
	require.NoError(t, err)
	require.NoError(t, j.Cleanup())
}

func TestJobStateErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx"})
		e := d.entity(t, sched.PriorityNormal)
		dep := fence.NewContext("test", "dep").New(1)
		require.NoError(t, dep.Signal())

		j := d.job(t, e, time.Millisecond)
		require.Nil(t, j.Scheduler())
		require.Nil(t, j.Finished())
		require.ErrorIs(t, j.Push(), sched.ErrState, "Push before Arm")
		require.NoError(t, j.Arm())
		require.ErrorIs(t, j.Arm(), sched.ErrState, "Arm twice")
		require.ErrorIs(t, j.Cleanup(), sched.ErrState, "Cleanup after Arm")
		require.ErrorIs(t, j.AddDependency(dep), sched.ErrState, "dependency after Arm")
		require.NoError(t, j.Push())
		require.ErrorIs(t, j.Push(), sched.ErrState, "Push twice")
		require.ErrorIs(t, j.Cleanup(), sched.ErrState, "Cleanup after Push")
		require.True(t, signalled(t, j.Finished(), time.Second))

		k := d.job(t, e, time.Millisecond)
		require.NoError(t, k.AddDependency(dep))
		require.NoError(t, k.Cleanup())
		require.Empty(t, k.Dependencies(), "Cleanup drops the dependencies")
		require.ErrorIs(t, k.Cleanup(), sched.ErrState, "Cleanup twice")
		require.ErrorIs(t, k.Arm(), sched.ErrState, "Arm after Cleanup")
		require.ErrorIs(t, k.Push(), sched.ErrState, "Push after Cleanup")
		require.ErrorIs(t, k.AddDependency(dep), sched.ErrState, "dependency after Cleanup")
	})
}

func TestArmGivesSeqnosAndFencesOnTheEntityTimeline(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	e := d.entity(t, sched.PriorityNormal)
	for want := uint64(1); want <= 3; want++ {
		j := d.job(t, e, 0)
		require.Zero(t, j.Seqno())
		require.NoError(t, j.Arm())
		require.Equal(t, want, j.Seqno())
		require.Same(t, d.s, j.Scheduler())
		require.Equal(t, e.FenceContext(), j.Scheduled().Context().ID())
		require.Equal(t, e.FenceContext()+1, j.Finished().Context().ID())
		require.Equal(t, want, j.Scheduled().Seqno())
		require.Equal(t, want, j.Finished().Seqno())
		require.Equal(t, "drm_sched", j.Finished().Context().Driver())
		require.Equal(t, "gfx", j.Finished().Context().Timeline())
		require.Same(t, j, sched.JobOf(j.Scheduled()))
		require.Same(t, j, sched.JobOf(j.Finished()))
		require.NoError(t, j.Push())
	}
	require.Nil(t, sched.JobOf(nil))
	require.Nil(t, sched.JobOf(fence.NewContext("test", "x").New(1)))
	d.complete(3)
}

// JobOf knows the entities' contexts, not their ids: a context that borrows an
// entity's id holds no job's fences.
func TestJobOfIgnoresAContextWithAnEntitysID(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	e := d.entity(t, sched.PriorityNormal)
	for _, id := range []uint64{e.FenceContext(), e.FenceContext() + 1} {
		require.Nil(t, sched.JobOf(fence.NewContext("drm_sched", "gfx", fence.WithID(id)).New(1)))
	}
}

// ---- Kill, push after kill, Flush, Destroy ----

func TestPushAfterKill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 1})
		e := d.entity(t, sched.PriorityNormal)
		log := newOrderLog()
		a, b, c := d.job(t, e, 0), d.job(t, e, 0), d.job(t, e, 0)
		submit(t, a)
		log.watch(t, a)
		submit(t, b)
		log.watch(t, b)
		require.NoError(t, c.Arm())
		log.watch(t, c)
		synctest.Wait()
		require.True(t, a.Scheduled().IsSignaled())
		require.False(t, b.Scheduled().IsSignaled(), "b ran beyond the credit limit")

		e.Kill()
		require.ErrorIs(t, c.Push(), sched.ErrKilled)
		_, err := e.NewJob(1, &work{})
		require.ErrorIs(t, err, sched.ErrKilled)

		synctest.Wait()
		require.False(t, b.Finished().IsSignaled(), "killed job finished before the job ahead of it")
		require.False(t, c.Finished().IsSignaled(), "job pushed after kill finished before the jobs ahead of it")
		require.Equal(t, 1, d.complete(1))
		synctest.Wait()

		require.Equal(t, []uint64{1, 2, 3}, log.of(e))
		require.NoError(t, a.Finished().Error())
		for _, j := range []*sched.Job{b, c} {
			require.ErrorIs(t, j.Finished().Error(), sched.ErrSearch)
			require.True(t, j.Scheduled().IsSignaled())
			require.Zero(t, payload(j).runs.Load(), "a killed job ran")
			require.Equal(t, int32(1), payload(j).freed.Load(), "FreeJob of a killed job")
		}
		require.Equal(t, int32(1), payload(a).freed.Load())
		require.Equal(t, sched.Stats{Jobs: 3, Errors: 2}, e.Stats())
		e.Kill() // idempotent
	})
}

func TestKilledJobWaitsForItsDependencies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk})
		e, other := d.entity(t, sched.PriorityNormal), d.entity(t, sched.PriorityNormal)
		x := fence.NewContext("test", "x", fence.WithChecker(chk)).New(1)

		// o runs (and stays on the ring); k depends on its scheduled fence, which has
		// signalled, and on x, which has not: k is queued.
		o := d.job(t, other, 0)
		submit(t, o)
		require.True(t, signalled(t, o.Scheduled(), time.Second))
		k := d.job(t, e, 0)
		require.NoError(t, k.AddDependency(o.Scheduled()))
		require.NoError(t, k.AddDependency(x))
		submit(t, k)
		synctest.Wait()
		require.False(t, k.Scheduled().IsSignaled())

		e.Kill()
		synctest.Wait()
		require.False(t, k.Finished().IsSignaled(), "killed job did not wait for its dependency")
		require.NoError(t, x.Signal())
		synctest.Wait()
		// A scheduled-fence dependency is waited for as the finished fence: the work
		// it stands for, not its submission.
		require.False(t, k.Finished().IsSignaled(), "killed job did not wait for the work of its dependency")
		require.Equal(t, 1, d.complete(1))
		require.True(t, signalled(t, k.Finished(), time.Second))
		require.ErrorIs(t, k.Finished().Error(), sched.ErrSearch)
		require.Zero(t, payload(k).runs.Load())
	})
}

func TestFlushWaitsForTheQueueToDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 1})
		e := d.entity(t, sched.PriorityNormal)
		require.NoError(t, e.Flush(t.Context()), "an idle entity flushes at once")
		a, b := d.job(t, e, 0), d.job(t, e, 0)
		submit(t, a)
		submit(t, b)

		require.ErrorIs(t, e.Flush(within(t, time.Second)), context.DeadlineExceeded)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(time.Millisecond, cancel)
		require.ErrorIs(t, e.Flush(ctx), context.Canceled)
		require.False(t, b.Scheduled().IsSignaled(), "a flush that gave up changed the queue")

		done := make(chan error)
		go func() { done <- e.Flush(context.Background()) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Flush returned with a job queued")
		default:
		}
		d.complete(1)
		require.NoError(t, <-done)
		synctest.Wait() // Flush returns once b left the queue; RunJob follows
		require.True(t, b.Scheduled().IsSignaled(), "Flush returned before the queue drained")
		d.complete(1)
		require.True(t, signalled(t, b.Finished(), time.Second))
		require.NoError(t, b.Finished().Error())
	})
}

func TestDestroyKillsWhatTheFlushLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 1})
		e := d.entity(t, sched.PriorityNormal)
		a, b := d.job(t, e, 0), d.job(t, e, 0)
		submit(t, a)
		submit(t, b)
		require.ErrorIs(t, e.Destroy(within(t, time.Second)), context.DeadlineExceeded)
		_, err := e.NewJob(1, &work{})
		require.ErrorIs(t, err, sched.ErrKilled)
		require.Equal(t, 1, d.complete(1))
		require.True(t, signalled(t, b.Finished(), time.Second))
		require.ErrorIs(t, b.Finished().Error(), sched.ErrSearch)
		require.NoError(t, a.Finished().Error())
		require.NoError(t, e.Destroy(t.Context()), "Destroy of a dead entity")
	})
}

// ---- Dependencies ----

func TestAddDependencyKeepsTheLaterFenceOfAContext(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	e := d.entity(t, sched.PriorityNormal)
	tl := fence.NewContext("test", "timeline")
	f1, f2 := tl.New(1), tl.New(2)
	other := fence.NewContext("test", "other").New(7)

	for _, order := range [][]*fence.Fence{{f1, f2}, {f2, f1}} {
		j := d.job(t, e, 0)
		for _, f := range order {
			require.NoError(t, j.AddDependency(f))
		}
		require.NoError(t, j.AddDependency(nil), "a nil fence is ignored")
		require.NoError(t, j.AddDependency(other))
		require.NoError(t, j.AddDependency(f1))
		require.Equal(t, []*fence.Fence{f2, other}, j.Dependencies())
		require.NoError(t, j.Cleanup())
	}
}

func TestAddDependencyRefusesALongRunningFence(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	e := d.entity(t, sched.PriorityNormal)
	lr := fence.NewContext("test", "compute", fence.LongRunning()).New(1)
	j := d.job(t, e, 0)
	require.ErrorIs(t, j.AddDependency(lr), sched.ErrInvalid)
	require.Empty(t, j.Dependencies())
	require.NoError(t, j.Cleanup())
}

func TestJobWaitsForItsDependencies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		ev := new(events)
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk, Tracer: ev})
		e := d.entity(t, sched.PriorityNormal)
		ctx := fence.NewContext("test", "x", fence.WithChecker(chk))
		x, y := ctx.New(1), fence.NewContext("test", "y", fence.WithChecker(chk)).New(1)
		j := d.job(t, e, time.Millisecond)
		require.NoError(t, j.AddDependency(x))
		require.NoError(t, j.AddDependency(y))
		submit(t, j)

		require.False(t, signalled(t, j.Scheduled(), time.Second))
		require.NoError(t, x.Signal())
		require.False(t, signalled(t, j.Scheduled(), time.Second), "ran with a dependency unsignalled")
		require.NoError(t, y.SetError(errHW))
		require.NoError(t, y.Signal())
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.NoError(t, j.Finished().Error(), "a dependency's error is not the job's")

		var deps []uint64
		for _, e := range ev.get() {
			if e.Kind == sched.EventDependency {
				deps = append(deps, e.DepContext)
				require.Equal(t, uint64(1), e.DepSeqno)
			}
		}
		require.Equal(t, []uint64{x.Context().ID(), y.Context().ID()}, deps)
	})
}

// After FreeJob the scheduler drops the job's dependencies, as the
// drm_sched_job_cleanup a kernel driver calls from free_job does: a finished fence
// kept for long must not keep every job before it alive through them.
func TestFreeDropsTheJobsDependencies(t *testing.T) {
	d := newDrv(t, sched.Config{Name: "gfx"})
	e, other := d.entity(t, sched.PriorityNormal), d.entity(t, sched.PriorityNormal)
	dep := d.job(t, other, 0)
	submitRun(t, dep)
	j := d.job(t, e, 0)
	require.NoError(t, j.AddDependency(dep.Finished()))
	submitRun(t, j) // same ring: dep being scheduled is enough
	require.Equal(t, 2, d.complete(2))
	require.True(t, signalled(t, j.Finished(), time.Second))
	d.s.Close() // the free work is done: by the worker, or by Close
	require.Equal(t, int32(1), payload(j).freed.Load())
	require.Empty(t, j.Dependencies())
}

func TestPrepareJobHandsBackOneMoreDependency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		extra := fence.NewContext("test", "extra", fence.WithChecker(chk)).New(1)
		var calls atomic.Int32
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk}, func(d *drv) {
			d.prepare = func(*sched.Job) *fence.Fence {
				if calls.Add(1) == 1 {
					return extra
				}
				return nil
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		j := d.job(t, e, time.Millisecond)
		submit(t, j)
		require.False(t, signalled(t, j.Scheduled(), time.Second))
		require.NoError(t, extra.Signal())
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.Equal(t, int32(2), calls.Load(), "PrepareJob is asked again after its fence signals")
	})
}

// resvWithAllUsages returns a locked reservation object with one fence of each
// usage, and the fences by usage.
func resvWithAllUsages(t *testing.T, chk *lockdep.Checker) (*resv.Object, map[resv.Usage]*fence.Fence) {
	t.Helper()
	o := resv.NewObject(chk)
	require.NoError(t, o.Lock(t.Context(), nil))
	require.NoError(t, o.Reserve(4))
	fs := make(map[resv.Usage]*fence.Fence)
	for _, u := range []resv.Usage{resv.Kernel, resv.Write, resv.Read, resv.Bookkeep} {
		fs[u] = fence.NewContext("test", u.String(), fence.WithChecker(chk)).New(1)
		require.NoError(t, o.AddFence(fs[u], u))
	}
	return o, fs
}

func TestAddResvDependencies(t *testing.T) {
	chk := lockdeptest.New(t)
	d := newDrv(t, sched.Config{Name: "gfx", Checker: chk})
	e := d.entity(t, sched.PriorityNormal)
	o, fs := resvWithAllUsages(t, chk)
	for u, want := range map[resv.Usage][]*fence.Fence{
		resv.Kernel:   {fs[resv.Kernel]},
		resv.Write:    {fs[resv.Kernel], fs[resv.Write]},
		resv.Read:     {fs[resv.Kernel], fs[resv.Write], fs[resv.Read]},
		resv.Bookkeep: {fs[resv.Kernel], fs[resv.Write], fs[resv.Read], fs[resv.Bookkeep]},
	} {
		j := d.job(t, e, 0)
		require.NoError(t, j.AddResvDependencies(o, u))
		require.ElementsMatch(t, want, j.Dependencies(), "usage %v", u)
		require.NoError(t, j.Cleanup())
	}
	o.Unlock()

	j := d.job(t, e, 0)
	require.ErrorIs(t, j.AddResvDependencies(o, resv.Read), resv.ErrNotLocked)
	require.Empty(t, j.Dependencies())
	require.NoError(t, j.Cleanup())
}

func TestAddImplicitDependencies(t *testing.T) {
	chk := lockdeptest.New(t)
	d := newDrv(t, sched.Config{Name: "gfx", Checker: chk})
	e := d.entity(t, sched.PriorityNormal)
	o, fs := resvWithAllUsages(t, chk)
	defer o.Unlock()

	reader := d.job(t, e, 0)
	require.NoError(t, reader.AddImplicitDependencies(o, false))
	require.ElementsMatch(t, []*fence.Fence{fs[resv.Kernel], fs[resv.Write]}, reader.Dependencies(),
		"a reader waits for writers only")
	writer := d.job(t, e, 0)
	require.NoError(t, writer.AddImplicitDependencies(o, true))
	require.ElementsMatch(t, []*fence.Fence{fs[resv.Kernel], fs[resv.Write], fs[resv.Read]}, writer.Dependencies(),
		"a writer waits for readers and writers")
	require.NoError(t, reader.Cleanup())
	require.NoError(t, writer.Cleanup())
}

func TestResvDependenciesAreWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk})
		e := d.entity(t, sched.PriorityNormal)
		o, fs := resvWithAllUsages(t, chk)
		j := d.job(t, e, time.Millisecond)
		require.NoError(t, j.AddImplicitDependencies(o, true))
		require.NoError(t, o.Reserve(1))
		require.NoError(t, j.Arm())
		require.NoError(t, o.AddFence(j.Finished(), resv.Write)) // the job's own fence, after its dependencies
		o.Unlock()
		require.NoError(t, j.Push())

		for _, u := range []resv.Usage{resv.Read, resv.Kernel, resv.Write} {
			require.False(t, signalled(t, j.Scheduled(), time.Second))
			require.NoError(t, fs[u].Signal())
		}
		require.True(t, signalled(t, j.Finished(), time.Second), "a bookkeep fence was waited for")
		require.False(t, fs[resv.Bookkeep].IsSignaled())
	})
}

// ---- Same-scheduler pipelining ----

func newRing(t *testing.T, cfg schedtest.Config) *schedtest.Ring {
	t.Helper()
	if cfg.Checker == nil {
		cfg.Checker = lockdeptest.New(t)
	}
	return schedtest.New(t, cfg)
}

func TestSameSchedulerDependencyWaitsOnlyForScheduled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{})
		e1, e2 := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityNormal)
		a := r.NewJob(t, e1) // hangs until Advance
		require.NoError(t, a.Submit())
		b := r.NewJob(t, e2)
		b.Duration = time.Millisecond
		require.NoError(t, b.AddDependency(a.Finished()))
		require.NoError(t, b.Submit())

		require.True(t, signalled(t, b.Scheduled(), time.Second), "b waited for more than a's submission")
		require.False(t, a.Finished().IsSignaled())
		require.False(t, signalled(t, b.Finished(), time.Second), "the ring runs in order: b finishes after a")
		require.Equal(t, 1, r.Advance(1))
		require.True(t, signalled(t, b.Finished(), time.Second))
	})
}

func TestDontPipelineWaitsForFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{})
		e1, e2 := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityNormal)
		a := r.NewJob(t, e1)
		a.DontPipeline = true
		require.NoError(t, a.Submit())
		b := r.NewJob(t, e2)
		require.NoError(t, b.AddDependency(a.Finished()))
		require.NoError(t, b.Submit())

		require.True(t, signalled(t, a.Scheduled(), time.Second))
		require.False(t, signalled(t, b.Scheduled(), time.Second), "DontPipeline: b ran before a finished")
		require.Equal(t, 1, r.Advance(1))
		require.True(t, signalled(t, b.Scheduled(), time.Second))
		require.Equal(t, 1, r.Advance(1))
	})
}

func TestDependencyWithAnErrorIsNotPipelined(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{})
		e1, e2 := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityNormal)
		// a's entity is guilty: a gets ErrCanceled on its finished fence when it is
		// picked, and still runs (the driver is to skip the hardware, this one
		// does not), so its finished fence carries an error before it signals.
		e1.SetGuilty()
		a := r.NewJob(t, e1)
		require.NoError(t, a.Submit())
		require.True(t, signalled(t, a.Scheduled(), time.Second))
		b := r.NewJob(t, e2)
		require.NoError(t, b.AddDependency(a.Finished()))
		require.NoError(t, b.Submit())

		require.False(t, signalled(t, b.Scheduled(), time.Second), "b was pipelined behind a failed job")
		require.Equal(t, 1, r.Advance(1))
		require.True(t, signalled(t, b.Scheduled(), time.Second))
		require.ErrorIs(t, a.Finished().Error(), sched.ErrCanceled)
		require.Equal(t, 1, r.Advance(1))
		require.NoError(t, b.Finished().Error())
	})
}

func TestOtherSchedulerDependencyWaitsForFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		r1, r2 := newRing(t, schedtest.Config{Name: "r1", Checker: chk}), newRing(t, schedtest.Config{Name: "r2", Checker: chk})
		a := r1.NewJob(t, r1.NewEntity(t, sched.PriorityNormal))
		require.NoError(t, a.Submit())
		b := r2.NewJob(t, r2.NewEntity(t, sched.PriorityNormal))
		require.NoError(t, b.AddDependency(a.Finished()))
		require.NoError(t, b.Submit())
		require.False(t, signalled(t, b.Scheduled(), time.Second), "pipelined across rings")
		require.Equal(t, 1, r1.Advance(1))
		require.True(t, signalled(t, b.Scheduled(), time.Second))
		require.Equal(t, 1, r2.Advance(1))
	})
}

// ---- Credits ----

func TestCreditsNeverExceedTheLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 4
		var maxSeen atomic.Int64
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", CreditLimit: limit}, func(x *drv) {
			x.onRun = func(j *sched.Job) {
				c := d.s.Credits() // includes j
				assert.LessOrEqual(t, c, int64(limit), "credits on the hardware")
				assert.GreaterOrEqual(t, c, int64(j.Credits()))
				for m := maxSeen.Load(); c > m && !maxSeen.CompareAndSwap(m, c); m = maxSeen.Load() {
				}
			}
		})
		rng := rand.New(rand.NewPCG(1, 1))
		var jobs []*sched.Job
		for range 8 {
			e := d.entity(t, sched.PriorityNormal)
			for range 50 {
				j, err := e.NewJob(uint32(1+rng.IntN(limit)), &work{dur: time.Duration(10+rng.IntN(90)) * time.Microsecond})
				require.NoError(t, err)
				submit(t, j)
				jobs = append(jobs, j)
			}
		}
		ctx := within(t, time.Second)
		for _, j := range jobs {
			require.NoError(t, j.Finished().Wait(ctx))
			require.NoError(t, j.Finished().Error())
		}
		synctest.Wait()
		require.Equal(t, int64(limit), maxSeen.Load(), "the ring was never full")
		require.Zero(t, d.s.Credits())
	})
}

func TestJobWaitsForEnoughCredits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 4})
		a, err := d.entity(t, sched.PriorityNormal).NewJob(3, &work{})
		require.NoError(t, err)
		submitRun(t, a)
		b, err := d.entity(t, sched.PriorityNormal).NewJob(2, &work{})
		require.NoError(t, err)
		submit(t, b)
		require.False(t, signalled(t, b.Scheduled(), time.Second), "2 credits ran with 1 free")
		require.Equal(t, int64(3), d.s.Credits())
		d.complete(1)
		require.True(t, signalled(t, b.Scheduled(), time.Second))
		require.Equal(t, int64(2), d.s.Credits())
		d.complete(1)
		synctest.Wait()
		require.Zero(t, d.s.Credits())
	})
}

// ---- Completion and errors ----

func TestFinishedCarriesTheHardwareError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := new(events)
		r := newRing(t, schedtest.Config{Tracer: ev})
		e := r.NewEntity(t, sched.PriorityNormal)
		bad, good := r.NewJob(t, e), r.NewJob(t, e)
		bad.Duration, bad.Err = time.Millisecond, errHW
		good.Duration = time.Millisecond
		require.NoError(t, bad.Submit())
		require.NoError(t, good.Submit())
		require.True(t, signalled(t, good.Finished(), time.Second))
		require.ErrorIs(t, bad.Finished().Error(), errHW)
		require.ErrorIs(t, bad.Hardware().Error(), errHW)
		require.NoError(t, good.Finished().Error())
		require.ErrorIs(t, e.Error(), nil, "Error is the last scheduled job's")
		require.Same(t, bad.Hardware(), bad.Parent())
		for _, x := range ev.get() {
			if x.Kind == sched.EventDone && x.Job == bad.Seqno() {
				require.ErrorIs(t, x.Err, errHW)
			}
		}
	})
}

func TestEntityErrorIsTheLastScheduledJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{})
		e := r.NewEntity(t, sched.PriorityNormal)
		require.NoError(t, e.Error())
		j := r.NewJob(t, e)
		j.Duration, j.Err = time.Millisecond, errHW
		require.NoError(t, j.Submit())
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.ErrorIs(t, e.Error(), errHW)
	})
}

func TestRunJobErrorCompletesTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx"}, func(d *drv) {
			d.run = func(*sched.Job) (*fence.Fence, error) { return nil, errHW }
		})
		e := d.entity(t, sched.PriorityNormal)
		j := d.job(t, e, time.Millisecond)
		submit(t, j)
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.ErrorIs(t, j.Finished().Error(), errHW)
		require.True(t, j.Scheduled().IsSignaled())
		require.Nil(t, j.Parent())
		synctest.Wait()
		require.Equal(t, int32(1), payload(j).freed.Load())
		require.Zero(t, d.s.Credits())
		require.Equal(t, sched.Stats{Jobs: 1, Errors: 1}, e.Stats())
	})
}

// A driver may cancel a job on its finished fence itself, as amdgpu's run_job
// does: the job completes with that error, counted in Stats and, with a tracer,
// in the done event; an error the scheduler set (a guilty entity's job) is
// counted too.
func TestErrorSetOnTheFinishedFenceIsCounted(t *testing.T) {
	errDrv := errors.New("driver: vram lost")
	for _, traced := range []bool{false, true} {
		t.Run(fmt.Sprintf("traced=%v", traced), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := sched.Config{Name: "gfx"}
				ev := &events{}
				if traced {
					cfg.Tracer = ev
				}
				d := newDrv(t, cfg, func(x *drv) {
					x.run = func(j *sched.Job) (*fence.Fence, error) {
						if payload(j).dur == 0 {
							_ = j.Finished().SetError(errDrv)
						}
						return nil, nil
					}
				})
				e := d.entity(t, sched.PriorityNormal)
				ok, bad := d.job(t, e, time.Millisecond), d.job(t, e, 0)
				submit(t, ok)
				submit(t, bad)
				require.True(t, signalled(t, bad.Finished(), time.Second))
				synctest.Wait()
				require.NoError(t, ok.Finished().Error())
				require.ErrorIs(t, bad.Finished().Error(), errDrv)
				require.Equal(t, sched.Stats{Jobs: 2, Errors: 1}, e.Stats())

				e.SetGuilty()
				g := d.job(t, e, time.Millisecond)
				submit(t, g)
				require.True(t, signalled(t, g.Finished(), time.Second))
				synctest.Wait()
				require.ErrorIs(t, g.Finished().Error(), sched.ErrCanceled)
				require.Equal(t, sched.Stats{Jobs: 3, Errors: 2}, e.Stats())

				if traced {
					var errs []error
					for _, x := range ev.get() {
						if x.Kind == sched.EventDone {
							errs = append(errs, x.Err)
						}
					}
					require.Equal(t, []error{nil, errDrv, sched.ErrCanceled}, errs)
				}
			})
		})
	}
}

func TestRunJobNilFenceCompletesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx"}, func(d *drv) {
			d.run = func(*sched.Job) (*fence.Fence, error) { return nil, nil }
		})
		e := d.entity(t, sched.PriorityNormal)
		j := d.job(t, e, time.Millisecond)
		start := time.Now()
		submit(t, j)
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.Zero(t, time.Since(start))
		require.NoError(t, j.Finished().Error())
		require.Nil(t, j.Parent())
		synctest.Wait()
		require.Equal(t, int32(1), payload(j).freed.Load())
	})
}

func TestParentIsSetWhenScheduledSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{})
		e := r.NewEntity(t, sched.PriorityNormal)
		for range 50 {
			j := r.NewJob(t, e)
			require.NoError(t, j.Submit())
			require.NoError(t, j.WaitScheduled(t.Context()))
			// drm_sched_fence_scheduled stores the parent before it signals.
			require.NotNil(t, j.Parent())
			require.Same(t, j.Hardware(), j.Parent())
		}
		require.Equal(t, 50, r.Advance(50))
	})
}

// The scheduled fence is stamped when RunJob returns, as
// drm_sched_fence_scheduled() runs after run_job; a job whose hardware was done
// by then completes at that same reading, with no GPU time, and one whose
// hardware finishes later has the GPU time from there.
func TestScheduledIsStampedWhenRunJobReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const inRunJob, onHW = 3 * time.Millisecond, 5 * time.Millisecond
		d := newDrv(t, sched.Config{Name: "gfx"}, func(x *drv) {
			x.run = func(j *sched.Job) (*fence.Fence, error) {
				time.Sleep(inRunJob) // virtual time: RunJob takes a while
				hw := x.put(j)
				if payload(j).dur == 0 {
					x.unlink(j)
					_ = hw.Signal() // done before RunJob returns
				}
				return hw, nil
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		stamp := func(f *fence.Fence) time.Duration {
			t.Helper()
			ts, ok := f.Timestamp()
			require.True(t, ok)
			return ts.Sub(time.Time{})
		}

		instant := d.job(t, e, 0)
		start := time.Now()
		submit(t, instant)
		require.True(t, signalled(t, instant.Finished(), time.Second))
		want := start.Add(inRunJob).Sub(time.Time{})
		require.Equal(t, want, stamp(instant.Scheduled()))
		require.Equal(t, want, stamp(instant.Finished()))
		synctest.Wait()
		require.Zero(t, e.Stats().Runtime)

		later := d.job(t, e, onHW)
		start = time.Now()
		submit(t, later)
		require.True(t, signalled(t, later.Finished(), time.Second))
		require.Equal(t, start.Add(inRunJob).Sub(time.Time{}), stamp(later.Scheduled()))
		require.Equal(t, start.Add(inRunJob+onHW).Sub(time.Time{}), stamp(later.Finished()))
		synctest.Wait()
		require.Equal(t, onHW, e.Stats().Runtime)
	})
}

func TestEntityJobsFinishInSeqnoOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{CreditLimit: 3})
		var ents []*sched.Entity
		for p := range 4 {
			ents = append(ents, r.NewEntity(t, sched.Priority(p)))
		}
		log := newOrderLog()
		rng := rand.New(rand.NewPCG(4, 4))
		var jobs []*schedtest.Job
		for range 400 {
			j := r.NewJob(t, ents[rng.IntN(len(ents))])
			j.Duration = time.Duration(1+rng.IntN(100)) * time.Microsecond
			if len(jobs) > 0 && rng.IntN(3) == 0 {
				require.NoError(t, j.AddDependency(jobs[rng.IntN(len(jobs))].Finished()))
			}
			require.NoError(t, j.Submit())
			log.watch(t, j.Job)
			jobs = append(jobs, j)
			if rng.IntN(8) == 0 {
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			}
		}
		ctx := within(t, time.Second)
		for _, j := range jobs {
			require.NoError(t, j.Finished().Wait(ctx))
		}
		synctest.Wait() // the last callbacks run after the waiters wake
		log.requireInOrder(t)
		require.Equal(t, int64(len(jobs)), log.n.Load())
	})
}

// ---- TDR ----

func TestTimeoutCountsFromTheHardware(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var mu sync.Mutex
		var fired []time.Duration
		start := time.Now()
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
			x.timedOut = func(j *sched.Job) sched.Status {
				mu.Lock()
				fired = append(fired, time.Since(start))
				mu.Unlock()
				return d.resetJob(j)
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		a, b := d.job(t, e, 0), d.job(t, e, 0)
		submit(t, a)
		submit(t, b)
		require.True(t, signalled(t, b.Finished(), time.Second))
		// a at one timeout; the timer is then re-armed for b, a full timeout.
		require.Equal(t, []time.Duration{timeout, 2 * timeout}, fired)
		for _, j := range []*sched.Job{a, b} {
			require.ErrorIs(t, j.Finished().Error(), sched.ErrTimedOut)
			require.True(t, payload(j).timedOut.Load())
		}

		// A job that finishes in time is never timed out, and the next one's
		// timeout counts from when it finished.
		c, x := d.job(t, e, timeout/2), d.job(t, e, 0)
		submit(t, c)
		submit(t, x)
		mark := time.Since(start)
		require.True(t, signalled(t, x.Finished(), time.Second))
		require.NoError(t, c.Finished().Error())
		require.Equal(t, []time.Duration{timeout, 2 * timeout, mark + timeout/2 + timeout}, fired)
	})
}

// The head job's timeout starts when it goes on the pending list, before RunJob,
// as drm_sched_job_begin() starts the timer: time spent in RunJob counts.
func TestTimeoutOfTheHeadCountsFromBeforeRunJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout, inRunJob = 10 * time.Millisecond, 4 * time.Millisecond
		var fired atomic.Int64
		start := time.Now()
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
			x.run = func(j *sched.Job) (*fence.Fence, error) {
				time.Sleep(inRunJob)
				return x.put(j), nil // hangs
			}
			x.timedOut = func(j *sched.Job) sched.Status {
				fired.CompareAndSwap(0, int64(time.Since(start)))
				return d.resetJob(j)
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		j := d.job(t, e, 0)
		submit(t, j)
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.Equal(t, timeout, time.Duration(fired.Load()))
		require.ErrorIs(t, j.Finished().Error(), sched.ErrTimedOut)
	})
}

func TestStatusDeviceGoneDoesNotRearmTheTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var mu sync.Mutex
		var fired []*sched.Job
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
			x.timedOut = func(j *sched.Job) sched.Status {
				mu.Lock()
				fired = append(fired, j)
				mu.Unlock()
				d.resetJob(j)
				return sched.StatusDeviceGone
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		a, b := d.job(t, e, 0), d.job(t, e, 0)
		submit(t, a)
		submit(t, b)
		require.True(t, signalled(t, a.Finished(), time.Second))
		require.False(t, signalled(t, b.Finished(), 100*timeout), "the timer was re-armed after device gone")
		require.Equal(t, names([]*sched.Job{a}), names(fired))

		// A new job begins: the timer runs again, for the head (b).
		c := d.job(t, e, 0)
		submit(t, c)
		begun := time.Now()
		require.True(t, signalled(t, b.Finished(), 2*timeout))
		require.LessOrEqual(t, time.Since(begun), timeout)
		require.Equal(t, names([]*sched.Job{a, b}), names(fired))
		synctest.Wait() // c's timer started before RunJob put it on the ring
		require.Equal(t, 1, d.complete(1))
		require.True(t, signalled(t, c.Finished(), time.Second))
		require.NoError(t, c.Finished().Error())
	})
}

// A driver that stops, resets and starts the scheduler inside TimedOutJob and then
// answers StatusDeviceGone keeps the timer that Start armed: the kernel's
// drm_sched_job_timedout only skips its own re-arm for -ENODEV.
func TestStatusDeviceGoneKeepsTheTimerStartArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var calls atomic.Int32
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
			x.timedOut = func(bad *sched.Job) sched.Status {
				n := calls.Add(1)
				d.s.Stop(bad)
				d.reset()
				d.s.ResubmitJobs() // new hardware fences: both jobs pending again, hung
				d.s.Start(nil)
				if n == 1 {
					return sched.StatusDeviceGone
				}
				return sched.StatusReset
			}
		})
		e := d.entity(t, sched.PriorityNormal)
		a, b := d.job(t, e, 0), d.job(t, e, 0)
		submitRun(t, a)
		submitRun(t, b)
		time.Sleep(timeout)
		synctest.Wait()
		require.Equal(t, int32(1), calls.Load())
		time.Sleep(timeout)
		synctest.Wait()
		require.Equal(t, int32(2), calls.Load(), "the timer Start armed was switched off by StatusDeviceGone")
		require.Equal(t, 2, d.complete(2))
		synctest.Wait()
	})
}

func TestStatusNoHangKeepsTheJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var calls atomic.Int32
		d := newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
			x.timedOut = func(*sched.Job) sched.Status { calls.Add(1); return sched.StatusNoHang }
		})
		e := d.entity(t, sched.PriorityNormal)
		a := d.job(t, e, 0)
		submit(t, a)
		time.Sleep(3*timeout + timeout/2)
		require.Equal(t, int32(3), calls.Load(), "re-armed after each false alarm")
		require.Equal(t, names([]*sched.Job{a}), names(d.s.Pending()), "back at the head of the pending list")
		require.False(t, a.Finished().IsSignaled())
		require.Equal(t, 1, d.complete(1))
		require.True(t, signalled(t, a.Finished(), time.Second))
		require.NoError(t, a.Finished().Error())
		synctest.Wait()
		require.Equal(t, int32(1), payload(a).freed.Load())
		require.Empty(t, d.s.Pending())
	})
}

func TestFaultFiresTheTimeoutAtOnce(t *testing.T) {
	for name, timeout := range map[string]time.Duration{"timer off": 0, "long timeout": time.Hour} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var at atomic.Pointer[time.Time]
				var d *drv
				d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout}, func(x *drv) {
					x.timedOut = func(j *sched.Job) sched.Status {
						now := time.Now()
						at.Store(&now)
						return d.resetJob(j)
					}
				})
				a := d.job(t, d.entity(t, sched.PriorityNormal), 0)
				submit(t, a)
				time.Sleep(10 * time.Second)
				require.Nil(t, at.Load(), "the TDR fired without a fault")
				faulted := time.Now()
				d.s.Fault()
				synctest.Wait()
				require.NotNil(t, at.Load(), "Fault did not fire the TDR")
				require.Equal(t, faulted, *at.Load())
				require.ErrorIs(t, a.Finished().Error(), sched.ErrTimedOut)
			})
		})
	}
}

func TestStopAndStartInTimedOutJob(t *testing.T) {
	errReset := errors.New("test: lost in reset")
	for _, tc := range []struct {
		name  string
		errno error
		want  error
	}{{"errno", errReset, errReset}, {"no errno", nil, sched.ErrCanceled}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const timeout = 100 * time.Millisecond
				var d *drv
				var stopped atomic.Bool
				d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout, CreditLimit: 3}, func(x *drv) {
					x.timedOut = func(bad *sched.Job) sched.Status {
						d.s.Stop(bad)
						stopped.Store(d.s.IsStopped())
						d.reset() // the hardware forgets its jobs; their old fences no longer matter
						d.s.Start(tc.errno)
						return sched.StatusReset
					}
				})
				e1, e2 := d.entity(t, sched.PriorityNormal), d.entity(t, sched.PriorityNormal)
				bad, other, done := d.job(t, e1, 0), d.job(t, e2, 0), d.job(t, e2, 0)
				for _, j := range []*sched.Job{bad, other, done} {
					submitRun(t, j)
				}
				// done completes out of order: finished, but not yet freed, since the
				// free worker retires from the head only.
				d.completeJob(done, nil)
				synctest.Wait()
				require.Equal(t, names([]*sched.Job{bad, other, done}), names(d.s.Pending()))

				require.True(t, signalled(t, bad.Finished(), 2*timeout))
				require.True(t, signalled(t, other.Finished(), time.Second))
				synctest.Wait()
				require.True(t, stopped.Load(), "Stop did not pause submission")
				require.False(t, d.s.IsStopped(), "Start did not resume submission")
				for _, j := range []*sched.Job{bad, other} {
					require.ErrorIs(t, j.Finished().Error(), tc.want, "a job that lost its hardware fence")
				}
				require.NoError(t, done.Finished().Error())
				synctest.Wait()
				for _, j := range []*sched.Job{bad, other, done} {
					require.Equal(t, int32(1), payload(j).freed.Load(), "FreeJob of job %d", j.Seqno())
				}
				require.Zero(t, d.s.Credits())
				require.Empty(t, d.s.Pending())

				// Submission works after the reset.
				next := d.job(t, e1, time.Millisecond)
				submit(t, next)
				require.True(t, signalled(t, next.Finished(), time.Second))
				require.NoError(t, next.Finished().Error())
			})
		})
	}
}

func TestResubmitJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		var d *drv
		d = newDrv(t, sched.Config{Name: "gfx", Timeout: timeout, CreditLimit: 3, HangLimit: 0}, func(x *drv) {
			x.timedOut = func(bad *sched.Job) sched.Status {
				d.s.Stop(bad)
				d.s.IncreaseKarma(bad)
				d.reset()
				d.s.ResubmitJobs() // deprecated, but drivers still use it
				d.s.Start(nil)
				return sched.StatusReset
			}
		})
		guilty, innocent := d.entity(t, sched.PriorityNormal), d.entity(t, sched.PriorityNormal)
		guilty.ShareGuilty(new(atomic.Bool))
		innocent.ShareGuilty(new(atomic.Bool))
		bad, other, bad2 := d.job(t, guilty, 0), d.job(t, innocent, 0), d.job(t, guilty, 0)
		start := time.Now()
		for _, j := range []*sched.Job{bad, other, bad2} {
			submitRun(t, j)
		}
		time.Sleep(timeout - time.Since(start))
		synctest.Wait()
		for _, j := range []*sched.Job{bad, other, bad2} {
			require.Equal(t, int32(2), payload(j).runs.Load(), "job %d was not run again", j.Seqno())
			require.False(t, j.Finished().IsSignaled(), "a resubmitted job completed before its new hardware fence")
		}
		require.Equal(t, 1, bad.Karma())
		require.True(t, guilty.IsGuilty())
		require.Equal(t, 3, d.onRing())

		require.Equal(t, 3, d.complete(3))
		synctest.Wait()
		require.ErrorIs(t, bad.Finished().Error(), sched.ErrCanceled, "the guilty job")
		require.ErrorIs(t, bad2.Finished().Error(), sched.ErrCanceled, "a job of the guilty context")
		require.NoError(t, other.Finished().Error(), "an innocent job")
		for _, j := range []*sched.Job{bad, other, bad2} {
			require.Equal(t, int32(1), payload(j).freed.Load())
		}
		require.Zero(t, d.s.Credits())
	})
}

// IncreaseKarma counts karma for a job below kernel priority, and sets its
// entity's guilty flag only if the driver gave it one, as drm_sched_increase_karma
// does with entity->guilty: a flag shared by two entities (one context) marks
// both, and an entity without one is never marked.
func TestIncreaseKarmaMakesTheEntityGuilty(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prio   sched.Priority
		flag   bool
		karma  int
		guilty bool
	}{
		{"normal, guilty flag", sched.PriorityNormal, true, 1, true},
		{"normal, no guilty flag", sched.PriorityNormal, false, 1, false},
		{"kernel, guilty flag", sched.PriorityKernel, true, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var d *drv
				d = newDrv(t, sched.Config{Name: "gfx", Timeout: 100 * time.Millisecond}, func(x *drv) {
					x.timedOut = func(j *sched.Job) sched.Status {
						d.s.IncreaseKarma(j)
						return d.resetJob(j)
					}
				})
				e, sibling := d.entity(t, tc.prio), d.entity(t, tc.prio)
				if tc.flag {
					ctxGuilty := new(atomic.Bool) // one context, two entities
					e.ShareGuilty(ctxGuilty)
					sibling.ShareGuilty(ctxGuilty)
				}
				a := d.job(t, e, 0)
				submit(t, a)
				require.True(t, signalled(t, a.Finished(), time.Second))
				require.ErrorIs(t, a.Finished().Error(), sched.ErrTimedOut)
				require.Equal(t, tc.guilty, e.IsGuilty())
				require.Equal(t, tc.guilty, sibling.IsGuilty(), "the context's other entity shares the flag")
				require.Equal(t, tc.karma, a.Karma())

				b := d.job(t, e, time.Millisecond)
				submit(t, b)
				require.True(t, signalled(t, b.Finished(), time.Second))
				require.Equal(t, int32(1), payload(b).runs.Load(), "a guilty entity's job still goes through RunJob")
				if tc.guilty {
					require.ErrorIs(t, b.Finished().Error(), sched.ErrCanceled)
				} else {
					require.NoError(t, b.Finished().Error())
				}
			})
		})
	}
}

// ---- Close and the work queue ----

func TestCloseCancelsJobsOnTheHardwareNewestFirst(t *testing.T) {
	for _, noCancel := range []bool{false, true} {
		t.Run(map[bool]string{false: "CancelJob", true: "no CancelJob"}[noCancel], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := newDrv(t, sched.Config{Name: "gfx"}, func(d *drv) { d.noCancel = noCancel })
				e := d.entity(t, sched.PriorityNormal)
				jobs := []*sched.Job{d.job(t, e, 0), d.job(t, e, 0), d.job(t, e, 0)}
				for _, j := range jobs {
					submitRun(t, j)
				}
				e.Kill()
				d.close()
				if !noCancel {
					require.Equal(t, names([]*sched.Job{jobs[2], jobs[1], jobs[0]}), names(d.cancelled))
				}
				for _, j := range jobs {
					require.True(t, j.Finished().IsSignaled())
					require.ErrorIs(t, j.Finished().Error(), sched.ErrCanceled)
					require.Equal(t, int32(1), payload(j).freed.Load())
				}
				d.close() // idempotent
			})
		})
	}
}

func TestPushAfterCloseIsErrClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx"})
		e := d.entity(t, sched.PriorityNormal)
		j := d.job(t, e, time.Millisecond)
		require.NoError(t, j.Arm())
		d.close()
		require.ErrorIs(t, j.Push(), sched.ErrClosed)
		require.True(t, signalled(t, j.Finished(), time.Second))
		require.ErrorIs(t, j.Finished().Error(), sched.ErrSearch)
		require.Zero(t, payload(j).runs.Load())
		require.Equal(t, int32(1), payload(j).freed.Load())
	})
}

func TestWQueueStopPausesSubmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDrv(t, sched.Config{Name: "gfx"})
		e := d.entity(t, sched.PriorityNormal)
		d.s.WQueueStop()
		require.True(t, d.s.IsStopped())
		j := d.job(t, e, time.Millisecond)
		submit(t, j)
		require.False(t, signalled(t, j.Scheduled(), time.Second), "ran while stopped")
		d.s.WQueueStart()
		require.False(t, d.s.IsStopped())
		require.True(t, signalled(t, j.Finished(), time.Second))
	})
}

// ---- Policies ----

// blocked returns a ring of credit limit 1 whose one credit a hung job holds, so
// that jobs pushed next queue up until release is called.
func blocked(t *testing.T, policy sched.Policy, ev *events) (r *schedtest.Ring, release func()) {
	t.Helper()
	r = newRing(t, schedtest.Config{CreditLimit: 1, Policy: policy, Tracer: ev})
	blocker := r.NewJob(t, r.NewEntity(t, sched.PriorityKernel))
	require.NoError(t, blocker.Submit())
	require.True(t, signalled(t, blocker.Scheduled(), time.Second))
	return r, func() { require.Equal(t, 1, r.Advance(1)) }
}

func pushN(t *testing.T, r *schedtest.Ring, e *sched.Entity, n int) *schedtest.Job {
	t.Helper()
	var j *schedtest.Job
	for range n {
		j = r.NewJob(t, e)
		j.Duration = time.Millisecond
		require.NoError(t, j.Submit())
	}
	return j
}

func repeat(id uint64, n int) []uint64 { return slices.Repeat([]uint64{id}, n) }

func TestStrictPriority(t *testing.T) {
	for _, policy := range []sched.Policy{sched.PolicyFIFO, sched.PolicyRoundRobin} {
		t.Run(policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ev := new(events)
				r, release := blocked(t, policy, ev)
				lo, hi := r.NewEntity(t, sched.PriorityLow), r.NewEntity(t, sched.PriorityHigh)
				pushN(t, r, lo, 5) // first, so that age does not favour the high one
				time.Sleep(time.Microsecond)
				last := pushN(t, r, hi, 5)
				release()
				require.True(t, signalled(t, last.Finished(), time.Second))
				require.NoError(t, lo.Flush(t.Context()))
				synctest.Wait()
				want := append(repeat(hi.ID(), 5), repeat(lo.ID(), 5)...)
				require.Equal(t, want, ev.runs()[1:], "all of the high entity's jobs run first")
			})
		})
	}
}

// An entity that becomes ready while RunJob runs is picked next if the policy
// says so: the run worker's pick, made at the pop before RunJob, is dropped when
// the run queue changed since.
func TestEntityReadyDuringRunJobIsPickedNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		var mu sync.Mutex
		var order []uint64
		var first *sched.Job
		d := newDrv(t, sched.Config{Name: "gfx", Policy: sched.PolicyFIFO}, func(x *drv) {
			x.run = func(j *sched.Job) (*fence.Fence, error) {
				mu.Lock()
				order = append(order, j.Entity().ID())
				mu.Unlock()
				if j == first {
					<-gate
				}
				return nil, nil
			}
		})
		lo, hi := d.entity(t, sched.PriorityLow), d.entity(t, sched.PriorityHigh)
		var last *sched.Job
		for i := range 3 {
			last = d.job(t, lo, time.Millisecond)
			if i == 0 {
				first = last
			}
			submit(t, last)
		}
		synctest.Wait() // the run worker is in RunJob of lo's first job
		h := d.job(t, hi, time.Millisecond)
		submit(t, h)
		close(gate)
		require.True(t, signalled(t, last.Finished(), time.Second))
		require.True(t, signalled(t, h.Finished(), time.Second))
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, []uint64{lo.ID(), hi.ID(), lo.ID(), lo.ID()}, order)
	})
}

func TestSamePriorityOrder(t *testing.T) {
	for _, tc := range []struct {
		policy sched.Policy
		want   string
	}{
		{sched.PolicyFIFO, "aabb"},       // by the push time of each entity's head job
		{sched.PolicyRoundRobin, "abab"}, // round robin
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ev := new(events)
				r, release := blocked(t, tc.policy, ev)
				a, b := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityNormal)
				for _, e := range []*sched.Entity{a, a, b, b} {
					pushN(t, r, e, 1)
					time.Sleep(time.Microsecond)
				}
				release()
				require.NoError(t, a.Flush(t.Context()))
				require.NoError(t, b.Flush(t.Context()))
				synctest.Wait() // the last job left its queue: let it reach RunJob
				var got string
				for _, id := range ev.runs()[1:] {
					got += map[uint64]string{a.ID(): "a", b.ID(): "b"}[id]
				}
				require.Equal(t, tc.want, got)
				r.Advance(4)
			})
		})
	}
}

func TestSetPriorityReordersAQueuedEntity(t *testing.T) {
	for _, policy := range []sched.Policy{sched.PolicyFIFO, sched.PolicyRoundRobin} {
		t.Run(policy.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ev := new(events)
				r, release := blocked(t, policy, ev)
				n, l := r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityLow)
				last := pushN(t, r, n, 2)
				pushN(t, r, l, 2)
				require.NoError(t, l.SetPriority(sched.PriorityHigh))
				require.Equal(t, sched.PriorityHigh, l.Priority())
				release()
				require.True(t, signalled(t, last.Finished(), time.Second))
				synctest.Wait()
				require.Equal(t, []uint64{l.ID(), l.ID(), n.ID(), n.ID()}, ev.runs()[1:])
			})
		})
	}
}

func TestFairPolicyWeights(t *testing.T) {
	// Two entities that always have work, credit limit 1, 1 ms jobs: over 300 ms
	// the GPU time splits by the weights of sched_rq.c (vruntime grows by GPU time
	// shifted by 1, 2, 4, 7 for kernel, high, normal, low).
	for _, tc := range []struct {
		a, b sched.Priority
		want float64 // a's share
	}{
		{sched.PriorityNormal, sched.PriorityNormal, 0.5},
		{sched.PriorityKernel, sched.PriorityHigh, 2.0 / 3},
		{sched.PriorityHigh, sched.PriorityNormal, 4.0 / 5},
		{sched.PriorityNormal, sched.PriorityLow, 8.0 / 9},
		{sched.PriorityHigh, sched.PriorityLow, 32.0 / 33},
	} {
		t.Run(tc.a.String()+"-"+tc.b.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRing(t, schedtest.Config{CreditLimit: 1})
				a, b := r.NewEntity(t, tc.a), r.NewEntity(t, tc.b)
				pushN(t, r, a, 300)
				pushN(t, r, b, 300)
				time.Sleep(300 * time.Millisecond)
				ra, rb := a.Stats().Runtime, b.Stats().Runtime
				share := float64(ra) / float64(ra+rb)
				t.Logf("%v %v, %v %v: share %.3f", tc.a, ra, tc.b, rb, share)
				require.InDelta(t, tc.want, share, 0.1)
				a.Kill()
				b.Kill()
			})
		})
	}
}

// ---- Observability ----

func TestTracerEventsInOrderPerJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = 10 * time.Millisecond
		chk := lockdeptest.New(t)
		ev := new(events)
		r := newRing(t, schedtest.Config{Name: "gfx", Timeout: timeout, CreditLimit: 8, Tracer: ev, Checker: chk})
		x := fence.NewContext("test", "x", fence.WithChecker(chk)).New(1)
		ents := make([]*sched.Entity, 4)
		for i := range ents {
			ents[i] = r.NewEntity(t, sched.PriorityNormal)
		}
		// Two goroutines push fast while the run worker pops, so that a job can be
		// picked the moment it is visible.
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(g), 9))
				for i := range 200 {
					e := ents[2*g+rng.IntN(2)]
					j := r.NewJob(t, e)
					j.Duration = time.Duration(rng.IntN(50)) * time.Microsecond // 0: hangs, TDR
					if i%50 == 7 {
						_ = j.AddDependency(x)
					}
					assert.NoError(t, j.Submit())
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Millisecond)
		ents[3].Kill() // its queued jobs complete without running
		require.NoError(t, x.Signal())
		time.Sleep(time.Second)
		synctest.Wait()

		type key struct{ e, j uint64 }
		seq := make(map[key][]sched.Event)
		for _, e := range ev.get() {
			require.Equal(t, "gfx", e.Sched)
			k := key{e.Entity, e.Job}
			seq[k] = append(seq[k], e)
		}
		require.Len(t, seq, 400)
		kinds := make(map[sched.EventKind]int)
		for k, es := range seq {
			require.Equal(t, sched.EventQueued, es[0].Kind, "job %v: first event", k)
			var ran, done bool
			for i, e := range es {
				kinds[e.Kind]++
				if i > 0 {
					require.False(t, e.Time.Before(es[i-1].Time), "job %v: time went back", k)
				}
				switch e.Kind {
				case sched.EventQueued:
					require.Zero(t, i, "job %v queued twice", k)
				case sched.EventDependency:
					require.False(t, ran, "job %v: dependency wait after run", k)
					require.NotZero(t, e.DepContext)
				case sched.EventRun:
					require.False(t, ran || done, "job %v: run twice or after done", k)
					ran = true
				case sched.EventDone:
					require.False(t, done, "job %v: done twice", k)
					if !ran {
						require.ErrorIs(t, e.Err, sched.ErrSearch, "job %v: done without run", k)
					}
					done = true
				case sched.EventTimeout:
					require.True(t, ran, "job %v: timeout before run", k)
					require.Equal(t, sched.StatusReset, e.Status)
				}
			}
			require.True(t, done, "job %v never done: %v", k, es)
		}
		for _, k := range []sched.EventKind{sched.EventQueued, sched.EventDependency, sched.EventRun, sched.EventDone, sched.EventTimeout} {
			require.Positive(t, kinds[k], "no %v event", k)
		}
	})
}

func TestStatsAndFdinfo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{Name: "gfx", CreditLimit: 1})
		e := r.NewEntity(t, sched.PriorityNormal)
		require.Equal(t, sched.Stats{}, e.Stats())
		require.Equal(t, "drm-engine-gfx:\t0 ns\n", e.Fdinfo())
		var last *schedtest.Job
		for i := range 4 {
			last = r.NewJob(t, e)
			last.Duration = 2 * time.Millisecond
			if i == 1 {
				last.Err = errHW
			}
			require.NoError(t, last.Submit())
		}
		require.True(t, signalled(t, last.Finished(), time.Second))
		synctest.Wait()
		require.Equal(t, sched.Stats{Jobs: 4, Errors: 1, Runtime: 8 * time.Millisecond}, e.Stats())
		require.Equal(t, "drm-engine-gfx:\t8000000 ns\n", e.Fdinfo())
	})
}

// ---- Lockdep ----

func TestRunJobThatAllocatesIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk, col := lockdeptest.Collect(t)
		chk.Prime()
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk}, func(d *drv) {
			d.run = func(*sched.Job) (*fence.Fence, error) {
				chk.MightReclaim() // kmalloc(GFP_KERNEL) in run_job
				return nil, nil
			}
		})
		j := d.job(t, d.entity(t, sched.PriorityNormal), 0)
		submit(t, j)
		require.True(t, signalled(t, j.Finished(), time.Second))
		lockdeptest.RequireKinds(t, col, lockdep.KindReclaimInSignalling)
	})
}

func TestRunJobThatWaitsOnAFenceIsReportedWhenStrict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk, col := lockdeptest.Collect(t, lockdep.StrictSignalling())
		other := fence.NewContext("test", "other", fence.WithChecker(chk)).New(1)
		require.NoError(t, other.Signal())
		d := newDrv(t, sched.Config{Name: "gfx", Checker: chk}, func(d *drv) {
			d.run = func(*sched.Job) (*fence.Fence, error) {
				return nil, other.Wait(context.Background()) // dma_fence_wait in run_job
			}
		})
		j := d.job(t, d.entity(t, sched.PriorityNormal), 0)
		submit(t, j)
		require.True(t, signalled(t, j.Finished(), time.Second))
		lockdeptest.RequireKinds(t, col, lockdep.KindFenceWaitInSignalling)
	})
}

func TestCorrectDriverIsNotReported(t *testing.T) {
	// A primed, strict checker sees a whole life: allocation before arm,
	// dependencies, pipelining, credits, a hang and its reset, a kill, a close.
	synctest.Test(t, func(t *testing.T) {
		chk, col := lockdeptest.Collect(t, lockdep.StrictSignalling())
		chk.Prime()
		r := schedtest.New(t, schedtest.Config{Name: "gfx", CreditLimit: 2, Timeout: 10 * time.Millisecond, Checker: chk})
		ents := []*sched.Entity{r.NewEntity(t, sched.PriorityNormal), r.NewEntity(t, sched.PriorityHigh)}
		x := fence.NewContext("test", "x", fence.WithChecker(chk)).New(1)
		var jobs []*schedtest.Job
		for i := range 40 {
			chk.MightReclaim() // allocating before the point of no return is fine
			j := r.NewJob(t, ents[i%2])
			j.Duration = time.Duration(i%5) * time.Millisecond
			if len(jobs) > 0 {
				require.NoError(t, j.AddDependency(jobs[len(jobs)-1].Finished()))
			}
			if i == 30 {
				require.NoError(t, j.AddDependency(x))
			}
			require.NoError(t, j.Submit())
			jobs = append(jobs, j)
		}
		time.Sleep(50 * time.Millisecond)
		ents[1].Kill()
		require.NoError(t, x.Signal())
		require.NoError(t, jobs[len(jobs)-1].Finished().Wait(t.Context()))
		r.Close()
		lockdeptest.RequireClean(t, col)
	})
}

func TestResetJobsCreditsGoToTheNextJob(t *testing.T) {
	// A job the TDR resets leaves the pending list before its hardware fence
	// signals, so no free work retires it: its credits must still let the job
	// queued behind it run.
	synctest.Test(t, func(t *testing.T) {
		const timeout = 100 * time.Millisecond
		d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 1, Timeout: timeout})
		e := d.entity(t, sched.PriorityNormal)
		hung, next := d.job(t, e, 0), d.job(t, e, time.Millisecond)
		submit(t, hung)
		submit(t, next)
		start := time.Now()
		require.True(t, signalled(t, next.Finished(), time.Second), "the job behind a reset one never ran")
		require.Equal(t, timeout+time.Millisecond, time.Since(start))
		require.ErrorIs(t, hung.Finished().Error(), sched.ErrTimedOut)
		require.NoError(t, next.Finished().Error())
	})
}

func TestKillWhilePushingKeepsTheOrder(t *testing.T) {
	// A process killed while one of its threads submits: Kill runs while Push is
	// in progress. Jobs queued before the kill and jobs pushed after it must all
	// complete in seqno order, after the job on the hardware if there is one.
	for _, running := range []bool{false, true} {
		t.Run(map[bool]string{false: "head queued", true: "head running"}[running], func(t *testing.T) {
			for range 200 {
				synctest.Test(t, func(t *testing.T) {
					d := newDrv(t, sched.Config{Name: "gfx", CreditLimit: 1})
					e := d.entity(t, sched.PriorityNormal)
					if !running { // another entity holds the one credit: e's jobs stay queued
						submitRun(t, d.job(t, d.entity(t, sched.PriorityNormal), 0))
					}
					log := newOrderLog()
					var jobs []*sched.Job
					for i := range 20 {
						j := d.job(t, e, 0)
						require.NoError(t, j.Arm())
						log.watch(t, j)
						jobs = append(jobs, j)
						if i == 0 {
							require.NoError(t, j.Push())
						}
					}
					if running {
						require.True(t, signalled(t, jobs[0].Scheduled(), time.Second))
					}
					var wg sync.WaitGroup
					wg.Go(func() {
						for _, j := range jobs[1:] {
							if err := j.Push(); err != nil {
								assert.ErrorIs(t, err, sched.ErrKilled)
							}
						}
					})
					wg.Go(e.Kill)
					wg.Wait()
					d.complete(1)
					ctx := within(t, time.Second)
					for _, j := range jobs {
						require.NoError(t, j.Finished().Wait(ctx))
					}
					synctest.Wait() // the last callbacks run after the waiters wake
					log.requireInOrder(t)
					require.Len(t, log.of(e), len(jobs))
				})
			}
		})
	}
}

func TestMockRingCompletesInOrder(t *testing.T) {
	// schedtest promises completion in ring order, whatever completes a job: its
	// duration running out, Advance, or the TDR resetting the one ahead of it.
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{Timeout: time.Millisecond, CreditLimit: 8})
		e := r.NewEntity(t, sched.PriorityNormal)
		log := newOrderLog()
		rng := rand.New(rand.NewPCG(5, 5))
		var last *schedtest.Job
		for i := range 2000 {
			last = r.NewJob(t, e)
			if i%7 != 0 {
				last.Duration = time.Duration(1+rng.IntN(3)) * time.Microsecond
			}
			require.NoError(t, last.Arm())
			log.watch(t, last.Job)
			require.NoError(t, last.Push())
			if rng.IntN(50) == 0 {
				r.Advance(1 + rng.IntN(3))
			}
		}
		require.True(t, signalled(t, last.Finished(), time.Minute))
		synctest.Wait()
		log.requireInOrder(t)
	})
}

func TestRingCleanupDoesNotHangOnAStuckQueue(t *testing.T) {
	// A test that ends with a job hung on the ring and another queued behind it:
	// the entity's cleanup is drm_sched_entity_destroy, which flushes for at most a
	// second and then kills what is left, so the test ends.
	var hung, queued *schedtest.Job
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, schedtest.Config{CreditLimit: 1})
		e := r.NewEntity(t, sched.PriorityNormal)
		hung, queued = r.NewJob(t, e), r.NewJob(t, e)
		require.NoError(t, hung.Submit())
		require.NoError(t, queued.Submit())
		require.True(t, signalled(t, hung.Scheduled(), time.Second))
	})
	require.ErrorIs(t, queued.Finished().Error(), sched.ErrSearch)
	require.ErrorIs(t, hung.Finished().Error(), sched.ErrCanceled)
}
