package fence_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gpusync/gpusync/fence"
)

// A producer signals a fence; a consumer waits for it with a deadline.
func Example_signalAndWait() {
	ring := fence.NewContext("mydrv", "gfx")
	job := ring.Next()

	go func() {
		// ... the GPU work runs ...
		job.Signal()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := job.Wait(ctx); err != nil {
		fmt.Println("gave up:", err)
		return
	}
	signaled, err := job.Status()
	fmt.Println(job.Seqno(), signaled, err)
	// Output:
	// 1 true <nil>
}

// Callbacks run in the signalling goroutine, in the order they were added. A
// callback added after the fence signalled is refused with ErrSignaled, and the
// caller handles the completed case itself.
func Example_callbacks() {
	f := fence.NewContext("mydrv", "copy").Next()

	var first, second fence.Callback
	f.AddCallback(&first, func(f *fence.Fence, _ *fence.Callback) { fmt.Println("first:", f.Error()) })
	f.AddCallback(&second, func(*fence.Fence, *fence.Callback) { fmt.Println("second") })

	f.SetError(fmt.Errorf("ring hang"))
	f.Signal()

	var late fence.Callback
	err := f.AddCallback(&late, func(*fence.Fence, *fence.Callback) { fmt.Println("never") })
	fmt.Println("late:", err)
	// Output:
	// first: ring hang
	// second
	// late: fence: already signalled
}

// A timeline syncobj: each submission adds a chain point carrying its fence.
// Waiting on point 2 waits for payloads 1 and 2; FindSeqno answers "not yet added"
// and "already signalled".
func Example_timeline() {
	sw := fence.NewTimeline("engine")
	var head *fence.Chain
	for v := uint32(1); v <= 3; v++ {
		var prev *fence.Fence
		if head != nil {
			prev = &head.Fence
		}
		head = fence.NewChain(prev, sw.Point(v), uint64(v))
	}

	point2, _ := head.FindSeqno(2)
	_, err := head.FindSeqno(4)
	fmt.Println("point 2:", point2.Seqno(), "point 4:", err)

	sw.Inc(2) // payloads 1 and 2 signal
	fmt.Println("point 2 signalled:", point2.IsSignaled(), "head signalled:", head.IsSignaled())

	point2, _ = head.FindSeqno(2)
	fmt.Println("point 2 now:", point2)
	// Output:
	// point 2: 2 point 4: fence: invalid argument: chain point not yet added
	// point 2 signalled: true head signalled: false
	// point 2 now: <nil>
}

// Merge collapses a set of fences to one: signalled fences are dropped, and only
// the later fence of each context is kept.
func Example_merge() {
	gfx := fence.NewContext("mydrv", "gfx")
	compute := fence.NewContext("mydrv", "compute")
	g1, g2 := gfx.Next(), gfx.Next()
	c1 := compute.Next()
	done := compute.Next()
	done.Signal()

	m := fence.Merge(g1, c1, g2, done)
	for leaf := range fence.Unwrap(m) {
		fmt.Println(leaf.Context().Timeline(), leaf.Seqno())
	}
	// Output:
	// gfx 2
	// compute 1
}
