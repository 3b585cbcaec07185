package lockdep

import (
	"sync"
	"testing"
)

// Goroutine ids are never reused; the task table must forget goroutines that hold
// nothing, or a long-running program would grow it forever.
func TestTaskTableSweepsRetiredGoroutines(t *testing.T) {
	c := NewChecker(WithHandler(func(r *Report) { t.Errorf("unexpected report: %v", r) }))
	m := &Mutex{Class: NewClass("sweep.test"), Checker: c}
	const goroutines = 20 * sweepFloor
	for range goroutines {
		var wg sync.WaitGroup
		wg.Go(func() {
			m.Lock()
			m.Unlock()
		})
		wg.Wait()
	}
	c.tasksMu.Lock()
	live := c.tasks.Load().live
	c.tasksMu.Unlock()
	if live > 2*sweepFloor+1 {
		t.Fatalf("task table holds %d goroutines after %d came and went; want at most %d", live, goroutines, 2*sweepFloor+1)
	}
}

// A goroutine that holds a lock across a sweep keeps its task and its held lock.
func TestTaskTableSweepKeepsActiveGoroutines(t *testing.T) {
	c := NewChecker(WithHandler(func(r *Report) { t.Errorf("unexpected report: %v", r) }))
	held := &Mutex{Class: NewClass("sweep.held"), Checker: c}
	other := &Mutex{Class: NewClass("sweep.other"), Checker: c}
	held.Lock()
	for range 4 * sweepFloor {
		var wg sync.WaitGroup
		wg.Go(func() { other.Lock(); other.Unlock() })
		wg.Wait()
	}
	if got := c.Held(); len(got) != 1 || got[0].Class != "sweep.held" {
		t.Fatalf("held after sweeps: %+v", got)
	}
	held.Unlock()
}
