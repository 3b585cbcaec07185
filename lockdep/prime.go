package lockdep

// Prime teaches c the canonical order of the kernel's memory-management locks, so
// that a path taking them the wrong way round is reported the first time it runs,
// not only once both orders have happened. It replays dma_resv_lockdep(), in a
// fresh goroutine holding nothing:
//
//	mmap_lock (read)
//	  reservation_ww_class_acquire
//	    reservation_ww_class_mutex          (nested under the acquire context)
//	      fs_reclaim                        (an allocation under a dma_resv lock is fine)
//	        i_mmap_rwsem                    (shrinkers unmap buffer objects)
//	        mmu_notifier_invalidate_range_start
//	          dma_fence_map (exclusive)     (notifiers may wait on fences)
//
// After priming, c reports: taking mmap_lock under a dma_resv lock; taking a dma_resv
// lock (not a trylock) inside reclaim; allocating (MightReclaim), taking a dma_resv
// lock or entering an MMU notifier inside a fence signalling section. Priming twice
// is harmless.
func (c *Checker) Prime() {
	if !c.on.Load() {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		mmap := Map{Class: MmapLock, Checker: c}
		ctx := Map{Class: ReservationAcquire, Checker: c}
		obj := Map{Class: Reservation, Checker: c}
		mapping := Map{Class: IMmap, Checker: c}

		mmap.Acquire(Shared)
		ctx.Acquire(Exclusive)
		obj.AcquireNest(Exclusive, &ctx)
		c.acquire(&c.reclaimMap, c.reclaimMap.Class, Exclusive, 0, nil)
		mapping.Acquire(Exclusive)
		mapping.Release()
		c.BeginMMUNotifier()
		c.MightWaitFence()
		c.EndMMUNotifier()
		c.release(&c.reclaimMap, c.reclaimMap.Class)
		obj.Release()
		ctx.Release()
		mmap.Release()
	}()
	<-done
}
