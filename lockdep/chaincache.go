package lockdep

import "sync/atomic"

// chainTable is the chain cache: the set of held-lock chains already validated.
// Models lockdep's chain_hashtable. Readers probe it without a lock; writers hold the
// checker's graph lock and publish a larger copy when it fills, so a reader sees
// either the old or the new table, both consistent (a miss only sends it to the
// slow path, which looks again under the lock).
//
// Keys are 64-bit hashes of the chain, as the kernel's chain_key is; a collision
// would skip one validation, which the kernel also accepts.
type chainTable struct {
	slots []atomic.Uint64 // open addressing, linear probing; 0 = empty
	mask  uint64
	n     int // guarded by the checker's graph lock
}

func newChainTable(size int) *chainTable {
	return &chainTable{slots: make([]atomic.Uint64, size), mask: uint64(size - 1)}
}

func (t *chainTable) contains(k uint64) bool {
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		switch t.slots[i].Load() {
		case k:
			return true
		case 0:
			return false
		}
	}
}

// insert adds k and returns the table to publish (t itself, or a grown copy).
// Callers hold the graph lock.
func (t *chainTable) insert(k uint64) *chainTable {
	if t.contains(k) {
		return t
	}
	if 2*(t.n+1) > len(t.slots) {
		g := newChainTable(2 * len(t.slots))
		for i := range t.slots {
			if v := t.slots[i].Load(); v != 0 {
				g.put(v)
			}
		}
		t = g
	}
	t.put(k)
	return t
}

func (t *chainTable) put(k uint64) {
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].Load() == 0 {
			t.slots[i].Store(k)
			t.n++
			return
		}
	}
}

// chainKey extends the chain key prev with one acquisition. The mode and trylock
// bit are part of the key because the dependencies an acquisition adds depend on them.
func chainKey(prev uint64, class *Class, mode Mode, try bool) uint64 {
	x := uint64(class.id)<<3 | uint64(mode)<<1
	if try {
		x |= 1
	}
	// One mix over the chain so far and the new entry (spread by a multiply):
	// the lookup waits on this, so it stays short.
	k := mix(prev ^ x*0x9e3779b97f4a7c15)
	if k == 0 {
		k = 1
	}
	return k
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
