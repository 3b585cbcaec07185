package resv

import "sync/atomic"

// ForceRestart republishes o's entries, unchanged and in order, in a new list, as
// a reallocation by dma_resv_reserve_fences would: a lock-free reader walking the
// old list must restart. st-dma-resv.c's test_for_each_unlocked forces the same
// mismatch by poisoning the cursor's list pointer. The caller holds o's lock.
func ForceRestart(o *Object) {
	old := o.list.Load()
	n := int(old.num.Load())
	nl := &fenceList{slots: make([]atomic.Pointer[slot], len(old.slots)), max: old.max}
	for i := range n {
		nl.slots[i].Store(old.slots[i].Load())
	}
	nl.num.Store(int32(n))
	o.list.Store(nl)
}
