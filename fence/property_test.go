package fence_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// numCallbacks is how many Callback slots the state machine draws from; slots are
// reused once they have run or been removed.
const numCallbacks = 6

// fenceMachine drives one fence through random operations and checks it against
// a plain model: a flag, an error, and a FIFO of queued callbacks.
type fenceMachine struct {
	f   *fence.Fence
	cbs [numCallbacks]fence.Callback

	// What happened, recorded by the callbacks and the EnableSignaling hook.
	runs    [numCallbacks]int
	order   []int
	enables int

	// The model.
	stamps    bool // the context keeps timestamps: Signal records one
	signalled bool
	err       error
	queue     []int // queued callback slots, in the order added
	wantRuns  [numCallbacks]int
	wantOrder []int
}

var machineErrors = []error{nil, errorString("EIO"), errorString("ETIME"), errorString("ECANCELED")}

func newFenceMachine(chk *lockdep.Checker, stamps bool) *fenceMachine {
	m := &fenceMachine{stamps: stamps}
	opts := []fence.ContextOption{fence.WithOps(&fence.Ops{EnableSignaling: func(*fence.Fence) bool {
		m.enables++
		return true
	}})}
	if stamps {
		opts = append(opts, fence.WithTimestamps())
	}
	ctx := mockContextOn(chk, opts...)
	m.f = ctx.Next()
	return m
}

func (m *fenceMachine) callback(i int) fence.CallbackFunc {
	return func(f *fence.Fence, cb *fence.Callback) {
		if f != m.f || cb != &m.cbs[i] {
			panic("callback called with the wrong fence or Callback")
		}
		m.runs[i]++
		m.order = append(m.order, i)
	}
}

func (m *fenceMachine) AddCallback(t *rapid.T) {
	i := rapid.IntRange(0, numCallbacks-1).Draw(t, "cb")
	err := m.f.AddCallback(&m.cbs[i], m.callback(i))
	switch {
	case m.signalled:
		if !errors.Is(err, fence.ErrSignaled) {
			t.Fatalf("AddCallback(%d) on a signalled fence: %v, want ErrSignaled", i, err)
		}
	case slices.Contains(m.queue, i):
		if !errors.Is(err, fence.ErrInvalid) || errors.Is(err, fence.ErrSignaled) {
			t.Fatalf("AddCallback(%d) of a queued callback: %v, want ErrInvalid", i, err)
		}
	default:
		if err != nil {
			t.Fatalf("AddCallback(%d) on a pending fence: %v", i, err)
		}
		m.queue = append(m.queue, i)
	}
}

func (m *fenceMachine) RemoveCallback(t *rapid.T) {
	i := rapid.IntRange(0, numCallbacks-1).Draw(t, "cb")
	got := m.f.RemoveCallback(&m.cbs[i])
	k := slices.Index(m.queue, i)
	if got != (k >= 0) {
		t.Fatalf("RemoveCallback(%d) = %v, model queue %v", i, got, m.queue)
	}
	if k >= 0 {
		m.queue = slices.Delete(m.queue, k, k+1)
	}
}

func (m *fenceMachine) SetError(t *rapid.T) {
	e := rapid.SampledFrom(machineErrors).Draw(t, "err")
	err := m.f.SetError(e)
	switch {
	case e == nil || m.signalled:
		if !errors.Is(err, fence.ErrInvalid) {
			t.Fatalf("SetError(%v) signalled=%v: %v, want ErrInvalid", e, m.signalled, err)
		}
	default:
		if err != nil {
			t.Fatalf("SetError(%v): %v", e, err)
		}
		m.err = e
	}
}

func (m *fenceMachine) Signal(t *rapid.T) {
	err := m.f.Signal()
	if m.signalled {
		if !errors.Is(err, fence.ErrInvalid) {
			t.Fatalf("second Signal: %v, want ErrInvalid", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Signal: %v", err)
	}
	m.signalled = true
	for _, i := range m.queue {
		m.wantRuns[i]++
	}
	m.wantOrder = append(m.wantOrder, m.queue...)
	m.queue = nil
}

func (m *fenceMachine) EnableSignaling(*rapid.T) { m.f.EnableSignaling() }

func (m *fenceMachine) Status(t *rapid.T) {
	signalled, err := m.f.Status()
	if signalled != m.signalled {
		t.Fatalf("Status signalled = %v, model %v", signalled, m.signalled)
	}
	var want error
	if m.signalled {
		want = m.err
	}
	if err != want {
		t.Fatalf("Status error = %v, want %v", err, want)
	}
}

func (m *fenceMachine) IsSignaled(t *rapid.T) {
	if got := m.f.IsSignaled(); got != m.signalled {
		t.Fatalf("IsSignaled = %v, model %v", got, m.signalled)
	}
}

// WaitExpired waits with a context that is already done (a zero timeout, or an
// interrupted wait): ctx.Err() if pending, nil if signalled, and nothing changes
// (the invariants check that).
func (m *fenceMachine) WaitExpired(t *rapid.T) {
	var ctx context.Context
	var cancel context.CancelFunc
	if rapid.Bool().Draw(t, "cancelled") {
		ctx, cancel = context.WithCancel(context.Background())
		cancel()
	} else {
		ctx, cancel = context.WithDeadline(context.Background(), time.Unix(0, 0))
		defer cancel()
	}
	err := m.f.Wait(ctx)
	switch {
	case m.signalled && err != nil:
		t.Fatalf("Wait on a signalled fence: %v", err)
	case !m.signalled && err != ctx.Err():
		t.Fatalf("Wait on a pending fence with a done context: %v, want %v", err, ctx.Err())
	}
}

// check is the invariant run after every action.
func (m *fenceMachine) check(t *rapid.T) {
	if m.runs != m.wantRuns {
		t.Fatalf("callback runs %v, want %v", m.runs, m.wantRuns)
	}
	if !slices.Equal(m.order, m.wantOrder) {
		t.Fatalf("callbacks ran in order %v, want %v", m.order, m.wantOrder)
	}
	if m.enables > 1 {
		t.Fatalf("EnableSignaling hook called %d times", m.enables)
	}
	if m.f.Error() != m.err {
		t.Fatalf("Error() = %v, want %v", m.f.Error(), m.err)
	}
	if _, ok := m.f.Timestamp(); ok != (m.signalled && m.stamps) {
		t.Fatalf("Timestamp valid = %v, signalled %v, context keeps timestamps %v", ok, m.signalled, m.stamps)
	}
}

// TestFenceStateMachine checks random sequences of fence operations against the
// model: every accepted callback runs exactly once, in the order added, unless
// removed; refused ones never run; status, error and signalled state match.
func TestFenceStateMachine(t *testing.T) {
	chk := lockdeptest.New(t)
	rapid.Check(t, func(rt *rapid.T) {
		m := newFenceMachine(chk, rapid.Bool().Draw(rt, "timestamps"))
		rt.Repeat(map[string]func(*rapid.T){
			"AddCallback":     m.AddCallback,
			"RemoveCallback":  m.RemoveCallback,
			"SetError":        m.SetError,
			"Signal":          m.Signal,
			"EnableSignaling": m.EnableSignaling,
			"Status":          m.Status,
			"IsSignaled":      m.IsSignaled,
			"WaitExpired":     m.WaitExpired,
			"":                m.check,
		})
	})
}
