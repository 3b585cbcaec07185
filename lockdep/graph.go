package lockdep

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

// bfsState is a node reached only through edges ending in R (xr) or not.
type bfsState struct {
	id uint32
	xr bool
}

type bfsVisit struct {
	parent int // index in the visit list, -1 for the root
	via    *edge
	st     bfsState
}

// strongPath looks for a strong path from next (taken in nextMode) back to prev
// (held in prevMode), which together with a new edge prev -> next would close a
// strong cycle. It returns the edges of the path, in order, or nil. Models
// check_noncircular() with the hlock_conflict() match of the recursive-read
// aware lockdep (kernel 5.10 and later).
//
// A node is visited at most once per xr state, where the kernel keeps one flag per
// node: a node first reached only through R-ending edges may still be reached later
// through an N-ending one, which allows more paths out of it.
func (c *Checker) strongPath(next *Class, nextMode Mode, prev *Class, prevMode Mode) []*edge {
	if int(next.id) >= len(c.nodes) || c.nodes[next.id] == nil {
		return nil
	}
	matches := func(s bfsState) bool {
		return s.id == prev.id && (prevMode == Exclusive || !s.xr)
	}
	root := bfsState{id: next.id, xr: nextMode == RecursiveRead}
	if matches(root) {
		return []*edge{}
	}
	seen := map[bfsState]bool{root: true}
	q := []bfsVisit{{parent: -1, st: root}}
	for head := 0; head < len(q); head++ {
		v := q[head]
		n := c.nodes[v.st.id]
		if n == nil {
			continue
		}
		for i := range n.out {
			e := &n.out[i]
			dep := e.dep
			if v.st.xr {
				dep &^= depFromS
			}
			if dep == 0 {
				continue
			}
			st := bfsState{id: e.to, xr: dep&depToN == 0}
			if seen[st] {
				continue
			}
			seen[st] = true
			q = append(q, bfsVisit{parent: head, via: e, st: st})
			if matches(st) {
				var path []*edge
				for j := len(q) - 1; j > 0; j = q[j].parent {
					path = append(path, q[j].via)
				}
				for l, r := 0, len(path)-1; l < r; l, r = l+1, r-1 {
					path[l], path[r] = path[r], path[l]
				}
				return path
			}
		}
	}
	return nil
}
