// Package lockdep checks lock ordering and the dma-fence rules at run time, the way
// the Linux kernel's lockdep does: it learns the order in which lock classes are
// taken, and reports an order that could deadlock the first time it is seen, without
// the deadlock having to happen. Every other gpusync package reports to it.
//
// # The model
//
// A Class (lock_class_key) names a kind of lock; a Map (lockdep_map) is one lock
// instance annotated with its class. A primitive calls Map.Acquire before it blocks
// and Map.Release after it unlocks; Mutex and RWMutex do this for a driver's own
// locks. Per goroutine, the checker keeps the stack of held locks (identified with
// github.com/petermattis/goid, as the kernel keeps them in task_struct). On each
// acquisition it forms the chain key of the held classes plus the new one; a chain
// seen before costs one lock-free lookup in the chain cache. A new chain adds a
// dependency edge from the held locks to the new class and searches the graph for a
// cycle: one that closes is reported with the new dependency and the existing chain,
// each link with the stack where it was first taken.
//
// Modes follow the kernel: Exclusive (writers), Shared (non-recursive readers such as
// rwsem readers) and RecursiveRead. A cycle is reported only if it is "strong": no
// link that ends in a recursive read is followed by one that starts from a reader,
// because two recursive readers never block each other. A trylock adds no dependency
// (it cannot block). Several locks of one class may be held under a nest lock (a ww
// acquire context, see AcquireNest) or as distinct subclasses (Class.Subclass).
//
// # Pseudo-locks
//
// Some waits have no lock but can deadlock all the same. They are modelled as
// classes, as the kernel models them with lockdep_maps:
//
//   - dma_fence_map (FenceSignalling). BeginSignalling read-holds it for a fence
//     signalling critical section: everything from the moment a fence is visible to
//     other threads until it is signalled. MightWaitFence, called by every fence
//     wait, takes it exclusively. A lock taken inside a section that is elsewhere held
//     around a wait closes a cycle through it.
//   - fs_reclaim (FSReclaim). MightReclaim marks an allocation that may enter reclaim;
//     BeginReclaim/EndReclaim mark code that runs as reclaim (shrinkers, eviction).
//   - mmu_notifier (MMUNotifier). BeginMMUNotifier/EndMMUNotifier mark an invalidation,
//     which may wait on fences.
//
// Prime replays the kernel's dma_resv_lockdep(): mmap_lock, then dma_resv, then
// fs_reclaim, and reclaim and MMU notifiers may wait on fences. A primed checker
// reports a wrong order the first time it is taken.
//
// # The GPU rules
//
// Each rule has its own report Kind, so a test can assert which one it broke:
//
//   - KindLRWaitUnderMM: a wait on a long-running fence while holding a
//     memory-management (MM) class. Eviction needs those locks, and an LR fence
//     promises no completion time.
//   - KindLRFenceInReservation: a long-running fence offered to a dma_resv, where
//     every memory-management path would wait on it.
//   - KindFenceWaitInSignalling: a fence wait inside a signalling section. Opt-in
//     (StrictSignalling): the kernel drops the section around the wait annotation
//     and so does not report this; the default matches the kernel.
//   - KindReclaimInSignalling: a reclaiming allocation inside a signalling section
//     (after Prime): reclaim may wait on the very fence being signalled.
//   - KindSignallingDeadlock: any other cycle through dma_fence_map: a lock taken
//     while signalling and held elsewhere while waiting.
//
// # Reports and handlers
//
// A Report holds the kind, the locks, the chains and the stacks; its String reads
// like the kernel's splat. Each Checker has a Handler: Log (the default, to standard
// error), Panic, a Collector, or lockdeptest.Fail for a testing.TB. Each distinct
// problem is reported once unless ReportAll is set. Misuse (a nil class, a release
// of a lock not held, a bad EndSignalling cookie) is a report too, never a crash.
//
// # Rules for users
//
// Create classes once, at package level, one per kind of lock. Annotate before
// blocking and after unlocking. Pass a Checker (or leave Default) to every object
// that should report to it; a test that wants isolation makes its own with
// NewChecker or lockdeptest.New. Checking can be switched off at run time (Disable);
// then each annotation costs one atomic load.
//
// # Differences from the kernel
//
// Goroutines have no interrupt context, so the kernel's irq-safety (usage) checks
// are absent. The kernel turns itself off after its first report; a Checker goes on
// and reports each distinct problem once. Held-lock sites are return addresses taken
// from the frame-pointer chain on amd64 (runtime.Callers elsewhere); full stacks are
// taken only when a new dependency is recorded or a report is made.
package lockdep
