package resv

import "github.com/gpusync/gpusync/fence"

// An Iter walks a reservation object's unsignalled fences without the lock. Models
// struct dma_resv_iter with dma_resv_iter_first_unlocked / _next_unlocked.
//
// The restart rule: the iterator reads one published list. If the list is replaced
// while it walks (Reserve grew it, CopyFences swapped it), it starts again from the
// first fence of the new list, and IsRestarted reports true for that fence. A caller
// that accumulates (GetFences) must then throw away what it gathered; a caller that
// only waits may go on. If the new list has nothing to yield, Next returns nil with
// IsRestarted true, so the accumulating caller checks it once more at the end (the
// kernel's get_fences misses this case and keeps a part of the old list). Within
// one list every slot is read whole, never torn.
type Iter struct {
	obj       *Object
	usage     Usage
	list      *fenceList
	index     int
	cur       *slot
	restarted bool
}

// Iter returns an unlocked iterator over the unsignalled fences of usage u or
// stronger. Models dma_resv_iter_begin().
func (o *Object) Iter(u Usage) *Iter { return &Iter{obj: o, usage: u} }

// Next returns the next fence, or nil at the end. Models
// dma_resv_iter_first_unlocked() (the first call) and
// dma_resv_iter_next_unlocked().
func (it *Iter) Next() *fence.Fence {
	for {
		if l := it.obj.list.Load(); l != it.list {
			it.list, it.index, it.restarted = l, 0, true
		} else if it.cur != nil {
			it.restarted = false
		}
		l := it.list
		for it.index < int(l.num.Load()) {
			s := l.slots[it.index].Load()
			it.index++
			if s.usage > it.usage || s.f.IsSignaled() {
				continue
			}
			if it.obj.list.Load() != l {
				break // replaced while we looked: restart
			}
			it.cur = s
			return s.f
		}
		if it.obj.list.Load() == l {
			it.cur = nil
			return nil
		}
	}
}

// Usage returns the usage of the fence Next returned last. Models
// dma_resv_iter_usage().
func (it *Iter) Usage() Usage {
	if it.cur == nil {
		return 0
	}
	return it.cur.usage
}

// IsRestarted reports whether the fence Next returned last is the first of a fresh
// walk (the first fence ever, or the first after the list was replaced); after Next
// returned nil, whether the walk that ended was a fresh one. Models
// dma_resv_iter_is_restarted().
func (it *Iter) IsRestarted() bool { return it.restarted }
