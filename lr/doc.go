// Package lr models long-running (compute) GPU work and how memory management lives
// with it: long-running completion fences, LR queues with ring-space flow control,
// preempt fences, and the eviction flow that preempts a queue, moves its memory and
// resumes it.
//
// # Why long-running work cannot use dma fences
//
// A dma fence promises to signal in bounded time, and the whole kernel leans on that
// promise: eviction waits for the fences in a buffer's reservation object while
// holding its lock; reclaim and MMU notifiers wait for fences while the allocator is
// stuck behind them. A compute job may run for minutes, or forever (it may wait on a
// user-mode fence that only the CPU will signal). Published as a dma fence, it would
// let one process stall memory management for everyone, and a user fence waiting on
// a dma fence that waits on memory that waits on the user fence is a cycle nobody
// can see. So (Documentation/gpu/drm-compute.rst, and the 2023 RFC on long-running
// completion fences):
//
//   - LR work completes through a long-running fence, a different kind of fence
//     (NewContext). It is never added to a reservation object: resv refuses it and
//     lockdep reports KindLRFenceInReservation.
//   - An LR fence is never waited on while holding a memory-management lock, nor in a
//     dma fence signalling section: lockdep reports KindLRWaitUnderMM and
//     KindLRWaitInSignalling.
//   - A callback on an LR fence needs fence.AddCallbackUnbounded, whose name is the
//     caller's acknowledgement that it may never run.
//   - The scheduler never exports LR completion as a dma fence: a Queue's jobs
//     return no hardware fence, so the scheduler job's finished fence means
//     "written to the ring", as in Xe's LR mode.
//
// # Preemption instead of waiting
//
// Memory management still needs a fence it can wait for. Each LR queue has a
// PreemptFence in every reservation object of its VM, with Bookkeep usage: an
// ordinary, bounded dma fence that signals once the queue has been suspended. It
// costs nothing until someone waits on it. Eviction waits on the buffer's fences,
// which enables signalling on the preempt fence, which suspends the queue; the
// buffer moves; the VM's rebind worker then revalidates the buffers, arms fresh
// preempt fences, resumes the queues and installs the new fences. The job was
// preempted, not killed. A preemption that fails gives its fence the error, and
// the queue is resumed all the same, unless it timed out (ErrTimedOut): then the
// rebind worker kills the VM, banning every queue on it, as Xe does.
//
// # Lifecycle
//
//	q, _ := lr.NewQueue(lr.QueueConfig{RingSize: 8, Ops: ...})   // its own scheduler, 1:1
//	vm := lr.NewVM(lr.VMOps{...}, checker)
//	vm.AddBuffer(ctx, bo); vm.AddQueue(ctx, q)                   // preempt fences installed
//	j, _ := q.Push(ctx, work)      // waits for ring space; TryPush: ErrWouldBlock
//	...the hardware runs it...      j.Complete(err) from the driver; j.Done() is the LR fence
//	vm.Evict(ctx, bo)              // preempt -> move -> (rebind worker) resume
//	q.Close(); vm.Close()
//
// # Differences from the kernel
//
// Xe cleans up an LR queue after an error with an immediate TDR; here Queue.Fail
// does the same steps directly (ban, kill the entity, complete the LR fences with
// the error). The rebind worker revalidates through a driver hook and has no
// userptr handling. Ring space is a semaphore of job slots, not bytes.
package lr
