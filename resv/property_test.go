package resv_test

import (
	"context"
	"math/bits"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/resv"
)

// A rapid state machine for one reservation object, held locked, against a plain
// model: a slice of {fence, usage} in slot order. Actions reserve, add (new, the
// same or an older fence of one of three contexts, with any usage), replace a
// context's fences, signal fences, unlock and relock (the reservation lapses), and
// copy another object's fences in. After each action the locked iteration must
// match the model exactly, in order and usages, for every usage asked; the
// lock-free readers must return the model's unsignalled subset.
//
// The model applies the kernel's rules: AddFence's replace rule (same context,
// same or weaker usage, not an older fence; or any signalled entry), appends only
// into reserved slots, reservations lapse at Unlock, and a Reserve that needs a
// new list drops signalled entries. When a Reserve needs a new list is the one
// implementation detail the model mirrors, as a CONFIG_DEBUG_MUTEXES kernel
// decides it: kmax is the list's max_fences, grown as dma_resv_reserve_fences grows
// it and cut to the number of entries at Unlock, so the first Reserve after an
// Unlock always makes a new list.
type resvMachine struct {
	chk       *lockdep.Checker
	o         *resv.Object
	ctxs      []*fence.Context
	made      [][]*fence.Fence // per context, every fence made on it
	signalled map[*fence.Fence]bool

	list      []entry // the model
	kmax, max int     // the list's max_fences; entries AddFence may fill

	held []*resv.Object // locked by this goroutine, for the cleanup after a failure
}

func newResvMachine(t *testing.T, chk *lockdep.Checker) *resvMachine {
	m := &resvMachine{chk: chk, o: resv.NewObject(chk), signalled: map[*fence.Fence]bool{}}
	for range 3 {
		m.ctxs = append(m.ctxs, newTimeline(chk))
		m.made = append(m.made, nil)
	}
	require.NoError(t, m.lock(m.o))
	return m
}

func (m *resvMachine) lock(o *resv.Object) error {
	if err := o.Lock(context.Background(), nil); err != nil {
		return err
	}
	m.held = append(m.held, o)
	return nil
}

func (m *resvMachine) unlock(o *resv.Object) {
	m.held = slices.DeleteFunc(m.held, func(x *resv.Object) bool { return x == o })
	o.Unlock()
}

// cleanup unlocks what a failed action left locked.
func (m *resvMachine) cleanup() {
	for _, o := range slices.Backward(m.held) {
		o.Unlock()
	}
}

func (m *resvMachine) newFence(ci int) *fence.Fence {
	f := m.ctxs[ci].Next()
	m.made[ci] = append(m.made[ci], f)
	return f
}

var usageGen = rapid.SampledFrom(allUsages[:])

func (m *resvMachine) unsignalled(l []entry) []entry {
	return slices.DeleteFunc(slices.Clone(l), func(e entry) bool { return m.signalled[e.f] })
}

func (m *resvMachine) reserve(t *rapid.T) {
	n := rapid.IntRange(0, 5).Draw(t, "n")
	err := m.o.Reserve(n)
	if n == 0 {
		if err == nil {
			t.Fatalf("Reserve(0) succeeded")
		}
		return
	}
	if err != nil {
		t.Fatalf("Reserve(%d): %v", n, err)
	}
	num := len(m.list)
	if m.kmax > 0 && num+n <= m.kmax { // fits the list: reserve exactly n more
		m.max = max(m.max, num+n)
		return
	}
	// A new list: max(4, roundup_pow_of_two(n)) or max(num+n, 2*max_fences).
	size := max(4, 1<<bits.Len(uint(n-1)))
	if m.kmax > 0 {
		size = max(num+n, 2*m.kmax)
	}
	m.list = m.unsignalled(m.list)
	m.kmax, m.max = size, len(m.list)+n
}

func (m *resvMachine) add(t *rapid.T) {
	ci := rapid.IntRange(0, len(m.ctxs)-1).Draw(t, "ctx")
	var f *fence.Fence
	if len(m.made[ci]) == 0 || rapid.Bool().Draw(t, "new") {
		f = m.newFence(ci)
	} else {
		f = m.made[ci][rapid.IntRange(0, len(m.made[ci])-1).Draw(t, "old")] // the same or an earlier fence
	}
	u := usageGen.Draw(t, "usage")
	err := m.o.AddFence(f, u)

	for i, e := range m.list {
		sameCtx := e.f.Context() == f.Context()
		if (sameCtx && e.u >= u && f.Seqno() >= e.f.Seqno()) || m.signalled[e.f] {
			if err != nil {
				t.Fatalf("AddFence(%v, %v) over entry %d: %v", f, u, i, err)
			}
			m.list[i] = entry{f, u}
			return
		}
	}
	if len(m.list) >= m.max {
		if err == nil {
			t.Fatalf("AddFence(%v, %v) appended without a reserved slot", f, u)
		}
		return
	}
	if err != nil {
		t.Fatalf("AddFence(%v, %v): %v", f, u, err)
	}
	m.list = append(m.list, entry{f, u})
}

func (m *resvMachine) replace(t *rapid.T) {
	ci := rapid.IntRange(0, len(m.ctxs)-1).Draw(t, "ctx")
	r := m.newFence(rapid.IntRange(0, len(m.ctxs)-1).Draw(t, "replacement ctx"))
	u := usageGen.Draw(t, "usage")
	if err := m.o.ReplaceFences(m.ctxs[ci].ID(), r, u); err != nil {
		t.Fatalf("ReplaceFences: %v", err)
	}
	for i, e := range m.list {
		if e.f.Context() == m.ctxs[ci] {
			m.list[i] = entry{r, u}
		}
	}
}

func (m *resvMachine) signal(t *rapid.T) {
	var pending []*fence.Fence
	for _, fs := range m.made {
		for _, f := range fs {
			if !m.signalled[f] {
				pending = append(pending, f)
			}
		}
	}
	if len(pending) == 0 {
		t.Skip("nothing to signal")
	}
	f := pending[rapid.IntRange(0, len(pending)-1).Draw(t, "fence")]
	if err := f.Signal(); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	m.signalled[f] = true
}

func (m *resvMachine) relock(t *rapid.T) {
	m.unlock(m.o)
	if err := m.lock(m.o); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	m.kmax, m.max = len(m.list), len(m.list) // reservations lapse at Unlock
}

// copyIn fills a fresh object with fences of distinct contexts (so that none
// replaces another), signals some, and copies it over the object, which is
// unlocked meanwhile: one goroutine holds one reservation lock at a time.
func (m *resvMachine) copyIn(t *rapid.T) {
	m.unlock(m.o)
	src := resv.NewObject(m.chk)
	if err := m.lock(src); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	cis := rapid.SliceOfNDistinct(rapid.IntRange(0, len(m.ctxs)-1), 0, len(m.ctxs), rapid.ID[int]).Draw(t, "src ctxs")
	var srcList []entry
	if len(cis) > 0 {
		if err := src.Reserve(len(cis)); err != nil {
			t.Fatalf("Reserve: %v", err)
		}
	}
	for _, ci := range cis {
		e := entry{m.newFence(ci), usageGen.Draw(t, "usage")}
		if err := src.AddFence(e.f, e.u); err != nil {
			t.Fatalf("AddFence to src: %v", err)
		}
		srcList = append(srcList, e)
		if rapid.Bool().Draw(t, "signal") {
			_ = e.f.Signal()
			m.signalled[e.f] = true
		}
	}
	m.unlock(src)
	if err := m.lock(m.o); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := resv.CopyFences(m.o, src); err != nil {
		t.Fatalf("CopyFences: %v", err)
	}
	m.list = m.unsignalled(srcList)
	m.kmax, m.max = len(m.list), len(m.list)
}

// check compares the object with the model for every usage.
func (m *resvMachine) check(t *rapid.T) {
	for _, q := range allUsages {
		var want []entry
		var wantFences []*fence.Fence
		for _, e := range m.list {
			if e.u <= q {
				want = append(want, e)
				if !m.signalled[e.f] {
					wantFences = append(wantFences, e.f)
				}
			}
		}
		var got []entry
		for f, u := range m.o.Fences(q) {
			got = append(got, entry{f, u})
		}
		if !slices.Equal(want, got) {
			t.Fatalf("Fences(%v):\n got %v\nwant %v", q, got, want)
		}
		if gotFences := m.o.GetFences(q); !slices.Equal(wantFences, gotFences) {
			t.Fatalf("GetFences(%v):\n got %v\nwant %v", q, gotFences, wantFences)
		}
		if sig := m.o.TestSignaled(q); sig != (len(wantFences) == 0) {
			t.Fatalf("TestSignaled(%v) = %t with %d unsignalled fences", q, sig, len(wantFences))
		}
	}
}

func TestObjectStateMachine(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := newResvMachine(t, lockdeptest.New(t))
		defer m.cleanup()
		rt.Repeat(map[string]func(*rapid.T){
			"reserve": m.reserve,
			"add":     m.add,
			"replace": m.replace,
			"signal":  m.signal,
			"relock":  m.relock,
			"copy":    m.copyIn,
			"":        m.check,
		})
	})
}
