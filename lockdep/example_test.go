package lockdep_test

import (
	"fmt"
	"sync"

	"github.com/gpusync/gpusync/lockdep"
)

// Two goroutines take the same two locks in opposite orders. They run one after the
// other, so nothing deadlocks, yet the second order is reported: lockdep learned A ->
// B from the first and sees B -> A close the cycle.
func Example_abba() {
	var reports lockdep.Collector
	c := lockdep.NewChecker(lockdep.WithHandler(reports.Handle))

	a := &lockdep.Mutex{Class: lockdep.NewClass("ring.lock"), Checker: c}
	b := &lockdep.Mutex{Class: lockdep.NewClass("vm.lock"), Checker: c}

	var wg sync.WaitGroup
	wg.Go(func() { // submission path: ring, then vm
		a.Lock()
		b.Lock()
		b.Unlock()
		a.Unlock()
	})
	wg.Wait()
	wg.Go(func() { // fault path: vm, then ring
		b.Lock()
		a.Lock()
		a.Unlock()
		b.Unlock()
	})
	wg.Wait()

	for _, r := range reports.Reports() {
		fmt.Println(r.Kind.Title())
		fmt.Println("cycle:", r.Cycle())
	}
	// Output:
	// possible circular locking dependency detected
	// cycle: [vm.lock ring.lock]
}

// A job's completion path (a fence signalling section) takes a lock that another
// path holds while it waits on a fence. Either could block the other forever: the
// waiter holds the lock the signaller needs.
func Example_lockInSignallingPath() {
	var reports lockdep.Collector
	c := lockdep.NewChecker(lockdep.WithHandler(reports.Handle))
	stats := &lockdep.Mutex{Class: lockdep.NewClass("drv.stats_lock"), Checker: c}

	// Somewhere a fence is waited on with the stats lock held.
	stats.Lock()
	c.MightWaitFence() // what fence.Wait annotates
	stats.Unlock()

	// The signalling path takes the same lock.
	cookie := c.BeginSignalling()
	stats.Lock()
	stats.Unlock()
	c.EndSignalling(cookie)

	for _, r := range reports.Reports() {
		fmt.Println(r.Kind, "-", r.Kind.Title())
		fmt.Println("cycle:", r.Cycle())
	}
	// Output:
	// signalling-deadlock - possible circular locking dependency through dma_fence signalling
	// cycle: [dma_fence_map drv.stats_lock]
}

// A direct fence wait inside a signalling section is not reported by default, as in
// the kernel; StrictSignalling turns the check on.
func Example_fenceWaitInSignalling() {
	var reports lockdep.Collector
	c := lockdep.NewChecker(lockdep.WithHandler(reports.Handle), lockdep.StrictSignalling())

	cookie := c.BeginSignalling()
	c.MightWaitFence()
	c.EndSignalling(cookie)

	fmt.Println(reports.Kinds())
	// Output:
	// [fence-wait-in-signalling]
}

// After Prime, a checker knows the kernel's memory-management order, so an
// allocation in a signalling section is caught the first time it happens.
func ExampleChecker_Prime() {
	var reports lockdep.Collector
	c := lockdep.NewChecker(lockdep.WithHandler(reports.Handle))
	c.Prime()

	cookie := c.BeginSignalling()
	c.MightReclaim() // a GFP_KERNEL allocation on the completion path
	c.EndSignalling(cookie)

	fmt.Println(reports.Kinds())
	// Output:
	// [reclaim-in-signalling]
}

// A Panic handler turns a report into a panic carrying the *Report.
func ExamplePanic() {
	c := lockdep.NewChecker(lockdep.WithHandler(lockdep.Panic))
	m := &lockdep.Mutex{Class: lockdep.NewClass("obj.lock"), Checker: c}
	defer func() {
		r := recover().(*lockdep.Report)
		fmt.Println(r.Error())
	}()
	m.Unlock() // never locked: caught before sync.Mutex would fault
	// Output:
	// lockdep: bad unlock balance detected!: obj.lock
}
