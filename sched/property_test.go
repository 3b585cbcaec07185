package sched_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/schedtest"
)

// bubbleTB hands a synctest bubble's T to rapid without its concrete type: rapid
// asks a *testing.T for its Deadline, which a bubble's T must not be asked.
type bubbleTB struct{ testing.TB }

// smEntity is the state machine's view of one entity.
type smEntity struct {
	e      *sched.Entity
	jobs   []*schedtest.Job // pushed, in push (= seqno) order
	killed bool
	// neverRun are the jobs that had not reached the hardware when the entity was
	// killed: they must never run.
	neverRun []*schedtest.Job
}

// sm is a rapid state machine over one schedtest ring: push, kill, flush, set
// priority, advance the ring and let virtual time pass, in any order, checking the
// scheduler's invariants after every step.
type sm struct {
	t     *testing.T // the bubble's
	r     *schedtest.Ring
	limit uint32
	ents  []*smEntity
	all   []*schedtest.Job
	log   *orderLog
	over  atomic.Bool // a RunJob saw more credits than the limit
}

func newSM(t *testing.T, rt *rapid.T) *sm {
	m := &sm{t: t, log: newOrderLog()}
	m.limit = uint32(rapid.IntRange(1, 4).Draw(rt, "limit"))
	policy := sched.Policy(rapid.IntRange(0, int(sched.PolicyRoundRobin)).Draw(rt, "policy"))
	var s atomic.Pointer[sched.Scheduler]
	m.r = schedtest.New(t, schedtest.Config{
		CreditLimit: m.limit,
		Policy:      policy,
		Timeout:     5 * time.Millisecond,
		Checker:     lockdeptest.New(t),
		Tracer: sched.TracerFunc(func(ev sched.Event) {
			// EventRun comes after the job's credits were charged, before RunJob.
			if ev.Kind == sched.EventRun && s.Load().Credits() > int64(m.limit) {
				m.over.Store(true)
			}
		}),
	})
	s.Store(m.r.Sched)
	for i := range rapid.IntRange(1, 4).Draw(rt, "entities") {
		p := sched.Priority(rapid.IntRange(0, int(sched.PriorityLow)).Draw(rt, "priority"))
		e, err := m.r.Sched.NewEntity(p)
		if err != nil {
			rt.Fatalf("entity %d: %v", i, err)
		}
		m.ents = append(m.ents, &smEntity{e: e})
	}
	rt.Cleanup(m.teardown)
	return m
}

// teardown kills every entity, completes what is on the ring and closes it, so
// that every fence signals and no goroutine is left, whether or not the run
// failed. It drains the ring before Close because Close cancels the jobs still on
// it newest first, as drm_sched_fini does, which would signal one entity's
// finished fences out of order.
func (m *sm) teardown() {
	for _, x := range m.ents {
		x.e.Kill()
	}
	for synctest.Wait(); m.r.OnGPU() > 0; synctest.Wait() {
		m.r.Advance(m.r.OnGPU())
	}
	m.r.Close()
	synctest.Wait()
}

func (m *sm) pick(rt *rapid.T) *smEntity {
	return m.ents[rapid.IntRange(0, len(m.ents)-1).Draw(rt, "entity")]
}

func (m *sm) push(rt *rapid.T) {
	x := m.pick(rt)
	if x.killed {
		if _, err := x.e.NewJob(1, nil); err != sched.ErrKilled {
			rt.Fatalf("NewJob on a killed entity: %v, want ErrKilled", err)
		}
		return
	}
	j := m.r.NewJobCredits(m.t, x.e, uint32(rapid.IntRange(1, int(m.limit)).Draw(rt, "credits")))
	j.Duration = rapid.SampledFrom([]time.Duration{0, 100 * time.Microsecond, time.Millisecond, 3 * time.Millisecond}).Draw(rt, "duration")
	if len(m.all) > 0 && rapid.Bool().Draw(rt, "dependency") {
		dep := m.all[rapid.IntRange(0, len(m.all)-1).Draw(rt, "on")]
		if err := j.AddDependency(dep.Finished()); err != nil {
			rt.Fatalf("AddDependency: %v", err)
		}
	}
	if err := j.Arm(); err != nil {
		rt.Fatalf("Arm: %v", err)
	}
	m.log.watch(m.t, j.Job)
	if err := j.Push(); err != nil {
		rt.Fatalf("Push: %v", err)
	}
	x.jobs = append(x.jobs, j)
	m.all = append(m.all, j)
}

func (m *sm) kill(rt *rapid.T) {
	x := m.pick(rt)
	synctest.Wait()
	if !x.killed {
		for _, j := range x.jobs {
			if j.Hardware() == nil {
				x.neverRun = append(x.neverRun, j)
			}
		}
	}
	x.e.Kill()
	x.killed = true
}

func (m *sm) flush(rt *rapid.T) {
	x := m.pick(rt)
	if rapid.Bool().Draw(rt, "blocking") {
		d := time.Duration(rapid.IntRange(0, 5000).Draw(rt, "timeout")) * time.Microsecond
		ctx, cancel := context.WithTimeout(m.t.Context(), d)
		defer cancel()
		if err := x.e.Flush(ctx); err != nil && err != context.DeadlineExceeded {
			rt.Fatalf("Flush: %v", err)
		}
		return
	}
	// With everything settled, Flush returns at once exactly when no job of the
	// entity is left in its queue: all ran, or the entity was killed.
	synctest.Wait()
	want := error(nil)
	if !x.killed {
		for _, j := range x.jobs {
			if j.Hardware() == nil {
				want = context.Canceled
			}
		}
	}
	ctx, cancel := context.WithCancel(m.t.Context())
	cancel()
	if got := x.e.Flush(ctx); got != want {
		rt.Fatalf("Flush on a settled entity: %v, want %v", got, want)
	}
}

func (m *sm) priority(rt *rapid.T) {
	x := m.pick(rt)
	p := sched.Priority(rapid.IntRange(0, int(sched.PriorityLow)).Draw(rt, "priority"))
	if err := x.e.SetPriority(p); err != nil {
		rt.Fatalf("SetPriority: %v", err)
	}
}

func (m *sm) advance(rt *rapid.T) {
	n := rapid.IntRange(1, 3).Draw(rt, "n")
	synctest.Wait()
	on := m.r.OnGPU()
	if got := m.r.Advance(n); got != min(n, on) {
		rt.Fatalf("Advance(%d) with %d on the GPU completed %d", n, on, got)
	}
}

func (m *sm) sleep(rt *rapid.T) {
	time.Sleep(rapid.SampledFrom([]time.Duration{100 * time.Microsecond, time.Millisecond, 6 * time.Millisecond}).Draw(rt, "d"))
}

// check runs after every action, on a settled bubble.
func (m *sm) check(rt *rapid.T) {
	synctest.Wait()
	if m.over.Load() {
		rt.Fatalf("a job ran with more than %d credits on the ring", m.limit)
	}
	if c := m.r.Sched.Credits(); c < 0 || c > int64(m.limit) {
		rt.Fatalf("credits %d, limit %d", c, m.limit)
	}
	if n := m.r.OnGPU(); n > int(m.limit) {
		rt.Fatalf("%d jobs on the GPU, credit limit %d", n, m.limit)
	}
	for i, x := range m.ents {
		// One entity's jobs reach the hardware in push order: those that did are a
		// prefix of its jobs.
		ran := true
		for k, j := range x.jobs {
			hw := j.Hardware() != nil
			if hw && !ran {
				rt.Fatalf("entity %d: job %d ran before an earlier one", i, k+1)
			}
			ran = ran && hw
			m.checkDone(rt, j)
		}
		for _, j := range x.neverRun {
			if j.Hardware() != nil {
				rt.Fatalf("entity %d: job %d of a killed entity ran", i, j.Seqno())
			}
			if j.Finished().IsSignaled() && j.Finished().Error() != sched.ErrSearch {
				rt.Fatalf("entity %d: killed job %d finished with %v", i, j.Seqno(), j.Finished().Error())
			}
		}
	}
	if bad := m.log.violations(); len(bad) > 0 {
		rt.Fatalf("%s", bad[0])
	}
}

// checkDone checks a finished job's error against what happened to it.
func (m *sm) checkDone(rt *rapid.T, j *schedtest.Job) {
	f := j.Finished()
	if !f.IsSignaled() {
		return
	}
	if !j.Scheduled().IsSignaled() {
		rt.Fatalf("job %d finished before it was scheduled", j.Seqno())
	}
	var want error
	switch {
	case j.Hardware() == nil:
		want = sched.ErrSearch
	case j.TimedOut():
		want = sched.ErrTimedOut
	case j.Canceled():
		want = sched.ErrCanceled
	}
	if err := f.Error(); err != want {
		rt.Fatalf("job %d finished with %v, want %v", j.Seqno(), err, want)
	}
}

func TestStateMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rapid.Check(bubbleTB{t}, func(rt *rapid.T) {
			m := newSM(t, rt)
			rt.Repeat(map[string]func(*rapid.T){
				"":         m.check,
				"push":     m.push,
				"kill":     m.kill,
				"flush":    m.flush,
				"priority": m.priority,
				"advance":  m.advance,
				"sleep":    m.sleep,
			})
			// In the end every finished fence signals, in order, with its error.
			m.teardown()
			for _, j := range m.all {
				if !j.Finished().IsSignaled() {
					rt.Fatalf("job %d of entity %d never finished", j.Seqno(), j.Entity().ID())
				}
			}
			m.check(rt)
		})
	})
}
