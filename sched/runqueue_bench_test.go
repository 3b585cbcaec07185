package sched

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gpusync/gpusync/internal/benchcmp"
)

// rqSim replays, on a bare run queue, the traffic of BenchmarkManyEntities: a
// producer pushes jobs round robin over n entities, each with a standing backlog,
// and the run worker takes the head entity's oldest job. Everything else a job
// costs is left out but its memory traffic: each job streams through junk, 2 KiB
// of fresh cache lines, as a job's allocations do, so that the run queue's lines
// are no warmer than in the scheduler. Only the run queue's calls are timed.
type rqSim struct {
	q       *runQueue
	es      []*Entity
	queued  [][]int64 // per entity: the push stamps of its queued jobs, oldest first
	runtime []int64   // per entity: GPU time so far (fair)
	next    int       // next entity to push to
	now     int64     // push stamps
	rng     *rand.Rand
	junk    []byte
	off     int
	spent   time.Duration // in the run queue's calls
}

func newRQSim(p Policy, n, depth int) *rqSim {
	s := &rqSim{q: newRunQueue(p), es: make([]*Entity, n), queued: make([][]int64, n), runtime: make([]int64, n),
		rng: rand.New(rand.NewPCG(1, 2)), junk: make([]byte, 64<<20)}
	for i := range s.es {
		e := &Entity{id: uint64(i + 1)}
		e.rq.index = -1
		e.rq.prio = PriorityNormal
		s.es[i] = e
	}
	for range n * depth {
		s.push()
	}
	return s
}

func (s *rqSim) push() {
	i := s.next
	s.next = (s.next + 1) % len(s.es)
	s.now++
	s.queued[i] = append(s.queued[i], s.now)
	if len(s.queued[i]) == 1 {
		t0 := time.Now()
		s.q.add(s.es[i], s.now, 0, 0)
		s.spent += time.Since(t0)
	}
}

// run takes one job, as popJob does: the entity leaves when it ran dry, else it
// is charged (fair: a noisy few hundred ns per job, as the wall clock gives) and
// keyed on its next job.
func (s *rqSim) run() {
	t0 := time.Now()
	e := s.q.peek()
	s.spent += time.Since(t0)
	i := int(e.id - 1)
	s.queued[i] = s.queued[i][1:]
	last := len(s.queued[i]) == 0
	var nextSubmit int64
	if !last {
		s.runtime[i] += 100 + s.rng.Int64N(400)
		nextSubmit = s.queued[i][0]
	}
	for j := 0; j < 2048; j += 64 {
		s.junk[s.off+j]++
	}
	s.off = (s.off + 2048) % len(s.junk)
	t0 = time.Now()
	if last {
		s.q.remove(e)
	} else {
		s.q.popped(e, s.runtime[i], nextSubmit)
	}
	s.spent += time.Since(t0)
}

// side runs k jobs and returns the time they spent in the run queue's calls.
func (s *rqSim) side(k int) time.Duration {
	before := s.spent
	for range k {
		s.push()
		s.run()
	}
	return s.spent - before
}

// queuedEntities is how many entities are on the run queue.
func (s *rqSim) queuedEntities() int {
	var n int
	for _, e := range s.es {
		if s.q.has(e) {
			n++
		}
	}
	return n
}

// BenchmarkRunQueue is one job's run-queue work (a push, a pick, the update
// after the pop) with 10,000 busy entities against 10, per policy, the two in
// alternating blocks. Reports rq-ns/job for each (the time in the run queue's
// calls, clock reads included: about 20 ns each), their ratio rq-10k/10, and
// how many of the 10,000 were queued at the end.
func BenchmarkRunQueue(b *testing.B) {
	for _, p := range []Policy{PolicyFair, PolicyFIFO, PolicyRoundRobin} {
		b.Run("policy="+p.String(), func(b *testing.B) {
			few, many := newRQSim(p, 10, 8), newRQSim(p, 10_000, 8)
			b.ResetTimer()
			t := benchcmp.Run(b.N, few.side, many.side)
			b.StopTimer()
			b.ReportMetric(benchcmp.PerOp(t[1], b.N), "rq-ns/job")
			b.ReportMetric(benchcmp.PerOp(t[0], b.N), "10-rq-ns/job")
			b.ReportMetric(benchcmp.Ratio(t[1], t[0]), "rq-10k/10")
			b.ReportMetric(float64(many.queuedEntities()), "queued-entities")
		})
	}
}
