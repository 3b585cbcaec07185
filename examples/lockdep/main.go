// Command lockdep runs each classic GPU-driver locking mistake once, against its own
// lockdep checker (primed with the kernel's memory-management order, strict about
// fence waits in signalling sections), and prints the report the checker makes: the
// kernel-style splat with -v, a one-line summary without. The mistakes go through the
// real objects: fence.Wait, resv.Object, lr fences, lockdep.Mutex.
//
//	go run ./examples/lockdep        # one line per mistake
//	go run ./examples/lockdep -v     # full splats, with both lock chains and stacks
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// A mistake is one scenario: it breaks exactly one rule on the checker it is given.
type mistake struct {
	name string
	want lockdep.Kind
	run  func(c *lockdep.Checker)
}

var (
	ringClass  = lockdep.NewClass("drv.ring.lock")
	vmClass    = lockdep.NewClass("drv.vm.lock")
	statsClass = lockdep.NewClass("drv.stats.lock")
)

var mistakes = []mistake{
	{"AB-BA: submission takes ring then vm, the fault handler vm then ring", lockdep.KindCircular, abba},
	{"a fence wait inside a fence signalling section (strict check)", lockdep.KindFenceWaitInSignalling, waitInSignalling},
	{"a lock taken on the signalling path is held elsewhere around a fence wait", lockdep.KindSignallingDeadlock, lockInSignalling},
	{"a reclaiming allocation on the signalling path", lockdep.KindReclaimInSignalling, allocInSignalling},
	{"a long-running fence attached to a reservation object", lockdep.KindLRFenceInReservation, lrInResv},
	{"a wait on a long-running fence under a reservation lock", lockdep.KindLRWaitUnderMM, lrWaitUnderResv},
}

func main() {
	verbose := flag.Bool("v", false, "print each report in full, as the kernel prints a lockdep splat")
	flag.Parse()
	if err := run(os.Stdout, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(w io.Writer, verbose bool) error {
	for i, m := range mistakes {
		var col lockdep.Collector
		c := lockdep.NewChecker(lockdep.WithHandler(col.Handle), lockdep.StrictSignalling())
		c.Prime()
		m.run(c)
		reps := col.Reports()
		if len(reps) != 1 || reps[0].Kind != m.want {
			return fmt.Errorf("%s: got reports %v, want one %v", m.name, col.Kinds(), m.want)
		}
		fmt.Fprintf(w, "%d. %s\n   -> %s: %s\n", i+1, m.name, reps[0].Kind, reps[0].Error())
		if verbose {
			fmt.Fprintln(w, reps[0].String())
		}
	}
	return nil
}

func abba(c *lockdep.Checker) {
	ring := &lockdep.Mutex{Class: ringClass, Checker: c}
	vm := &lockdep.Mutex{Class: vmClass, Checker: c}
	done := make(chan struct{})
	go func() { // submission
		defer close(done)
		ring.Lock()
		vm.Lock()
		vm.Unlock()
		ring.Unlock()
	}()
	<-done
	vm.Lock() // fault handler, later: no deadlock happens, the order is still wrong
	ring.Lock()
	ring.Unlock()
	vm.Unlock()
}

func waitInSignalling(c *lockdep.Checker) {
	// A job's completion path waits for another fence before signalling its own.
	other := fence.NewContext("drv", "copy", fence.WithChecker(c)).Next()
	_ = other.Signal() // already done, so the example does not block
	cookie := c.BeginSignalling()
	_ = other.Wait(context.Background()) // fence.Wait annotates dma_fence_wait
	c.EndSignalling(cookie)
}

func lockInSignalling(c *lockdep.Checker) {
	stats := &lockdep.Mutex{Class: statsClass, Checker: c}
	done := fence.NewContext("drv", "gfx", fence.WithChecker(c)).Next()
	_ = done.Signal()
	stats.Lock()
	_ = done.Wait(context.Background()) // a waiter holds the stats lock
	stats.Unlock()

	cookie := c.BeginSignalling() // the completion path takes it
	stats.Lock()
	stats.Unlock()
	c.EndSignalling(cookie)
}

func allocInSignalling(c *lockdep.Checker) {
	cookie := c.BeginSignalling()
	c.MightReclaim() // a GFP_KERNEL allocation before the fence is signalled
	c.EndSignalling(cookie)
}

func lrInResv(c *lockdep.Checker) {
	job := lr.NewContext("drv", "compute", fence.WithChecker(c)).Next()
	bo := resv.NewObject(c)
	ctx := context.Background()
	_ = bo.Lock(ctx, nil)
	_ = bo.Reserve(1)
	if err := bo.AddFence(job, resv.Write); !errors.Is(err, resv.ErrLongRunning) {
		panic(fmt.Sprintf("AddFence of an LR fence: %v", err))
	}
	bo.Unlock()
	_ = job.Signal()
}

func lrWaitUnderResv(c *lockdep.Checker) {
	job := lr.NewContext("drv", "compute", fence.WithChecker(c)).Next()
	_ = job.Signal() // finished, so the example does not block
	bo := resv.NewObject(c)
	ctx := context.Background()
	_ = bo.Lock(ctx, nil)
	_ = job.Wait(ctx) // waiting for the LR job under the buffer's reservation lock
	bo.Unlock()
}
