// Package resv models the kernel's buffer reservation layer: wound/wait mutexes
// (ww_mutex) and their acquire contexts, a drm_exec-style helper that locks many
// buffers at once, and the reservation object (dma_resv) that holds a buffer's
// fences.
//
// # Wound/wait mutexes
//
// A driver that submits a job must lock every buffer the job touches, in whatever
// order userspace listed them; two submissions can list the same buffers in opposite
// orders. A WWMutex resolves that instead of deadlocking: every transaction takes an
// AcquireCtx whose stamp says how old it is, and when two conflict, the younger backs
// off. Lock returns ErrDeadlock to the one that must back off; it unlocks everything,
// waits for the contended lock with LockSlow, and takes the rest again, keeping its
// stamp so it ages and eventually wins. The class decides how: WaitDie (the younger
// dies at once; dma_resv uses it) or WoundWait (the older wounds the younger, which
// backs off at its next contended lock). Lockdep sees one class per ww class, every
// lock nested under the acquire context, so holding many at once is not recursion.
//
// # Exec
//
// Exec does the back-off for you: Run calls a function that locks what it needs
// (Lock, Prepare), and reruns it after backing off whenever a lock returned
// ErrDeadlock. Both the hand-written protocol and Exec are shown in the examples.
//
// # Reservation objects and implicit synchronisation
//
// An Object holds fences, each with a Usage: Kernel (memory moves), Write, Read, and
// Bookkeep (preemption and page-table fences that nobody synchronises with
// implicitly). A query for a usage returns that usage and every stronger one. A new
// writer waits for the fences of usage Read (all readers and writers: UsageRW(true)),
// a new reader for those of usage Write; eviction waits for Bookkeep, that is
// everything.
//
// Changes need the lock; reading does not. Slots are reserved with Reserve before
// AddFence because adding happens after a submission's point of no return, when its
// fence is already armed and must be published: the add may not fail or allocate
// then. A reservation lapses at Unlock. AddFence keeps one fence per context and usage
// (a later fence replaces an earlier one) and recycles slots of signalled fences.
//
// Lock-free readers (Iter, GetFences, Wait, TestSignaled) read the published fence
// list as an RCU reader would: each slot is read whole, and if the list is replaced
// while they walk (Reserve grew it, CopyFences swapped it), they restart and
// Iter.IsRestarted says so, so that an accumulating reader discards its partial
// result.
//
// Long-running fences are never added: AddFence refuses them with ErrLongRunning and
// reports KindLRFenceInReservation to lockdep, because everything that waits on a
// reservation (eviction, reclaim, implicit sync) must finish in bounded time.
//
// # Differences from the kernel
//
// Reference counting is the garbage collector's. The kernel's CONFIG_DEBUG_MUTEXES
// behaviour of letting reservations lapse at unlock is always on, and AddFence
// appends exactly as many fences as Reserve reserved, where the kernel lets
// appends through up to the list's capacity (see Object.Reserve). Lock is the
// interruptible variant, with ctx standing for signals. Wait-list hand-off is strict
// FIFO by stamp; the kernel lets a running task steal an unlocked mutex.
package resv
