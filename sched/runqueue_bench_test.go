package sched

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
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
	var next Job
	if !last {
		s.runtime[i] += 100 + s.rng.Int64N(400)
		next.submitTS = s.queued[i][0]
	}
	for j := 0; j < 2048; j += 64 {
		s.junk[s.off+j]++
	}
	s.off = (s.off + 2048) % len(s.junk)
	t0 = time.Now()
	if last {
		s.q.remove(e)
	} else {
		s.q.popped(e, s.runtime[i], &next)
	}
	s.spent += time.Since(t0)
}

// BenchmarkRunQueue is one job's run-queue work (a push, a pick, the update
// after the pop) with 10 and with 10,000 busy entities, per policy. Reports
// rq-ns/job, the time in the run queue's calls (clock reads included), and
// queued-entities at the end.
func BenchmarkRunQueue(b *testing.B) {
	for _, p := range []Policy{PolicyFair, PolicyFIFO, PolicyRoundRobin} {
		for _, n := range []int{10, 10_000} {
			b.Run(fmt.Sprintf("policy=%v/entities=%d", p, n), func(b *testing.B) {
				s := newRQSim(p, n, 8)
				for b.Loop() {
					s.push()
					s.run()
				}
				var in int
				for _, e := range s.es {
					if s.q.has(e) {
						in++
					}
				}
				b.ReportMetric(float64(s.spent.Nanoseconds())/float64(b.N), "rq-ns/job")
				b.ReportMetric(float64(in), "queued-entities")
			})
		}
	}
}
