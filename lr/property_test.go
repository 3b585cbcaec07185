package lr_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// A property test of preempt/resume cycles: random sequences of pushes,
// completions, evictions, new buffers, injected preemption failures and timeouts,
// and hardware faults, on one VM with one or two LR queues, checked after every
// step against a plain model.
//
// How rapid and synctest compose: rapid draws the whole sequence first, in its
// own goroutine; each check then runs it inside a fresh synctest bubble
// (synctest.Test with the outer *testing.T), where synctest.Wait lets the VM's
// workers settle after each step. The bubble never fails its *testing.T on a
// broken invariant: it returns the violation, and rapid.T reports it outside the
// bubble, so that rapid can shrink the sequence.

type propOp struct {
	kind  string
	queue int // which queue (mod the number of queues)
	index int // which job or buffer (mod how many there are)
}

func (o propOp) String() string { return fmt.Sprintf("%s(q%d,%d)", o.kind, o.queue, o.index) }

var propKinds = []string{
	"push", "push", "push", "pushWait", "complete", "complete", "complete",
	"evict", "evict", "evict", "addBuffer", "failSuspend", "failWait", "timeout", "fault",
}

var errFault = errors.New("hardware fault")

// modelQueue is what the model expects of one queue.
type modelQueue struct {
	q   *lr.Queue
	eng *engine

	inflight []*lr.Job         // pushed and not completed, in push order
	want     map[*lr.Job]error // every completed job: the error its LR fence has
	jobs     []*lr.Job         // every job pushed
	cause    error             // why the queue was banned; nil: healthy
	armed    bool              // its current preempt fence is unsignalled
	pfErr    error             // the error of its current preempt fence, once signalled
	inject   string            // "suspend", "wait" or "timeout": the next preemption fails there
	seq      uint64            // seqno of the current preempt fence

	// Hook calls the engine must have seen.
	suspends, waits, resumes int
}

func (m *modelQueue) ban(cause error) {
	m.cause = cause
	for _, j := range m.inflight {
		m.want[j] = cause
	}
	m.inflight = nil
}

func TestPropertyPreemptResumeCycles(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		nq := rapid.IntRange(1, 2).Draw(rt, "queues")
		ring := rapid.IntRange(1, 3).Draw(rt, "ring")
		opGen := rapid.Custom(func(rt *rapid.T) propOp {
			return propOp{
				kind:  rapid.SampledFrom(propKinds).Draw(rt, "kind"),
				queue: rapid.IntRange(0, 1).Draw(rt, "queue"),
				index: rapid.IntRange(0, 7).Draw(rt, "index"),
			}
		})
		ops := rapid.SliceOfN(opGen, 1, 40).Draw(rt, "ops")

		var violation error
		synctest.Test(t, func(t *testing.T) {
			violation = runModel(t, nq, ring, ops)
		})
		if violation != nil {
			rt.Fatal(violation)
		}
	})
}

// runModel runs ops in the calling bubble and returns the first broken invariant.
func runModel(t *testing.T, nq, ring int, ops []propOp) error {
	ctx := context.Background()
	chk, col := lockdeptest.Collect(t)
	chk.Prime()
	mem := &memory{}
	vm := lr.NewVM(mem.ops(), chk)
	t.Cleanup(vm.Close)
	objs := []*resv.Object{vm.Resv}
	evicted := map[*resv.Object]bool{}
	killed := false // a preemption timed out: the VM and its queues are dead
	var mqs []*modelQueue
	for range nq {
		m := &modelQueue{eng: &engine{}, want: map[*lr.Job]error{}, armed: true, seq: 1}
		m.q = newQueue(t, chk, m.eng, ring)
		if err := vm.AddQueue(ctx, m.q); err != nil {
			return err
		}
		mqs = append(mqs, m)
	}

	check := func(step int, op propOp) error {
		for i, m := range mqs {
			where := fmt.Sprintf("step %d %v, queue %d", step, op, i)
			if got := m.q.Inflight(); got != len(m.inflight) || got > ring {
				return fmt.Errorf("%s: %d in flight, model %d, ring %d", where, got, len(m.inflight), ring)
			}
			s, w, r := m.eng.counts()
			if [3]int{s, w, r} != [3]int{m.suspends, m.waits, m.resumes} {
				return fmt.Errorf("%s: suspend/wait/resume calls %v, model %v", where,
					[3]int{s, w, r}, [3]int{m.suspends, m.waits, m.resumes})
			}
			if err := m.q.Err(); (err == nil) != (m.cause == nil) || !errors.Is(err, m.cause) {
				return fmt.Errorf("%s: queue error %v, model %v", where, err, m.cause)
			}
			pf := vm.PreemptFence(m.q)
			if pf.Seqno() != m.seq || pf.IsSignaled() == m.armed || pf.Triggered() == m.armed {
				return fmt.Errorf("%s: preempt fence %v triggered %v, model seqno %d armed %v",
					where, pf, pf.Triggered(), m.seq, m.armed)
			}
			if want := m.pfErr; m.armed {
				want = nil
			} else if err := pf.Error(); !errors.Is(err, want) || (err == nil) != (want == nil) {
				return fmt.Errorf("%s: preempt fence %v signalled with %v, model %v", where, pf, err, want)
			}
			for _, j := range m.jobs {
				want, done := m.want[j]
				sig, err := j.Done().Status()
				if sig != done || !errors.Is(err, want) || (err == nil) != (want == nil) {
					return fmt.Errorf("%s: job %d signalled %v with %v, model %v with %v",
						where, j.Seqno(), sig, err, done, want)
				}
			}
		}
		for k, bo := range objs {
			var want []*fence.Fence
			for _, m := range mqs {
				if m.armed {
					want = append(want, vm.PreemptFence(m.q).Fence)
				}
			}
			got := bo.GetFences(resv.Bookkeep)
			if len(got) != len(want) || !containsAll(got, want) {
				return fmt.Errorf("step %d %v: object %d holds pending %v, model %v", step, op, k, got, want)
			}
			if vm.IsEvicted(bo) != evicted[bo] {
				return fmt.Errorf("step %d %v: object %d evicted %v, model %v", step, op, k, vm.IsEvicted(bo), evicted[bo])
			}
		}
		if reps := col.Reports(); len(reps) > 0 {
			return fmt.Errorf("step %d %v: lockdep: %v", step, op, reps[0])
		}
		return nil
	}

	for step, op := range ops {
		m := mqs[op.queue%nq]
		switch op.kind {
		case "push", "pushWait":
			full := len(m.inflight) == ring
			var j *lr.Job
			var err error
			switch {
			case op.kind == "push":
				j, err = m.q.TryPush(step)
			case full && m.cause == nil:
				pctx, cancel := context.WithTimeout(ctx, time.Millisecond)
				start := time.Now()
				j, err = m.q.Push(pctx, step)
				cancel()
				if d := time.Since(start); d != time.Millisecond {
					return fmt.Errorf("step %d %v: Push on a full ring gave up after %v", step, op, d)
				}
			default:
				j, err = m.q.Push(ctx, step)
			}
			var want error
			switch {
			case m.cause != nil:
				want = lr.ErrBanned
			case full && op.kind == "push":
				want = lr.ErrWouldBlock
			case full:
				want = context.DeadlineExceeded
			}
			if !errors.Is(err, want) || (err == nil) != (want == nil) {
				return fmt.Errorf("step %d %v: push returned %v, model %v", step, op, err, want)
			}
			if j != nil {
				m.inflight = append(m.inflight, j)
				m.jobs = append(m.jobs, j)
			}
		case "complete":
			if len(m.inflight) == 0 {
				if len(m.jobs) > 0 { // a late second completion changes nothing
					m.jobs[op.index%len(m.jobs)].Complete(errInjected)
				}
				break
			}
			i := op.index % len(m.inflight)
			m.inflight[i].Complete(nil)
			m.want[m.inflight[i]] = nil
			m.inflight = slices.Delete(m.inflight, i, i+1)
		case "evict":
			bo := objs[op.index%len(objs)]
			if err := vm.Evict(ctx, bo); err != nil {
				return fmt.Errorf("step %d %v: %w", step, op, err)
			}
			// Every armed fence is in every object: the eviction preempts every
			// queue. A failure is the fence's own; a timeout kills the VM.
			timedOut := false
			for _, m := range mqs {
				if !m.armed {
					continue // banned, its fence signalled: nothing to wait for
				}
				m.suspends++
				m.armed = false
				m.pfErr = nil
				switch {
				case m.cause != nil: // faulted earlier: the preempt fence finds it reset
					m.pfErr = lr.ErrQueueReset
				case m.inject == "suspend":
					m.pfErr = errInjected
				case m.inject == "wait":
					m.waits++
					m.pfErr = errInjected
				case m.inject == "timeout":
					m.waits++
					m.pfErr = lr.ErrTimedOut
					timedOut = true
				default:
					m.waits++
				}
				m.inject = ""
			}
			resumed := false
			for _, m := range mqs {
				switch {
				case m.cause != nil:
				case timedOut:
					m.ban(lr.ErrTimedOut)
					killed = true
				default:
					m.resumes++
					m.seq++
					m.armed = true
					resumed = true
				}
			}
			if resumed {
				clear(evicted)
			} else {
				evicted[bo] = true
			}
		case "addBuffer":
			bo := resv.NewObject(chk)
			err := vm.AddBuffer(ctx, bo)
			if killed {
				if !errors.Is(err, lr.ErrBanned) {
					return fmt.Errorf("step %d %v: AddBuffer on a killed VM returned %v", step, op, err)
				}
				break
			}
			if err != nil {
				return fmt.Errorf("step %d %v: %w", step, op, err)
			}
			objs = append(objs, bo)
		case "failSuspend", "failWait", "timeout":
			if m.cause != nil {
				break
			}
			m.eng.mu.Lock()
			m.eng.suspendErr, m.eng.waitErr = nil, nil
			switch op.kind {
			case "failSuspend":
				m.eng.suspendErr, m.inject = errInjected, "suspend"
			case "failWait":
				m.eng.waitErr, m.inject = errInjected, "wait"
			default:
				m.eng.waitErr, m.inject = lr.ErrTimedOut, "timeout"
			}
			m.eng.mu.Unlock()
		case "fault":
			m.q.Fail(errFault)
			if m.cause == nil {
				m.ban(errFault)
				m.eng.mu.Lock()
				m.eng.suspendErr, m.eng.waitErr = nil, nil // a dead queue's suspension "succeeds"
				m.eng.mu.Unlock()
				m.inject = ""
			}
		}
		synctest.Wait()
		if err := check(step, op); err != nil {
			return err
		}
	}

	// Closing completes whatever is still in flight.
	for _, m := range mqs {
		m.q.Close()
		for _, j := range m.inflight {
			if !j.Done().IsSignaled() || j.Done().Error() == nil {
				return fmt.Errorf("close: job %d still pending or without an error", j.Seqno())
			}
		}
	}
	vm.Close()
	return nil
}

func containsAll(got, want []*fence.Fence) bool {
	for _, f := range want {
		if !slices.Contains(got, f) {
			return false
		}
	}
	return true
}
