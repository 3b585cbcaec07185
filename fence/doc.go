// Package fence models the kernel's dma_fence: a one-shot completion event that GPU
// work signals when it finishes, and that everyone else (other engines, the CPU,
// memory management, the display) waits on or attaches callbacks to. It also models
// the fence containers: Array (dma_fence_array), Chain (dma_fence_chain, a timeline
// point), Unwrap and Merge (dma_fence_unwrap), and a software Timeline (sw_sync).
//
// # Lifecycle
//
//	ctx := fence.NewContext("mydrv", "gfx-ring")  // a timeline: dma_fence_context_alloc
//	f := ctx.Next()                                // published to others: unsignalled
//	f.AddCallback(&cb, fn)                         // or f.Wait(ctx), f.Done()
//	f.SetError(err)                                // optional, before signalling
//	f.Signal()                                     // once; waiters wake, then callbacks run in order
//
// Fences on one context signal in seqno order, so the later of two fences implies
// the earlier (IsLater, Later; 32-bit wrap-aware seqnos unless Seqno64).
//
// # The fence rules (Documentation/driver-api/dma-buf.rst) and how gpusync enforces them
//
//   - A fence completes in bounded time. Work that can hang is backed by a timeout
//     that signals its fence with an error (the scheduler's TDR does this). Work that
//     cannot promise a bound uses a long-running fence (LongRunning), which is a
//     different kind: reservation objects refuse it, callbacks on it need
//     AddCallbackUnbounded, and lockdep checks every wait on it.
//   - From the moment a fence is visible to others until it is signalled, the code is
//     a signalling critical section. It must not take a lock that someone holds while
//     waiting on a fence, and must not allocate memory in a way that can enter
//     reclaim, because reclaim waits on fences. Signal is annotated as such a section
//     (lockdep.BeginSignalling); a driver annotates the whole completion path. Every
//     Wait is annotated as dma_fence_wait is (lockdep.MightWaitFence), so lockdep sees
//     both halves of such a deadlock the first time they happen, not when they collide.
//   - A fence that is dropped unsignalled leaves its waiters hanging. Put of the
//     last reference signals it with ErrDeadlock, as the kernel does, and LeakCheck
//     asks the garbage collector to report one that is simply forgotten.
//
// # Callbacks
//
// Callbacks run exactly once, in the goroutine that signals, after the goroutines
// blocked in Wait have been woken, in the order they were added. As in the kernel
// they run with the fence's lock held: a callback may signal other fences and add
// callbacks to them, but must not remove callbacks from, set the error of, or enable
// signalling on the fence that is calling it, and must not block. A Callback is
// caller-owned memory (embed it), so queueing one allocates nothing.
//
// # Cost
//
// A fence is one 80-byte allocation and its lock is a bit of its flags word (a
// spinlock, like the kernel's fence->lock), so creating and signalling one costs
// about what making and closing a channel does: signalling is one atomic
// operation, two with callbacks queued, and a callback round trip four. Wait queues the calling goroutine's own reusable entry, as
// dma_fence_default_wait queues one on the waiting task's stack, and allocates
// nothing. Reading the clock would cost more than all of that, so timestamps are
// recorded only on contexts made WithTimestamps (see Differences).
//
// # Differences from the kernel
//
// Memory is the garbage collector's: Get and Put exist for the Release hook and the
// release-with-pending rule only. They are counted as in the kernel: an Array or
// Chain takes over the references it is given and puts them when it is released.
// Timeouts are context deadlines and interruption is cancellation: Wait returns
// ctx.Err() instead of a remaining-jiffies count, and a wait that gives up changes
// nothing. An Array signals in the goroutine that signalled its last input, where
// the kernel defers to irq_work, so the array's lock is taken under that input's; an array completed while its signalling is being enabled leaves the signal
// to the enabling side, so that the input's signaller never waits for the array's
// lock while enabling holds it and waits for the input's. An array polled complete
// keeps its fences' first error, which the kernel's poll path drops. A chain's
// callback on its payload only starts a goroutine for the re-arm (the walk to the
// next pending payload, or the chain's signal), standing for the kernel's
// irq_work, since the callback runs under the payload's lock and the re-arm may
// wait for other fences' locks: a chain signals shortly after its last payload,
// not inside that payload's Signal (IsSignaled polls and sees it at once). The
// re-arm runs inside a fence signalling section, as part of the payload's
// signalling path. Callbacks on an older point may run after a newer point's,
// as the kernel's per-point irq_work gives no order either; polling sees them in
// order. Each fence has its own lock, where the kernel lets a timeline share one;
// a goroutine that finds it taken yields until it is free, as a CPU spins. The kernel reads the clock in every
// dma_fence_signal; here Signal records a timestamp only on a context made
// WithTimestamps (sw_sync Timelines are, and Arrays and Chains stamp always), because
// on the machines we measured the clock read cost as much as the rest of creating and
// signalling a fence together, and few readers look at it (the scheduler passes its
// own readings to SignalTimestamp). A timestamp is the monotonic clock, kept as
// nanoseconds since the process started; Timestamp returns it as a time.Time. Error
// can be read before the fence signals, like the kernel's fence->error field.
package fence
