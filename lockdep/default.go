package lockdep

// The functions below annotate through Default, as the kernel's free functions do
// through its one lockdep. Code that takes a Checker should call the methods of the
// same names instead.

// BeginSignalling calls Default.BeginSignalling. Models dma_fence_begin_signalling().
func BeginSignalling() Cookie { return Default.BeginSignalling() }

// EndSignalling calls Default.EndSignalling. Models dma_fence_end_signalling().
func EndSignalling(c Cookie) { Default.EndSignalling(c) }

// MightWaitFence calls Default.MightWaitFence. Models __dma_fence_might_wait().
func MightWaitFence() { Default.MightWaitFence() }

// MightReclaim calls Default.MightReclaim. Models might_alloc(GFP_KERNEL).
func MightReclaim() { Default.MightReclaim() }

// BeginReclaim calls Default.BeginReclaim. Models fs_reclaim_acquire().
func BeginReclaim() { Default.BeginReclaim() }

// EndReclaim calls Default.EndReclaim. Models fs_reclaim_release().
func EndReclaim() { Default.EndReclaim() }

// BeginMMUNotifier calls Default.BeginMMUNotifier. Models
// lock_map_acquire(&__mmu_notifier_invalidate_range_start_map).
func BeginMMUNotifier() { Default.BeginMMUNotifier() }

// EndMMUNotifier calls Default.EndMMUNotifier. Models
// lock_map_release(&__mmu_notifier_invalidate_range_start_map).
func EndMMUNotifier() { Default.EndMMUNotifier() }

// MightWaitLongRunning calls Default.MightWaitLongRunning. The kernel has no
// counterpart (see Checker.MightWaitLongRunning).
func MightWaitLongRunning(what string) { Default.MightWaitLongRunning(what) }

// Prime calls Default.Prime. Models dma_resv_lockdep().
func Prime() { Default.Prime() }
