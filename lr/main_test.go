package lr_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// TestMain fails the package if a test leaves a goroutine behind: a queue's
// scheduler workers, or a VM's preempt and rebind workers, that Close did not join.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// errInjected is the hardware error tests inject into a hook.
var errInjected = errors.New("injected hardware error")

// An event is one hook call the fake hardware saw, at the (virtual) time it saw it.
type event struct {
	what string
	at   time.Time
}

// engine is the fake hardware behind one LR queue. Run puts a job on its ring and
// the job then runs until the test calls Complete; Suspend, SuspendWait and Resume
// are instant unless the test makes SuspendWait take virtual time, holds it, or
// injects a failure. It records every hook call. Configure it before the queue
// runs, or under mu.
type engine struct {
	mu       sync.Mutex
	ran      []*lr.Job
	suspends int
	waits    int // SuspendWait calls
	resumes  int
	events   []event

	onRun      func(j *lr.Job) error // extra driver work in Run (a test's mistake)
	onWait     func(ctx context.Context) error
	suspendErr error         // the next Suspend fails with it (one-shot)
	waitErr    error         // the next SuspendWait fails with it (one-shot)
	waitFor    time.Duration // virtual time the queue takes to get off the hardware
	hold       chan struct{} // non-nil: SuspendWait blocks until it is closed
	resumed    chan struct{} // non-nil: gets a token on each Resume
}

func (e *engine) log(what string) {
	e.events = append(e.events, event{what, time.Now()})
}

func (e *engine) ops() lr.QueueOps {
	return lr.QueueOps{
		Run: func(j *lr.Job) error {
			e.mu.Lock()
			e.ran = append(e.ran, j)
			e.log("run")
			hook := e.onRun
			e.mu.Unlock()
			if hook != nil {
				return hook(j)
			}
			return nil
		},
		Suspend: func(*lr.Queue) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.suspends++
			e.log("suspend")
			err := e.suspendErr
			e.suspendErr = nil
			return err
		},
		SuspendWait: func(ctx context.Context, _ *lr.Queue) error {
			e.mu.Lock()
			e.waits++
			err := e.waitErr
			e.waitErr = nil
			d, hold, hook := e.waitFor, e.hold, e.onWait
			e.mu.Unlock()
			if hook != nil {
				if err := hook(ctx); err != nil {
					return err
				}
			}
			if d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if hold != nil {
				select {
				case <-hold:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			e.mu.Lock()
			e.log("suspended")
			e.mu.Unlock()
			return err
		},
		Resume: func(*lr.Queue) {
			e.mu.Lock()
			e.resumes++
			e.log("resume")
			c := e.resumed
			e.mu.Unlock()
			if c != nil {
				c <- struct{}{}
			}
		},
	}
}

// counts returns how often Suspend, SuspendWait and Resume were called.
func (e *engine) counts() (suspends, waits, resumes int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.suspends, e.waits, e.resumes
}

// timeline returns the events as "what +offset" from start.
func (e *engine) timeline(start time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.events))
	for i, ev := range e.events {
		out[i] = ev.what + " +" + ev.at.Sub(start).String()
	}
	return out
}

// runs returns the jobs Run was called for, in order.
func (e *engine) runs() []*lr.Job {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*lr.Job(nil), e.ran...)
}

// memory is the fake memory manager behind a VM: Revalidate brings an evicted
// buffer back, taking virtual time if the test says so.
type memory struct {
	mu          sync.Mutex
	revalidated []*resv.Object
	moveFor     time.Duration
	onMove      func(bo *resv.Object) error
	events      *engine // if set, revalidations are logged in its events
}

func (m *memory) ops() lr.VMOps {
	return lr.VMOps{Revalidate: func(bo *resv.Object) error {
		m.mu.Lock()
		d, hook, log := m.moveFor, m.onMove, m.events
		m.mu.Unlock()
		if hook != nil {
			if err := hook(bo); err != nil {
				return err
			}
		}
		if d > 0 {
			time.Sleep(d) // virtual time, inside a bubble
		}
		m.mu.Lock()
		m.revalidated = append(m.revalidated, bo)
		m.mu.Unlock()
		if log != nil {
			log.mu.Lock()
			log.log("revalidate")
			log.mu.Unlock()
		}
		return nil
	}}
}

func (m *memory) moves() []*resv.Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*resv.Object(nil), m.revalidated...)
}

// rig is one LR queue in one VM with one external buffer: the preempt fence is
// installed in the VM's reservation object and in the buffer.
type rig struct {
	chk *lockdep.Checker
	eng *engine
	mem *memory
	q   *lr.Queue
	vm  *lr.VM
	bo  *resv.Object
}

// newRig builds a rig reporting to chk, with a ring of ring slots; setup may
// configure the fakes before anything runs. Cleanup closes the VM and the queue.
func newRig(t testing.TB, chk *lockdep.Checker, ring int, setup ...func(*rig)) *rig {
	t.Helper()
	r := &rig{chk: chk, eng: &engine{}, mem: &memory{}}
	for _, f := range setup {
		f(r)
	}
	r.q = newQueue(t, chk, r.eng, ring)
	r.vm = lr.NewVM(r.mem.ops(), chk)
	t.Cleanup(r.vm.Close)
	r.bo = resv.NewObject(chk)
	ctx := context.Background()
	require.NoError(t, r.vm.AddBuffer(ctx, r.bo))
	require.NoError(t, r.vm.AddQueue(ctx, r.q))
	return r
}

// newQueue makes an LR queue driven by e; cleanup closes it.
func newQueue(t testing.TB, chk *lockdep.Checker, e *engine, ring int) *lr.Queue {
	t.Helper()
	q, err := lr.NewQueue(lr.QueueConfig{Name: "compute", RingSize: ring, Checker: chk, Ops: e.ops()})
	require.NoError(t, err)
	t.Cleanup(q.Close)
	return q
}

// fencesOf returns every fence in bo (signalled ones included) with its usage.
func fencesOf(t testing.TB, bo *resv.Object) map[*fence.Fence]resv.Usage {
	t.Helper()
	require.NoError(t, bo.Lock(context.Background(), nil))
	defer bo.Unlock()
	m := make(map[*fence.Fence]resv.Usage)
	for f, u := range bo.Fences(resv.Bookkeep) {
		m[f] = u
	}
	return m
}

// objects returns the VM's reservation object and the rig's buffer.
func (r *rig) objects() []*resv.Object { return []*resv.Object{r.vm.Resv, r.bo} }
