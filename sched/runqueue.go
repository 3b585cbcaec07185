package sched

import "math"

// runQueue holds the entities of one scheduler that are ready to run: they have a
// queued job and no unresolved dependency. Entities waiting on a dependency leave
// it and come back from the dependency's callback, so picking costs O(log n) in the
// number of ready entities, never a scan over blocked ones. Models struct
// drm_sched_rq, for the three policies.
//
// The kernel keeps an rb-tree with its leftmost node cached; a pick only ever
// needs the minimum, so this is a 4-ary min-heap in one slice: no node to allocate
// per entity, half the levels of a binary heap (log4 n: 7 for ten thousand
// entities), and each node's four children side by side in 128 bytes. Each item
// carries its entity's key, so that sifting compares within the array and never
// dereferences an entity; an entity is written only to record where it moved.
// With many entities the heap is cold (the jobs between two picks push it out of
// the caches) and a head that sinks to a leaf pays a miss per level, yet most
// re-keys send the entity behind all the others, and under the fair policy most
// joins put it ahead of them all: so an entity whose key is not less than the
// last one in a sorted deque goes to its back instead, one whose key is less than
// the first goes to its front, each in O(1), and the head is the lesser of the
// heap's root and the deque's front.
//
// The fair policy follows sched_rq.c: a pop charges the GPU time the entity's
// jobs used since its last charge, shifted by vruntimeShift; an entity that ran
// dry leaves and saves its vruntime relative to the new minimum (0 if it was not
// above it); it comes back at the minimum plus that, or, with nothing saved, just
// ahead of or behind the head. So an entity that never has a second job queued at
// a pop is never charged and always rejoins at the head: an interactive client
// goes first, and with near-instant jobs many entities of a busy queue end up
// joining and leaving at every job. That is the kernel's behaviour, kept as is.
// Where the model differs:
//   - the average job times come in nanoseconds, where the kernel compares and
//     adds whole microseconds (its EWMAs are read as integer µs, so jobs under a
//     microsecond all tie and an equal-priority entity always rejoins ahead);
//   - equal keys are ordered by entity id (fair) or by join stamp (FIFO, round
//     robin), where rb_add_cached puts a new node after its equals: with unique
//     keys the head does not depend on the order of earlier operations;
//   - an entity waiting for a dependency leaves the queue and rejoins through add
//     (the kernel keeps it in the tree and drm_sched_select_entity skips it), and
//     every removal saves the relative vruntime, where drm_sched_rq_remove_entity
//     (kill, a move to another scheduler) leaves it absolute.
//
// Invariants, all guarded by Scheduler.mu:
//   - no heap item is less than its parent: items[i] >= items[(i-1)/4];
//   - an entity is in the heap or in the deque, never both: its rq.index is i
//     for items[i], dequeIndex(pos) at deque position pos, -1 when not queued;
//   - each item's keys are its entity's (q.item(e)), refreshed on every change;
//   - keys are unique (k3 is the entity's id, or a stamp no two entities share),
//     so the head, which the scheduler runs next, depends only on the keys, never
//     on the shape of the heap or the order of the operations that built it.
type runQueue struct {
	policy Policy
	items  []rqItem // the heap
	deque  rqDeque  // entities that joined behind or ahead of every deque entity, in order
	rrNext uint64   // round-robin stamps, also the tie-breaker of insertion order
}

// rqDeque is a ring of items in key order, least first: an entity whose key is
// at least the last one joins at the back, one whose key is less than the first
// joins at the front, and the head leaves from the front, each in O(1) and on
// lines that are warm. Round robin sends every entity it runs to the back; FIFO
// does too while jobs come round robin (the entity's next job was pushed after
// every other entity's head job); fair does whenever the charge lands it behind
// the previous one (a head that was the heap's root still leaves the heap
// through a sift). Fair sends to the front an entity that rejoins ahead of the
// head (drm_sched_rq_add_entity's min-1 for short jobs, min-(prio gap) for a
// more important one): with near-instant jobs that is most joins, and the
// entity, now the head, runs its one job and leaves from the front again, where
// the heap would sift it up to the root and its replacement down from it.
// Positions are absolute (slot pos&(len(buf)-1)); an empty deque restarts at
// dequeOrigin, so that the front can grow down without positions going negative
// and an entity's position survives a growth. An entity removed from the middle
// leaves a tombstone (a nil entity, its key kept so the order holds), skipped at
// the ends and compacted away once tombstones outnumber the living.
//
// Invariants: the items in [head, end) are in nondecreasing key order; dead of
// them are tombstones, and the items at head and at end-1 are alive; len(buf) is
// zero or a power of two, at least end-head; head >= 0.
type rqDeque struct {
	buf       []rqItem
	head, end int
	dead      int
}

// dequeIndex maps deque position pos to an entity's rq.index and back: -2-pos.
func dequeIndex(pos int) int { return -2 - pos }

// Positions live in [0, dequeLimit). An empty deque starts half way, at
// dequeOrigin: a front join moves head down by one, a back join moves end up by
// one, and when either runs out of room (after some 2^62 joins on a 64-bit
// platform, 2^30 on a 32-bit one) rebase moves the positions back to the
// origin. Variables only so that a test can make the room small.
var (
	dequeOrigin = math.MaxInt / 2
	dequeLimit  = math.MaxInt
)

func (d *rqDeque) len() int { return d.end - d.head - d.dead }

func (d *rqDeque) at(pos int) *rqItem { return &d.buf[pos&(len(d.buf)-1)] }

// accepts reports whether it can join at the back.
func (d *rqDeque) accepts(it *rqItem) bool {
	return d.end == d.head || !it.less(d.at(d.end-1))
}

// acceptsFront reports whether it can join at the front: it is less than the
// first item. An empty deque accepts at the back.
func (d *rqDeque) acceptsFront(it *rqItem) bool {
	return d.end != d.head && it.less(d.at(d.head))
}

func (d *rqDeque) pushBack(it rqItem) {
	if d.end == d.head {
		d.head, d.end = dequeOrigin, dequeOrigin
	}
	if d.end-d.head == len(d.buf) {
		d.grow()
	}
	if d.end == dequeLimit-1 {
		d.rebase()
	}
	*d.at(d.end) = it
	it.e.rq.index = dequeIndex(d.end)
	d.end++
}

// pushFront adds it before the first item; the deque must not be empty.
func (d *rqDeque) pushFront(it rqItem) {
	if d.end-d.head == len(d.buf) {
		d.grow()
	}
	if d.head == 0 {
		d.rebase()
	}
	d.head--
	*d.at(d.head) = it
	it.e.rq.index = dequeIndex(d.head)
}

// grow doubles the ring, keeping every item at its absolute position.
func (d *rqDeque) grow() {
	buf := make([]rqItem, max(2*len(d.buf), 16))
	for pos := d.head; pos < d.end; pos++ {
		buf[pos&(len(buf)-1)] = *d.at(pos)
	}
	d.buf = buf
}

// front returns the least item, or nil.
func (d *rqDeque) front() *rqItem {
	if d.end == d.head {
		return nil
	}
	return d.at(d.head)
}

// remove takes out the item at pos.
func (d *rqDeque) remove(pos int) {
	it := d.at(pos)
	it.e.rq.index = -1
	it.e = nil
	d.dead++
	// Keep both ends alive.
	for d.head < d.end && d.at(d.head).e == nil {
		*d.at(d.head) = rqItem{}
		d.head++
		d.dead--
	}
	for d.end > d.head && d.at(d.end-1).e == nil {
		*d.at(d.end - 1) = rqItem{}
		d.end--
		d.dead--
	}
	if d.dead > 16 && d.dead > d.len() {
		d.compact()
	}
}

// rebase moves the items to positions from dequeOrigin on, keeping their order
// and tombstones, and rewrites the living entities' indices: O(n), once in some
// 2^30 joins at worst.
func (d *rqDeque) rebase() {
	buf := make([]rqItem, len(d.buf))
	n := d.end - d.head
	for i := range n {
		it := *d.at(d.head + i)
		pos := dequeOrigin + i
		buf[pos&(len(buf)-1)] = it
		if it.e != nil {
			it.e.rq.index = dequeIndex(pos)
		}
	}
	d.buf, d.head, d.end = buf, dequeOrigin, dequeOrigin+n
}

// compact drops the tombstones, moving the living items down to close the gaps.
func (d *rqDeque) compact() {
	to := d.head
	for pos := d.head; pos < d.end; pos++ {
		it := *d.at(pos)
		*d.at(pos) = rqItem{}
		if it.e == nil {
			continue
		}
		*d.at(to) = it
		it.e.rq.index = dequeIndex(to)
		to++
	}
	d.end = to
	d.dead = 0
}

// rqItem is an entity and a copy of its key: k1, then k2, then k3.
type rqItem struct {
	k1, k2 int64
	k3     uint64
	e      *Entity
}

func (a *rqItem) less(b *rqItem) bool {
	if a.k1 != b.k1 {
		return a.k1 < b.k1
	}
	if a.k2 != b.k2 {
		return a.k2 < b.k2
	}
	return a.k3 < b.k3
}

// item is e's place in the order: the fair policy's virtual time; FIFO's
// priority, then the push time of the head job; round robin's priority, then the
// stamp of its last turn.
func (q *runQueue) item(e *Entity) rqItem {
	switch q.policy {
	case PolicyFair:
		return rqItem{k1: e.rq.vruntime, k3: e.id, e: e}
	case PolicyFIFO:
		return rqItem{k1: int64(e.rq.prio), k2: e.rq.headSubmit, k3: e.rq.seq, e: e}
	default:
		return rqItem{k1: int64(e.rq.prio), k2: int64(e.rq.seq), e: e}
	}
}

// rqState is an entity's place in its run queue. Guarded by Scheduler.mu.
type rqState struct {
	index      int // in the heap (>= 0), dequeIndex in the deque, or -1
	prio       Priority
	vruntime   int64 // fair: virtual GPU time, ns scaled by priority
	savedRel   int64 // fair: vruntime relative to the minimum, saved when it left
	charged    int64 // fair: runtime already charged into vruntime
	headSubmit int64 // fifo: push time of the head job, as submit_ts
	seq        uint64
}

func newRunQueue(p Policy) *runQueue { return &runQueue{policy: p} }

// vruntimeShift is how much faster a lower priority's virtual time runs:
// vruntime grows by GPU time << shift (sched_rq.c).
var vruntimeShift = [numPriorities]uint{1, 2, 4, 7}

func (q *runQueue) has(e *Entity) bool { return e.rq.index != -1 }

// peek returns the entity to run next, or nil. Models the leftmost node that
// drm_sched_select_entity starts from.
func (q *runQueue) peek() *Entity {
	b := q.deque.front()
	if len(q.items) == 0 {
		if b == nil {
			return nil
		}
		return b.e
	}
	if b != nil && b.less(&q.items[0]) {
		return b.e
	}
	return q.items[0].e
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
	q.insert(q.item(e))
}

// insert adds it at the back of the deque if it is not less than the last item
// there, at its front if it is less than the first, else to the heap.
func (q *runQueue) insert(it rqItem) {
	if q.deque.accepts(&it) {
		q.deque.pushBack(it)
		return
	}
	if q.deque.acceptsFront(&it) {
		q.deque.pushFront(it)
		return
	}
	q.items = append(q.items, rqItem{})
	q.up(len(q.items)-1, it)
}

// take removes e from the heap or the deque.
func (q *runQueue) take(e *Entity) {
	if i := e.rq.index; i >= 0 {
		q.removeAt(i)
	} else {
		q.deque.remove(dequeIndex(i))
	}
}

// remove takes e out, saving its relative vruntime for when it returns.
func (q *runQueue) remove(e *Entity) {
	if !q.has(e) {
		return
	}
	q.take(e)
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

// popped updates e's position after one of its jobs was taken, with nextSubmit the
// push time of its new head job (kept by the job popped, see Entity.push): fair
// charges the GPU time its jobs used since the last charge, FIFO keys on
// nextSubmit (drm_sched_rq_update_fifo_locked with its submit_ts), round robin
// sends it to the back of its priority.
func (q *runQueue) popped(e *Entity, runtime int64, nextSubmit int64) {
	if !q.has(e) {
		return
	}
	switch q.policy {
	case PolicyFair:
		e.rq.vruntime += (runtime - e.rq.charged) << vruntimeShift[e.rq.prio]
		e.rq.charged = runtime
	case PolicyFIFO:
		e.rq.headSubmit = nextSubmit
	default:
		q.rrNext++
		e.rq.seq = q.rrNext
	}
	q.fix(e)
}

// setPriority moves e to its new priority's place.
func (q *runQueue) setPriority(e *Entity, p Priority) {
	e.rq.prio = p
	if q.has(e) {
		q.fix(e)
	}
}

// fix moves e to its place after its key changed: to either end of the deque if
// it goes behind or ahead of everything there, else into the heap.
func (q *runQueue) fix(e *Entity) {
	it := q.item(e)
	if i := e.rq.index; i >= 0 && !q.deque.accepts(&it) && !q.deque.acceptsFront(&it) {
		q.place(i, it)
		return
	}
	q.take(e)
	q.insert(it)
}

// removeAt takes out the item at i: the last item fills the hole and moves to its
// place from there.
func (q *runQueue) removeAt(i int) {
	n := len(q.items) - 1
	q.items[i].e.rq.index = -1
	last := q.items[n]
	q.items[n] = rqItem{} // no stale pointer beyond len
	q.items = q.items[:n]
	if i < n {
		q.place(i, last)
	}
}

// place puts it into the hole at i, or wherever it belongs above or below it.
func (q *runQueue) place(i int, it rqItem) {
	if i > 0 && it.less(&q.items[(i-1)/4]) {
		q.up(i, it)
	} else {
		q.down(i, it)
	}
}

// up fills the hole at i with it, moving the hole towards the root while it is
// less than the hole's parent: one comparison and one move per level.
func (q *runQueue) up(i int, it rqItem) {
	h := q.items
	for i > 0 {
		p := (i - 1) / 4
		if !it.less(&h[p]) {
			break
		}
		h[i] = h[p]
		h[i].e.rq.index = i
		i = p
	}
	h[i] = it
	it.e.rq.index = i
}

// down fills the hole at i with it, moving the hole towards the leaves while its
// least child is less than it: three comparisons and one move per level.
func (q *runQueue) down(i int, it rqItem) {
	h := q.items
	n := len(h)
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		if c+3 < n {
			// A tournament: two independent pairs, then their winners.
			a, b := c, c+2
			if h[c+1].less(&h[c]) {
				a = c + 1
			}
			if h[c+3].less(&h[c+2]) {
				b = c + 3
			}
			m = a
			if h[b].less(&h[a]) {
				m = b
			}
		} else {
			for j := c + 1; j < n; j++ {
				if h[j].less(&h[m]) {
					m = j
				}
			}
		}
		if !h[m].less(&it) {
			break
		}
		h[i] = h[m]
		h[i].e.rq.index = i
		i = m
	}
	h[i] = it
	it.e.rq.index = i
}
