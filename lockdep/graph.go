package lockdep

import "slices"

// The dependency graph: one node per class, an edge prev -> next for every
// "next acquired while prev held" seen. Guarded by Checker.mu.
//
// Each edge carries the set of dependency types it was seen with, as in
// lockdep-design.rst: the first letter says how prev was held (E exclusive, S
// shared: any reader), the second how next was taken (R recursive read, N anything
// else). A cycle is a deadlock only if it is "strong": no edge ending in R is
// followed by an edge starting with S, because two recursive readers of one lock
// never block each other.

const (
	depSR uint8 = 1 << iota
	depSN
	depER
	depEN

	depFromS = depSR | depSN
	depToN   = depSN | depEN
)

func depType(prev, next Mode) uint8 {
	i := 0
	if prev == Exclusive {
		i |= 2
	}
	if next != RecursiveRead {
		i |= 1
	}
	return 1 << i
}

type node struct {
	class *Class
	out   []edge
	index map[uint32]int // to -> position in out; built once out grows past a few edges
}

type edge struct {
	to    uint32
	dep   uint8
	gid   int64     // goroutine that first took this dependency
	stack []uintptr // where it was first taken
}

const indexAfter = 8

func (c *Checker) node(cl *Class) *node {
	for int(cl.id) >= len(c.nodes) {
		c.nodes = append(c.nodes, nil)
	}
	n := c.nodes[cl.id]
	if n == nil {
		n = &node{class: cl}
		c.nodes[cl.id] = n
	}
	return n
}

func (n *node) edge(to uint32) *edge {
	if n.index != nil {
		if i, ok := n.index[to]; ok {
			return &n.out[i]
		}
		return nil
	}
	for i := range n.out {
		if n.out[i].to == to {
			return &n.out[i]
		}
	}
	return nil
}

func (n *node) addEdge(e edge) {
	n.out = append(n.out, e)
	if n.index == nil && len(n.out) > indexAfter {
		n.index = make(map[uint32]int, 2*len(n.out))
		for i := range n.out {
			n.index[n.out[i].to] = i
		}
	} else if n.index != nil {
		n.index[e.to] = len(n.out) - 1
	}
}

// bfsVisit is one step of the search: the node reached, whether only through
// edges ending in R (xr), and how (the edge and the step it came from), so the path
// can be printed.
type bfsVisit struct {
	id     uint32
	xr     bool
	parent int32 // index in the queue, -1 for the root
	from   uint32
	edge   int32 // index in nodes[from].out
}

// strongPath looks for a strong path from next (taken in nextMode) back to prev
// (held in prevMode), which together with a new edge prev -> next would close a
// strong cycle. It returns the edges of the path, in order, or nil. Models
// check_noncircular() with the hlock_conflict() match of the recursive-read
// aware lockdep (kernel 5.10 and later).
//
// A node is visited at most once per xr state, where the kernel keeps one flag per
// node: a node first reached only through R-ending edges may still be reached later
// through an N-ending one, which allows more paths out of it. The visited marks are
// generation-stamped and the queue is reused, as the kernel's BFS generation ids
// are, so a search allocates nothing once warm. Called with c.mu held.
func (c *Checker) strongPath(next *Class, nextMode Mode, prev *Class, prevMode Mode) []*edge {
	if int(next.id) >= len(c.nodes) || c.nodes[next.id] == nil {
		return nil
	}
	matches := func(id uint32, xr bool) bool {
		return id == prev.id && (prevMode == Exclusive || !xr)
	}
	rootXR := nextMode == RecursiveRead
	if matches(next.id, rootXR) {
		return []*edge{}
	}
	c.bfsGen++
	if need := 2 * len(c.nodes); len(c.bfsSeen) < need {
		c.bfsSeen = append(c.bfsSeen, make([]uint64, need-len(c.bfsSeen))...)
	}
	seen := func(id uint32, xr bool) bool {
		i := 2 * int(id)
		if xr {
			i++
		}
		if c.bfsSeen[i] == c.bfsGen {
			return true
		}
		c.bfsSeen[i] = c.bfsGen
		return false
	}
	seen(next.id, rootXR)
	q := append(c.bfsQueue[:0], bfsVisit{id: next.id, xr: rootXR, parent: -1})
	defer func() { c.bfsQueue = q[:0] }()
	for head := 0; head < len(q); head++ {
		v := q[head]
		n := c.nodes[v.id]
		if n == nil {
			continue
		}
		for i := range n.out {
			e := &n.out[i]
			dep := e.dep
			if v.xr {
				dep &^= depFromS
			}
			if dep == 0 {
				continue
			}
			xr := dep&depToN == 0
			if seen(e.to, xr) {
				continue
			}
			q = append(q, bfsVisit{id: e.to, xr: xr, parent: int32(head), from: v.id, edge: int32(i)})
			if matches(e.to, xr) {
				var path []*edge
				for j := len(q) - 1; q[j].parent >= 0; j = int(q[j].parent) {
					path = append(path, &c.nodes[q[j].from].out[q[j].edge])
				}
				slices.Reverse(path)
				return path
			}
		}
	}
	return nil
}
