package lockdep_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// orderModel is the simplest model of lock ordering: an edge from every class held
// to each class taken, and a deadlock as soon as the edges form a cycle. Lockdep
// records only the edge from the innermost held lock, but with exclusive, blocking
// locks the transitive closure is the same, so a cycle report must come exactly when
// the model first has a cycle.
type orderModel struct {
	n     int
	edges [][]bool // edges[from][to]
}

func newOrderModel(n int) *orderModel {
	m := &orderModel{n: n, edges: make([][]bool, n)}
	for i := range m.edges {
		m.edges[i] = make([]bool, n)
	}
	return m
}

// take records that class next was taken while held were held.
func (m *orderModel) take(held []int, next int) {
	for _, h := range held {
		m.edges[h][next] = true
	}
}

func (m *orderModel) hasCycle() bool {
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]int, m.n)
	var visit func(int) bool
	visit = func(v int) bool {
		state[v] = onPath
		for w := range m.n {
			if !m.edges[v][w] {
				continue
			}
			if state[w] == onPath || (state[w] == unseen && visit(w)) {
				return true
			}
		}
		state[v] = done
		return false
	}
	for v := range m.n {
		if state[v] == unseen && visit(v) {
			return true
		}
	}
	return false
}

// lockStep is one annotation of a planned goroutine: take or release a class.
type lockStep struct {
	acquire bool
	class   int
}

func TestCycleReportedIffOrderGraphHasCycle(t *testing.T) {
	const maxClasses = 6
	classes := make([]*lockdep.Class, maxClasses)
	index := make(map[string]int, maxClasses)
	for i := range classes {
		name := fmt.Sprintf("P%d", i)
		classes[i] = lockdep.NewClass(name)
		index[name] = i
	}

	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(4, maxClasses).Draw(rt, "classes")
		ids := make([]int, n)
		for i := range ids {
			ids[i] = i
		}

		// Plan the goroutines: each takes a random subset of the classes in a
		// random order, nested, and releases them in another random order.
		plans := make([][]lockStep, rapid.IntRange(1, 6).Draw(rt, "goroutines"))
		for g := range plans {
			order := rapid.Permutation(ids).Draw(rt, fmt.Sprintf("order%d", g))
			taken := order[:rapid.IntRange(1, n).Draw(rt, fmt.Sprintf("depth%d", g))]
			released := rapid.Permutation(taken).Draw(rt, fmt.Sprintf("release%d", g))
			for _, cl := range taken {
				plans[g] = append(plans[g], lockStep{acquire: true, class: cl})
			}
			for _, cl := range released {
				plans[g] = append(plans[g], lockStep{class: cl})
			}
		}

		// The step at which the model first has a cycle, or -1.
		model := newOrderModel(n)
		var atCycle [][]bool // the model's edges when it first had a cycle
		firstCycle := -1
		step := 0
		for _, plan := range plans {
			var held []int
			for _, s := range plan {
				if s.acquire {
					model.take(held, s.class)
					held = append(held, s.class)
					if firstCycle < 0 && model.hasCycle() {
						firstCycle = step
						for _, row := range model.edges {
							atCycle = append(atCycle, append([]bool(nil), row...))
						}
					}
				} else {
					for i, h := range held {
						if h == s.class {
							held = append(held[:i], held[i+1:]...)
							break
						}
					}
				}
				step++
			}
		}

		// Run the plan, one goroutine after the other, noting how many reports
		// there are after each step.
		c, col := lockdeptest.Collect(t, lockdep.ReportAll())
		maps := make([]*lockdep.Map, n)
		for i := range maps {
			maps[i] = &lockdep.Map{Class: classes[i], Checker: c}
		}
		var seen []int
		for _, plan := range plans {
			runOnGoroutine(func() {
				for _, s := range plan {
					if s.acquire {
						maps[s.class].Acquire(lockdep.Exclusive)
					} else {
						maps[s.class].Release()
					}
					seen = append(seen, len(col.Reports()))
				}
			})
		}

		if firstCycle < 0 {
			require.Empty(rt, col.Kinds())
			return
		}
		for i := range firstCycle {
			require.Zero(rt, seen[i], "report at step %d, before the model has a cycle (step %d)", i, firstCycle)
		}
		require.Equal(rt, 1, seen[firstCycle], "the step that closes the first cycle reports it once")
		r := col.Reports()[0]
		require.Equal(rt, lockdep.KindCircular, r.Kind)
		cycle := r.Cycle()
		require.GreaterOrEqual(rt, len(cycle), 2)
		for i, from := range cycle {
			to := cycle[(i+1)%len(cycle)]
			assert.True(rt, atCycle[index[from]][index[to]], "reported link %s -> %s is an order the model saw", from, to)
		}
	})
}
