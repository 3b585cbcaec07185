package sched

import "container/heap"

// runQueue holds the entities of one scheduler that are ready to run: they have a
// queued job and no unresolved dependency. Entities waiting on a dependency leave
// it and come back from the dependency's callback, so picking costs O(log n) in the
// number of ready entities, never a scan over blocked ones. Models struct
// drm_sched_rq (its rb-tree), for the three policies. Guarded by Scheduler.mu.
type runQueue struct {
	policy Policy
	h      entityHeap
	rrNext uint64 // round-robin stamps, also the tie-breaker of insertion order
}

// entityHeap is a binary heap of ready entities. Each item carries its entity's
// sort key, so a comparison reads only the heap's own array: with ten thousand
// entities, dereferencing each one on every comparison would cost a cache miss per
// level of the heap.
type entityHeap struct {
	policy Policy
	items  []rqItem
}

// rqItem is an entity and a copy of its key: k1, then k2, then k3.
type rqItem struct {
	k1, k2 int64
	k3     uint64
	e      *Entity
}

func (h *entityHeap) item(e *Entity) rqItem {
	switch h.policy {
	case PolicyFair:
		return rqItem{k1: e.rq.vruntime, k3: e.id, e: e}
	case PolicyFIFO:
		return rqItem{k1: int64(e.rq.prio), k2: e.rq.headSubmit, k3: e.rq.seq, e: e}
	default:
		return rqItem{k1: int64(e.rq.prio), k2: int64(e.rq.seq), e: e}
	}
}

func (h *entityHeap) Len() int { return len(h.items) }
func (h *entityHeap) Less(i, j int) bool {
	a, b := &h.items[i], &h.items[j]
	if a.k1 != b.k1 {
		return a.k1 < b.k1
	}
	if a.k2 != b.k2 {
		return a.k2 < b.k2
	}
	return a.k3 < b.k3
}
func (h *entityHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].e.rq.index = i
	h.items[j].e.rq.index = j
}
func (h *entityHeap) Push(x any) {
	it := x.(rqItem)
	it.e.rq.index = len(h.items)
	h.items = append(h.items, it)
}
func (h *entityHeap) Pop() any {
	n := len(h.items) - 1
	it := h.items[n]
	h.items[n] = rqItem{}
	h.items = h.items[:n]
	it.e.rq.index = -1
	return it
}

// fix refreshes e's key in the heap after it changed.
func (h *entityHeap) fix(e *Entity) {
	h.items[e.rq.index] = h.item(e)
	heap.Fix(h, e.rq.index)
}

// rqState is an entity's place in its run queue. Guarded by Scheduler.mu.
type rqState struct {
	index      int // in the heap, -1 when absent
	prio       Priority
	vruntime   int64 // fair: virtual GPU time, ns scaled by priority
	savedRel   int64 // fair: vruntime relative to the minimum, saved when it left
	charged    int64 // fair: runtime already charged into vruntime
	headSubmit int64 // fifo: push time of the head job (UnixNano), as submit_ts
	seq        uint64
}

func newRunQueue(p Policy) *runQueue {
	return &runQueue{policy: p, h: entityHeap{policy: p}}
}

// vruntimeShift is how much faster a lower priority's virtual time runs:
// vruntime grows by GPU time << shift (sched_rq.c).
var vruntimeShift = [numPriorities]uint{1, 2, 4, 7}

func (q *runQueue) has(e *Entity) bool { return e.rq.index >= 0 }

func (q *runQueue) peek() *Entity {
	if len(q.h.items) == 0 {
		return nil
	}
	return q.h.items[0].e
}

// add inserts e. For the fair policy it restores e's vruntime relative to the
// current minimum, placing a newcomer just ahead of or behind the head as
// drm_sched_rq_add_entity does.
func (q *runQueue) add(e *Entity, headSubmit int64, avgEntity, avgSched int64) {
	if q.has(e) {
		return
	}
	q.rrNext++
	e.rq.seq = q.rrNext
	e.rq.headSubmit = headSubmit
	if q.policy == PolicyFair {
		var min int64
		headPrio := numPriorities
		if h := q.peek(); h != nil {
			min, headPrio = h.rq.vruntime, h.rq.prio
		}
		rel := e.rq.savedRel
		if rel == 0 && headPrio != numPriorities {
			switch {
			case e.rq.prio > headPrio: // less important: queue behind the head
				rel = (1000 + avgEntity + avgSched) << vruntimeShift[e.rq.prio]
			case e.rq.prio < headPrio: // more important: just ahead
				rel = -int64(headPrio - e.rq.prio)
			case avgEntity <= avgSched: // short jobs first: interactivity
				rel = -1
			default:
				rel = 1
			}
		}
		e.rq.vruntime = min + rel
		e.rq.savedRel = 0
	}
	heap.Push(&q.h, q.h.item(e))
}

// remove takes e out, saving its relative vruntime for when it returns.
func (q *runQueue) remove(e *Entity) {
	if !q.has(e) {
		return
	}
	heap.Remove(&q.h, e.rq.index)
	if q.policy == PolicyFair {
		var min int64
		if h := q.peek(); h != nil {
			min = h.rq.vruntime
		}
		if min != 0 && e.rq.vruntime > min {
			e.rq.savedRel = e.rq.vruntime - min
		} else {
			e.rq.savedRel = 0
		}
	}
}

// popped updates e's position after one of its jobs was taken: fair charges the
// GPU time its jobs used since the last charge, FIFO keys on the next job's push
// time, round robin sends it to the back of its priority.
func (q *runQueue) popped(e *Entity, runtime int64, headSubmit int64) {
	if !q.has(e) {
		return
	}
	switch q.policy {
	case PolicyFair:
		e.rq.vruntime += (runtime - e.rq.charged) << vruntimeShift[e.rq.prio]
		e.rq.charged = runtime
	case PolicyFIFO:
		e.rq.headSubmit = headSubmit
	default:
		q.rrNext++
		e.rq.seq = q.rrNext
	}
	q.h.fix(e)
}

// setPriority moves e to its new priority's place.
func (q *runQueue) setPriority(e *Entity, p Priority) {
	e.rq.prio = p
	if q.has(e) {
		q.h.fix(e)
	}
}
