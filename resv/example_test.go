package resv_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/resv"
)

// lockAll is the back-off protocol written out by hand, as a kernel driver writes it
// around ww_mutex_lock: on ErrDeadlock drop everything, sleep on the contended lock
// with LockSlow, then take the rest again with the same context.
func lockAll(ctx context.Context, acq *resv.AcquireCtx, objs []*resv.Object) error {
	var contended *resv.Object
	for {
		var held []*resv.Object
		if contended != nil {
			if err := contended.LockSlow(ctx, acq); err != nil {
				return err
			}
			held = append(held, contended)
		}
		var err error
		for _, o := range objs {
			if o == contended {
				continue
			}
			if err = o.Lock(ctx, acq); err != nil {
				contended = o
				break
			}
			held = append(held, o)
		}
		if err == nil {
			acq.AcquireDone()
			return nil
		}
		for _, o := range held {
			o.Unlock()
		}
		if !errors.Is(err, resv.ErrDeadlock) {
			return err
		}
	}
}

// The hand-written ww back-off loop.
func Example_backoff() {
	ctx := context.Background()
	a, b := resv.NewObject(nil), resv.NewObject(nil)

	acq := resv.NewAcquireCtx(resv.ReservationClass, nil)
	if err := lockAll(ctx, acq, []*resv.Object{a, b}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("locked:", a.LockingCtx() == acq, b.LockingCtx() == acq)
	b.Unlock()
	a.Unlock()
	fmt.Println("fini:", acq.Fini())
	// Output:
	// locked: true true
	// fini: <nil>
}

// Exec does the same back-off by itself: the function locks what it needs and is
// run again after a back-off. Prepare also reserves a fence slot in each object, so
// that adding the job's fence after the point of no return cannot fail.
func ExampleExec() {
	ctx := context.Background()
	bos := []*resv.Object{resv.NewObject(nil), resv.NewObject(nil), resv.NewObject(nil)}
	ring := fence.NewContext("mydrv", "gfx")

	e := resv.NewExec(resv.IgnoreDuplicates, nil)
	defer e.Fini()
	err := e.Run(ctx, func(ctx context.Context) error {
		for _, bo := range append(bos, bos[0]) { // a duplicate in the list is fine
			if err := e.Prepare(ctx, bo, 1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	job := ring.Next() // the point of no return: from here nothing may fail
	for _, bo := range e.Objects() {
		if err := bo.AddFence(job, resv.Write); err != nil {
			panic(err) // cannot happen: a slot was reserved
		}
	}
	fmt.Println("locked", len(e.Objects()), "objects; busy:", !bos[1].TestSignaled(resv.Read))
	job.Signal()
	fmt.Println("busy after the job:", !bos[1].TestSignaled(resv.Read))
	// Output:
	// locked 3 objects; busy: true
	// busy after the job: false
}

// Implicit synchronisation: a reader waits for writers only; a writer waits for
// readers and writers; Bookkeep fences are seen only by eviction.
func ExampleUsageRW() {
	bo := resv.NewObject(nil)
	gfx := fence.NewContext("mydrv", "gfx")
	copyEngine := fence.NewContext("mydrv", "copy")
	preempt := fence.NewContext("mydrv", "preempt")

	bo.Lock(context.Background(), nil)
	bo.Reserve(3)
	bo.AddFence(gfx.Next(), resv.Write)
	bo.AddFence(copyEngine.Next(), resv.Read)
	bo.AddFence(preempt.Next(), resv.Bookkeep)
	bo.Unlock()

	fmt.Println("a new reader waits for", len(bo.GetFences(resv.UsageRW(false))), "fence")
	fmt.Println("a new writer waits for", len(bo.GetFences(resv.UsageRW(true))), "fences")
	fmt.Println("eviction waits for", len(bo.GetFences(resv.Bookkeep)), "fences")
	// Output:
	// a new reader waits for 1 fence
	// a new writer waits for 2 fences
	// eviction waits for 3 fences
}
