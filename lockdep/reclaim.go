package lockdep

// MightReclaim annotates a memory allocation that may enter reclaim (GFP_KERNEL):
// reclaim runs shrinkers that evict buffers and so may wait on fences. Inside a
// reclaim section it does nothing, as an allocation under PF_MEMALLOC does not
// recurse into reclaim. Models might_alloc(GFP_KERNEL), an fs_reclaim acquire and
// release.
func (c *Checker) MightReclaim() {
	if !c.on.Load() {
		return
	}
	t := c.task()
	if t.reclaim > 0 {
		c.idle(t)
		return
	}
	c.idle(t)
	c.acquire(&c.reclaimMap, c.reclaimMap.Class, Exclusive, 0, nil)
	c.release(&c.reclaimMap, c.reclaimMap.Class)
}

// BeginReclaim marks the calling goroutine as running memory reclaim (a shrinker,
// an eviction under memory pressure) until EndReclaim. Locks taken inside depend on
// fs_reclaim, so the same lock held around a reclaiming allocation is reported.
// Models fs_reclaim_acquire() plus memalloc_noreclaim_save().
func (c *Checker) BeginReclaim() {
	if !c.on.Load() {
		return
	}
	c.acquire(&c.reclaimMap, c.reclaimMap.Class, Exclusive, 0, nil)
	t := c.task()
	if t.find(&c.reclaimMap) >= 0 {
		t.reclaim++
	}
	c.idle(t)
}

// EndReclaim ends a section BeginReclaim opened. Without one it reports
// KindBadUnlock. Models fs_reclaim_release().
func (c *Checker) EndReclaim() {
	if !c.on.Load() {
		return
	}
	t := c.task()
	if t.reclaim > 0 && t.find(&c.reclaimMap) >= 0 {
		t.reclaim--
	}
	c.idle(t)
	c.release(&c.reclaimMap, c.reclaimMap.Class)
}

// BeginMMUNotifier marks the calling goroutine as inside an MMU notifier's
// invalidate_range_start, which may wait on dma fences, until EndMMUNotifier.
// Models lock_map_acquire(&__mmu_notifier_invalidate_range_start_map).
func (c *Checker) BeginMMUNotifier() {
	if c.on.Load() {
		c.acquire(&c.mmuMap, c.mmuMap.Class, Exclusive, 0, nil)
	}
}

// EndMMUNotifier ends the section BeginMMUNotifier opened. Without one it reports
// KindBadUnlock. Models
// lock_map_release(&__mmu_notifier_invalidate_range_start_map).
func (c *Checker) EndMMUNotifier() {
	if c.on.Load() {
		c.release(&c.mmuMap, c.mmuMap.Class)
	}
}
