package sched

import (
	"cmp"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func newTestEntity(id uint64, p Priority) *Entity {
	e := &Entity{id: id}
	e.rq.index = -1
	e.rq.prio = p
	return e
}

// checkRunQueue fails t unless q keeps its invariants and holds exactly members:
// every item sits at its entity's index with its entity's current keys, no heap
// item is less than its parent, the deque is in order with its ends alive, and
// the head is the least of the members in the model's order.
func checkRunQueue(t require.TestingT, q *runQueue, members map[*Entity]bool, all []*Entity) {
	for i := range q.items {
		it := &q.items[i]
		require.Equal(t, i, it.e.rq.index, "item %d: entity %d's index", i, it.e.id)
		require.Equal(t, q.item(it.e), *it, "item %d: stale keys", i)
		if i > 0 {
			require.False(t, it.less(&q.items[(i-1)/4]), "item %d is less than its parent", i)
		}
	}
	for _, e := range all {
		require.Equal(t, members[e], q.has(e), "entity %d: has", e.id)
		if !members[e] {
			require.Equal(t, -1, e.rq.index, "entity %d: index when absent", e.id)
		}
	}
	d := &q.deque
	require.LessOrEqual(t, d.end-d.head, len(d.buf))
	require.GreaterOrEqual(t, d.head, 0, "deque positions")
	require.Less(t, d.end, dequeLimit, "deque positions")
	dead := 0
	for pos := d.head; pos < d.end; pos++ {
		it := d.at(pos)
		if pos > d.head {
			require.False(t, it.less(d.at(pos-1)), "deque %d is less than the item before it", pos)
		}
		if it.e == nil {
			dead++
			continue
		}
		require.Equal(t, dequeIndex(pos), it.e.rq.index, "deque %d: entity %d's index", pos, it.e.id)
		require.Equal(t, q.item(it.e), *it, "deque %d: stale keys", pos)
	}
	require.Equal(t, dead, d.dead, "tombstones")
	if d.end > d.head {
		require.NotNil(t, d.at(d.head).e, "the front is a tombstone")
		require.NotNil(t, d.at(d.end-1).e, "the back is a tombstone")
	}
	require.Len(t, members, len(q.items)+d.len())
	sorted := sortedMembers(q.policy, members)
	if len(sorted) == 0 {
		require.Nil(t, q.peek())
		return
	}
	require.Same(t, sorted[0], q.peek(), "head")
}

// modelCompare is the order of the kernel's trees, written out whole: fair by
// virtual time; FIFO by priority, then the head job's push time; round robin by
// priority, then the stamp of the last turn; ties by entity id (fair) or join
// stamp.
func modelCompare(p Policy, a, b *Entity) int {
	if p == PolicyFair {
		return cmp.Or(cmp.Compare(a.rq.vruntime, b.rq.vruntime), cmp.Compare(a.id, b.id))
	}
	c := cmp.Compare(a.rq.prio, b.rq.prio)
	if p == PolicyFIFO {
		c = cmp.Or(c, cmp.Compare(a.rq.headSubmit, b.rq.headSubmit))
	}
	return cmp.Or(c, cmp.Compare(a.rq.seq, b.rq.seq))
}

func sortedMembers(p Policy, members map[*Entity]bool) []*Entity {
	s := slices.Collect(maps.Keys(members))
	slices.SortFunc(s, func(a, b *Entity) int { return modelCompare(p, a, b) })
	return s
}

// TestRunQueueAgainstSortedModel runs random adds, removals, pops and priority
// changes on a run queue of each policy and checks after each that the heap keeps
// its invariants and returns the least key; then it drains the queue through
// peek and remove, which must yield the members in key order.
func TestRunQueueAgainstSortedModel(t *testing.T) { checkAgainstSortedModel(t) }

// The deque's positions run out of room after some 2^30 joins on a 32-bit
// platform; with the room made small, rebasing happens many times per run.
func TestRunQueueAgainstSortedModelWithLittleDequeRoom(t *testing.T) {
	withDequeRoom(t, 64, 130) // room for the model's at most 60 entities
	checkAgainstSortedModel(t)
}

func checkAgainstSortedModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		q := newRunQueue(Policy(rapid.IntRange(0, int(PolicyRoundRobin)).Draw(rt, "policy")))
		n := rapid.IntRange(1, 60).Draw(rt, "entities")
		all := make([]*Entity, n)
		runtime := make(map[*Entity]int64, n)
		for i := range all {
			all[i] = newTestEntity(uint64(i+1), Priority(rapid.IntRange(0, int(numPriorities)-1).Draw(rt, "prio")))
		}
		members := make(map[*Entity]bool, n)
		var now int64
		pick := func(label string) *Entity { return all[rapid.IntRange(0, n-1).Draw(rt, label)] }
		rt.Repeat(map[string]func(*rapid.T){
			"add": func(rt *rapid.T) {
				e := pick("e")
				now += rapid.Int64Range(0, 3).Draw(rt, "dt")
				q.add(e, now, rapid.Int64Range(0, 5000).Draw(rt, "avgEntity"), rapid.Int64Range(0, 5000).Draw(rt, "avgSched"))
				members[e] = true
			},
			"remove": func(rt *rapid.T) {
				e := pick("e")
				q.remove(e)
				delete(members, e)
			},
			"removeHead": func(rt *rapid.T) {
				if e := q.peek(); e != nil {
					q.remove(e)
					delete(members, e)
				}
			},
			"popped": func(rt *rapid.T) {
				e := pick("e")
				if rapid.Bool().Draw(rt, "head") && q.peek() != nil {
					e = q.peek()
				}
				runtime[e] += rapid.Int64Range(0, 100_000).Draw(rt, "runtime")
				now += rapid.Int64Range(0, 3).Draw(rt, "dt")
				q.popped(e, runtime[e], now-rapid.Int64Range(0, 10).Draw(rt, "age"))
			},
			"setPriority": func(rt *rapid.T) {
				q.setPriority(pick("e"), Priority(rapid.IntRange(0, int(numPriorities)-1).Draw(rt, "p")))
			},
			"": func(rt *rapid.T) { checkRunQueue(rt, q, members, all) },
		})
		want := sortedMembers(q.policy, members)
		for _, w := range want {
			require.Same(rt, w, q.peek())
			q.remove(w)
		}
		require.Nil(rt, q.peek())
	})
}

// TestFairRunQueuePlacesAndChargesAsSchedRQ walks the fair policy through the
// rules of sched_rq.c: a pop charges the GPU time since the last charge shifted by
// the priority's vruntime_shift; an entity with nothing saved joins relative to
// the head (drm_sched_entity_restore_vruntime); one that leaves above the minimum
// keeps its distance, one that leaves at it saves nothing
// (drm_sched_entity_save_vruntime).
func TestFairRunQueuePlacesAndChargesAsSchedRQ(t *testing.T) {
	q := newRunQueue(PolicyFair)
	head := newTestEntity(1, PriorityNormal)
	q.add(head, 0, 0, 0)
	require.Equal(t, int64(0), head.rq.vruntime, "first into an empty queue: at the minimum, 0")
	q.popped(head, 1000, 0)
	require.Equal(t, int64(1000<<4), head.rq.vruntime, "charged its GPU time << 4 (normal priority)")
	q.popped(head, 1500, 0)
	require.Equal(t, int64(1500<<4), head.rq.vruntime, "charged only the time since the last charge")
	min := head.rq.vruntime

	for _, tc := range []struct {
		name       string
		prio       Priority
		avgE, avgS int64
		want       int64
	}{
		{"equal priority, shorter jobs: just ahead", PriorityNormal, 100, 200, min - 1},
		{"equal priority, equal jobs: just ahead", PriorityNormal, 200, 200, min - 1},
		{"equal priority, longer jobs: just behind", PriorityNormal, 300, 200, min + 1},
		{"higher priority: ahead by the priority gap", PriorityKernel, 0, 0, min - 2},
		{"lower priority: behind by the average job times, scaled", PriorityLow, 300, 200, min + (1000+300+200)<<7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEntity(2, tc.prio)
			q.add(e, 0, tc.avgE, tc.avgS)
			require.Equal(t, tc.want, e.rq.vruntime)
			require.Equal(t, tc.want < min, q.peek() == e, "e is the head")
			q.remove(e)
			require.Same(t, head, q.peek())
		})
	}

	e := newTestEntity(3, PriorityNormal)
	q.add(e, 0, 300, 200) // just behind the head
	q.popped(e, 500, 0)
	dist := e.rq.vruntime - head.rq.vruntime
	q.remove(e)
	require.Equal(t, dist, e.rq.savedRel, "left above the minimum: its distance is saved")
	q.popped(head, 2500, 0) // the minimum moves on while e is away
	q.add(e, 0, 0, 0)
	require.Equal(t, head.rq.vruntime+dist, e.rq.vruntime, "back at the new minimum plus its distance")

	q.remove(head)
	require.Zero(t, head.rq.savedRel, "left below the minimum: nothing saved")
	q.add(head, 0, 0, 1)
	require.Equal(t, e.rq.vruntime-1, head.rq.vruntime, "nothing saved: just ahead of the head")
	require.Same(t, head, q.peek())
}

// TestRunQueueDequeCompactsTombstones removes entities from the middle of the
// back deque, where they leave tombstones, until the tombstones outnumber the
// living and are compacted away; the order and the positions hold throughout.
func TestRunQueueDequeCompactsTombstones(t *testing.T) {
	q := newRunQueue(PolicyRoundRobin)
	all := make([]*Entity, 100)
	members := make(map[*Entity]bool)
	for i := range all {
		all[i] = newTestEntity(uint64(i+1), PriorityNormal)
		q.add(all[i], 0, 0, 0)
		members[all[i]] = true
	}
	require.Equal(t, 100, q.deque.len(), "round robin: every entity joins at the back")
	compacted := false
	for i := 1; i < 99; i++ { // all but the ends
		q.remove(all[i])
		delete(members, all[i])
		compacted = compacted || q.deque.dead == 0
		checkRunQueue(t, q, members, all)
	}
	require.True(t, compacted, "the tombstones were never compacted")
	for range 3 * len(all) { // turns: the head goes to the back
		q.popped(q.peek(), 0, 0)
		checkRunQueue(t, q, members, all)
	}
}

// TestFairRunQueueJoinAheadOfHeadUsesDequeFront adds, to a fair queue whose
// entities sit in the heap, short-job entities that rejoin just ahead of the head
// (min-1, as drm_sched_rq_add_entity places them): each goes to the front of the
// deque, not into the heap, runs as the head and leaves from the front, and the
// heap is not touched. A more important newcomer goes ahead of them the same way;
// one removed from behind the front leaves a tombstone that the order skips.
func TestFairRunQueueJoinAheadOfHeadUsesDequeFront(t *testing.T) {
	q := newRunQueue(PolicyFair)
	var all []*Entity
	members := make(map[*Entity]bool)
	newE := func(p Priority) *Entity {
		e := newTestEntity(uint64(len(all)+1), p)
		all = append(all, e)
		return e
	}
	for i := range 20 { // charged out of order: most end up in the heap
		e := newE(PriorityNormal)
		q.add(e, 0, 1, 0) // longer jobs than the scheduler's: just behind the head
		members[e] = true
		q.popped(e, int64((i*7)%20)*1000, 0)
		checkRunQueue(t, q, members, all)
	}
	require.NotEmpty(t, q.items)
	heap := slices.Clone(q.items)

	a := newE(PriorityNormal)
	min := q.peek().rq.vruntime
	q.add(a, 0, 0, 0) // short jobs: just ahead of the head
	members[a] = true
	checkRunQueue(t, q, members, all)
	require.Equal(t, min-1, a.rq.vruntime)
	require.Equal(t, dequeIndex(q.deque.head), a.rq.index, "a joined at the deque's front")
	require.Same(t, a, q.peek())

	b := newE(PriorityNormal)
	q.add(b, 0, 0, 0)
	members[b] = true
	k := newE(PriorityKernel)
	q.add(k, 0, 0, 0) // more important: ahead by the priority gap
	members[k] = true
	checkRunQueue(t, q, members, all)
	require.Equal(t, a.rq.vruntime-1, b.rq.vruntime)
	require.Equal(t, b.rq.vruntime-2, k.rq.vruntime)
	require.Equal(t, dequeIndex(q.deque.head), k.rq.index, "k joined at the deque's front")
	require.Equal(t, dequeIndex(q.deque.head+1), b.rq.index)

	q.remove(b) // behind the front: a tombstone
	delete(members, b)
	checkRunQueue(t, q, members, all)
	require.Equal(t, 1, q.deque.dead)
	for _, e := range []*Entity{k, a} { // each runs its one job and leaves
		require.Same(t, e, q.peek())
		q.remove(e)
		delete(members, e)
		checkRunQueue(t, q, members, all)
	}
	require.Zero(t, q.deque.dead, "the tombstone left with the ends")
	require.Equal(t, heap, q.items, "the heap was not touched")
}

// withDequeRoom runs the rest of the test with deque positions in [0, limit),
// an empty deque starting at origin, so that rebasing comes after a few joins.
func withDequeRoom(t *testing.T, origin, limit int) {
	was, wasLimit := dequeOrigin, dequeLimit
	t.Cleanup(func() { dequeOrigin, dequeLimit = was, wasLimit })
	dequeOrigin, dequeLimit = origin, limit
}

// Round robin sends every entity it runs to the back of the deque, which never
// empties: its end climbs one position a job until it runs out of room, and
// rebase moves everything back to the origin, keeping the order and the indices
// right.
func TestRunQueueDequeRebasesAtTheBack(t *testing.T) {
	withDequeRoom(t, 4, 16)
	q := newRunQueue(PolicyRoundRobin)
	all := []*Entity{newTestEntity(1, PriorityNormal), newTestEntity(2, PriorityNormal), newTestEntity(3, PriorityNormal)}
	members := make(map[*Entity]bool)
	for _, e := range all {
		q.add(e, 0, 0, 0)
		members[e] = true
	}
	for turn := range 100 {
		e := q.peek()
		require.Same(t, all[turn%len(all)], e, "turn %d", turn)
		q.popped(e, 0, 0)
		checkRunQueue(t, q, members, all)
	}
}

// Fair entities that keep rejoining ahead of the head push the deque's front
// down one position each, past position 0: rebase makes room, and the newest is
// still the head, followed by the others newest first.
func TestRunQueueDequeRebasesAtTheFront(t *testing.T) {
	withDequeRoom(t, 4, 64)
	q := newRunQueue(PolicyFair)
	var all []*Entity
	members := make(map[*Entity]bool)
	for i := range 20 {
		e := newTestEntity(uint64(i+1), PriorityNormal)
		all = append(all, e)
		q.add(e, 0, 0, 0) // short jobs: just ahead of the head
		members[e] = true
		checkRunQueue(t, q, members, all)
		require.Same(t, e, q.peek())
	}
	for i := len(all) - 1; i >= 0; i-- {
		require.Same(t, all[i], q.peek())
		q.remove(all[i])
		delete(members, all[i])
		checkRunQueue(t, q, members, all)
	}
}
