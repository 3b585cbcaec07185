package sched_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/internal/benchcmp"
	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/sched"
)

// The benchmarks of issue 6's table. A ratio benchmark times its baseline in the
// same run, in blocks alternating with the code under test, and reports the ratio
// under the unit name the table gives; ns/op is the time of one job of ours, and
// the baseline's is reported beside it.
//
// Everything runs in the production configuration: a disabled lockdep checker
// (every annotation costs one atomic load) given to the scheduler and to every
// fence context, a credit limit (1<<20) that never throttles, a TDR timeout that
// is armed but never fires, and hardware that is done at once: RunJob makes the
// job's hardware fence, signals it and returns it, so the job completes inside the
// run worker and what is timed is the scheduler's own path (Push, the run worker,
// RunJob, the completion callback, the free worker).

// benchOff is a disabled checker, the production configuration.
func benchOff() *lockdep.Checker { return lockdep.NewChecker(lockdep.Off()) }

// benchRing is one scheduler whose hardware completes every job at once, with a
// count of the jobs it freed and of the timeouts, so that a benchmark can check
// that nothing was lost and that the TDR stayed quiet.
type benchRing struct {
	s        *sched.Scheduler
	freed    atomic.Int64
	timeouts atomic.Int64
}

// newBenchRing starts a scheduler named name with policy p on checker chk. RunJob
// takes the next fence of the ring's own hardware context, signals it and returns
// it: the hardware fence of a job that finished as soon as it was submitted.
// onRun, if not nil, is called by RunJob.
func newBenchRing(b *testing.B, name string, p sched.Policy, chk *lockdep.Checker, onRun func()) *benchRing {
	b.Helper()
	hw := fence.NewContext("bench", name+"-hw", fence.WithChecker(chk))
	r := &benchRing{}
	s, err := sched.New(sched.Config{
		Name:        name,
		CreditLimit: 1 << 20,
		Timeout:     10 * time.Second,
		Policy:      p,
		Checker:     chk,
		Ops: sched.Ops{
			RunJob: func(*sched.Job) (*fence.Fence, error) {
				f := hw.Next() // only the run worker calls RunJob: no lock needed
				_ = f.Signal()
				if onRun != nil {
					onRun()
				}
				return f, nil
			},
			TimedOutJob: func(*sched.Job) sched.Status {
				r.timeouts.Add(1) // cannot happen: every hardware fence signals at once
				return sched.StatusReset
			},
			FreeJob: func(*sched.Job) { r.freed.Add(1) },
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	r.s = s
	return r
}

// entities makes n entities of normal priority on r.
func (r *benchRing) entities(b *testing.B, n int) []*sched.Entity {
	b.Helper()
	es := make([]*sched.Entity, n)
	for i := range es {
		e, err := r.s.NewEntity(sched.PriorityNormal)
		if err != nil {
			b.Fatal(err)
		}
		es[i] = e
	}
	return es
}

// close destroys es (each waits for its queue to drain), closes the scheduler and
// checks that it freed every one of the pushed jobs and timed none out.
func (r *benchRing) close(b *testing.B, es []*sched.Entity, pushed int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, e := range es {
		if err := e.Destroy(ctx); err != nil {
			b.Errorf("%s: destroying an entity: %v", r.s.Name(), err)
		}
	}
	r.s.Close()
	if n := r.timeouts.Load(); n != 0 {
		b.Errorf("%s: %d jobs timed out", r.s.Name(), n)
	}
	if got := r.freed.Load(); got != pushed {
		b.Errorf("%s: %d jobs freed, want %d", r.s.Name(), got, pushed)
	}
}

// benchSubmit makes, arms and pushes a one-credit job on e.
func benchSubmit(b *testing.B, e *sched.Entity) *sched.Job {
	j, err := e.NewJob(1, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := j.Arm(); err != nil {
		b.Fatal(err)
	}
	if err := j.Push(); err != nil {
		b.Fatal(err)
	}
	return j
}

func benchWait(b *testing.B, f *fence.Fence) {
	if err := f.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := f.Error(); err != nil {
		b.Fatalf("job %d finished with %v", f.Seqno(), err)
	}
}

// BenchmarkJobPipeline compares the cost of one job through the scheduler with the
// cost of one item through a plain Go pipeline. Reports job/pipeline (goal <= 2).
//
// Ours, per block of k jobs: the benchmark goroutine makes, arms and pushes k jobs
// on one entity (NewJob, Arm: the job and its scheduled and finished fences; Push:
// onto the entity's queue, waking the run worker), then waits for the last job's
// finished fence. The run worker pops each job, calls RunJob (which makes and
// signals the hardware fence), and the completion signals the finished fence; the
// free worker calls FreeJob, which counts.
//
// The pipeline, per block of k items: the benchmark goroutine allocates k items,
// each with its own done channel (the job and its finished fence), and sends each
// on a channel buffered for a whole block (the entity's queue, which never blocks
// Push); one worker goroutine receives each item in order and closes its done
// channel (runs it and signals it); the benchmark goroutine waits for the last
// item's done channel. Both sides overlap producing and consuming in the same way,
// and both pay a goroutine hand-off only when the worker ran dry.
func BenchmarkJobPipeline(b *testing.B) {
	chk := benchOff()
	r := newBenchRing(b, "pipeline", sched.PolicyFair, chk, nil)
	es := r.entities(b, 1)
	e := es[0]

	type item struct {
		done chan struct{} // closed when the item is done
	}
	in := make(chan *item, benchcmp.Block)
	var wg sync.WaitGroup
	wg.Go(func() {
		for it := range in {
			close(it.done)
		}
	})

	// The floor: the same pipeline carrying what a job must carry, whatever
	// schedules it (floorJob): each item is a job with its two fences, in one
	// allocation; the worker makes and signals a hardware fence, as RunJob does,
	// reads the clock once and signals the scheduled and finished fences with
	// that time; the submitter waits on the last finished fence.
	floorIn := make(chan *floorJob, benchcmp.Block)
	fctx := [2]*fence.Context{
		fence.NewContext("bench", "floor-scheduled", fence.WithChecker(chk), fence.WithTimestamps()),
		fence.NewContext("bench", "floor-finished", fence.WithChecker(chk), fence.WithTimestamps()),
	}
	floorHW := fence.NewContext("bench", "floor-hw", fence.WithChecker(chk))
	wg.Go(func() {
		for j := range floorIn {
			hw := floorHW.Next()
			_ = hw.Signal()
			j.parent = hw
			now := time.Now()
			_ = j.scheduled.SignalTimestamp(now)
			_ = j.finished.SignalTimestamp(now)
		}
	})
	var floorSeq uint64

	pipeline := benchcmp.Loop(func(k int) {
		var last *item
		for range k {
			it := &item{done: make(chan struct{})}
			in <- it
			last = it
		}
		<-last.done
	})
	ours := benchcmp.Loop(func(k int) {
		var last *sched.Job
		for range k {
			last = benchSubmit(b, e)
		}
		benchWait(b, last.Finished())
	})
	floor := benchcmp.Loop(func(k int) {
		var last *floorJob
		for range k {
			floorSeq++
			j := &floorJob{}
			_ = fctx[0].Init(&j.scheduled, floorSeq)
			_ = fctx[1].Init(&j.finished, floorSeq)
			floorIn <- j
			last = j
		}
		benchWait(b, &last.finished)
	})
	b.ResetTimer()
	t := benchcmp.Run(b.N, pipeline, ours, floor)
	b.StopTimer()

	close(in)
	close(floorIn)
	wg.Wait()
	r.close(b, es, int64(b.N))
	b.ReportMetric(benchcmp.PerOp(t[1], b.N), "ns/op")
	b.ReportMetric(benchcmp.PerOp(t[0], b.N), "pipeline-ns/op")
	b.ReportMetric(benchcmp.Ratio(t[1], t[0]), "job/pipeline")
	b.ReportMetric(benchcmp.Ratio(t[2], t[0]), "floor/pipeline")
}

// floorJob is what a job carries whatever schedules it: the driver's payload, its
// two fences in one allocation (as struct drm_sched_fence holds both), the
// hardware fence, its dependencies and the scheduler's bookkeeping, sized as
// sched.Job is (320 bytes on 64-bit platforms) so that allocating one costs the
// same.
type floorJob struct {
	_         any            // the driver's payload
	_         []*fence.Fence // dependencies
	scheduled fence.Fence
	finished  fence.Fence
	parent    *fence.Fence
	_         fence.Callback // on the hardware fence
	_         [10]uint64     // the rest of sched.Job: queue link, clock readings, state
}

// busyRing is a scheduler whose entities all have queued work, all the time: a
// block pushes k jobs while the scheduler runs k, on top of a standing backlog of
// depth jobs per entity, so that the run queue holds (about) every entity
// throughout. Which job runs when is the policy's choice (the fair policy does not
// go round robin), so a block ends at the k-th RunJob call, not on a particular
// job's fence; RunJob reads the clock there itself, because the goroutine it wakes
// may get a CPU only a few milliseconds later, while the run worker goes on with
// the backlog. The scheduler is paused between blocks, so that it does no work
// while the other side is timed; the jobs it ran before the pause took effect
// (untimed) are replaced, untimed, before the next block.
type busyRing struct {
	*benchRing
	es      []*sched.Entity
	pushed  []int64       // jobs pushed on each entity
	backlog int           // jobs queued when a block starts: depth per entity
	next    int           // jobs pushed so far, spread round robin over es
	ran     atomic.Int64  // RunJob calls
	target  atomic.Int64  // the RunJob call that ends the block
	end     time.Time     // when RunJob made call number target
	reached chan struct{} // RunJob made call number target; end is set
	blocks  int           // blocks run
	busy    int           // summed over blocks: entities with a queued job at the end
}

// newBusyRing makes a paused scheduler with n entities and depth jobs queued on
// each, untimed.
func newBusyRing(b *testing.B, name string, p sched.Policy, chk *lockdep.Checker, n, depth int) *busyRing {
	b.Helper()
	r := &busyRing{reached: make(chan struct{}, 1), backlog: n * depth, pushed: make([]int64, n)}
	r.benchRing = newBenchRing(b, name, p, chk, func() {
		if r.ran.Add(1) == r.target.Load() {
			r.end = time.Now()
			r.reached <- struct{}{}
		}
	})
	r.s.WQueueStop()
	r.es = r.entities(b, n)
	for range r.backlog {
		r.push(b)
	}
	return r
}

// push submits a job on the next entity, round robin.
func (r *busyRing) push(b *testing.B) {
	i := r.next % len(r.es)
	benchSubmit(b, r.es[i])
	r.pushed[i]++
	r.next++
}

// side is one block: top the backlog up (untimed), resume the scheduler, push k
// jobs while it runs k, pause it and count the entities left with work (untimed).
// Like BenchmarkJobPipeline, a block runs at the pace of the slower of the
// producer and the scheduler.
func (r *busyRing) side(b *testing.B) benchcmp.Side {
	return func(k int) time.Duration {
		ran0 := r.ran.Load() // paused: stable
		for int64(r.next)-ran0 < int64(r.backlog) {
			r.push(b)
		}
		r.target.Store(ran0 + int64(k))
		t0 := time.Now()
		r.s.WQueueStart()
		for range k {
			r.push(b)
		}
		<-r.reached
		d := r.end.Sub(t0)
		r.s.WQueueStop()
		// A job that ran has completed (its hardware fence had signalled), and
		// Stats counts it.
		for i, e := range r.es {
			if e.Stats().Jobs < r.pushed[i] {
				r.busy++
			}
		}
		r.blocks++
		return d
	}
}

// busyEntities is the mean number of entities that had a job queued at the end of
// a block, after the last job of the block ran.
func (r *busyRing) busyEntities() float64 { return float64(r.busy) / float64(r.blocks) }

func (r *busyRing) close(b *testing.B) {
	b.Helper()
	r.s.WQueueStart()
	r.benchRing.close(b, r.es, int64(r.next))
}

// BenchmarkManyEntities compares the per-job cost with 10,000 busy entities on one
// scheduler to the per-job cost with 10: the same scheduler setup, jobs spread
// round robin over the entities, every entity with queued work (8 jobs each beyond
// those a block pushes). Each job is NewJob, Arm and Push as in
// BenchmarkJobPipeline. Picking the next entity must not cost time linear in the
// number of entities: reports 10k/10 (goal <= 1.5), for each policy, and
// busy-entities, the mean number of the 10,000 that still had a job queued at the
// end of a block.
//
// Under the fair policy the entities do not take turns: each is charged the GPU
// time its jobs took, read from the wall clock, and that noise lets some run
// ahead of the others and empty their queues (busy-entities shows how many).
//
// The two schedulers take turns, each paused while the other is timed. They are
// made (10,000 entities, a backlog of 80,000 jobs; untimed) once per policy and
// serve every run of its sub-benchmark.
func BenchmarkManyEntities(b *testing.B) {
	const (
		many  = 10_000
		few   = 10
		depth = 8
	)
	for _, p := range []sched.Policy{sched.PolicyFair, sched.PolicyFIFO, sched.PolicyRoundRobin} {
		var rMany, rFew *busyRing
		b.Run("policy="+p.String(), func(b *testing.B) {
			if rMany == nil {
				chk := benchOff()
				rMany = newBusyRing(b, "many", p, chk, many, depth)
				rFew = newBusyRing(b, "few", p, chk, few, depth)
				b.ResetTimer()
			}
			rMany.blocks, rMany.busy = 0, 0
			t := benchcmp.Run(b.N, rFew.side(b), rMany.side(b))
			b.StopTimer()
			b.ReportMetric(benchcmp.PerOp(t[1], b.N), "ns/op")
			b.ReportMetric(benchcmp.PerOp(t[0], b.N), "10-ns/op")
			b.ReportMetric(benchcmp.Ratio(t[1], t[0]), "10k/10")
			b.ReportMetric(rMany.busyEntities(), "busy-entities")
		})
		for _, r := range []*busyRing{rMany, rFew} {
			if r != nil {
				r.close(b)
			}
		}
	}
}

// BenchmarkDAG pushes a dependency-heavy graph: 64 entities over 4 schedulers (16
// each, fair policy), jobs round robin over the entities, each job depending on
// the finished fences of 4 random earlier jobs of 4 other entities, picked among
// the 128 jobs before it (so most are still queued or just done: the jobs wait on
// one another, across rings and on the same ring, where the scheduled fence
// suffices). The seed is fixed: every run builds the same graph. The benchmark
// goroutine keeps at most 4096 jobs in flight, and the time includes waiting for
// the last one. Reports jobs/s.
func BenchmarkDAG(b *testing.B) {
	const (
		nScheds  = 4
		perSched = 16
		nDeps    = 4
		window   = 128
		inFlight = 4096
		seed     = 6
	)
	chk := benchOff()
	rings := make([]*benchRing, nScheds)
	var es []*sched.Entity
	for i := range rings {
		rings[i] = newBenchRing(b, fmt.Sprintf("dag%d", i), sched.PolicyFair, chk, nil)
		es = append(es, rings[i].entities(b, perSched)...)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	fins := make([]*fence.Fence, inFlight) // the finished fences of the last jobs, by index mod inFlight
	var deps int
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		own := i % len(es)
		if old := fins[i%inFlight]; old != nil && !old.IsSignaled() {
			benchWait(b, old)
		}
		j, err := es[own].NewJob(1, nil)
		if err != nil {
			b.Fatal(err)
		}
		// Job i-d is on entity (i-d) mod len(es): with window >= len(es), any
		// n < len(es) other entities can be found among the last window jobs.
		var picked [nDeps]int // entities already depended on
		want := min(nDeps, i, len(es)-1)
		for n := 0; n < want; {
			d := 1 + rng.IntN(min(i, window))
			ent := (i - d) % len(es)
			if ent == own || slices.Contains(picked[:n], ent) {
				continue
			}
			picked[n] = ent
			n++
			if err := j.AddDependency(fins[(i-d)%inFlight]); err != nil {
				b.Fatal(err)
			}
		}
		deps += want
		if err := j.Arm(); err != nil {
			b.Fatal(err)
		}
		if err := j.Push(); err != nil {
			b.Fatal(err)
		}
		fins[i%inFlight] = j.Finished()
	}
	for i := max(b.N-len(es), 0); i < b.N; i++ { // each entity's last job: its jobs run in order
		benchWait(b, fins[i%inFlight])
	}
	elapsed := time.Since(t0)
	b.StopTimer()

	for i, r := range rings {
		r.close(b, es[i*perSched:(i+1)*perSched], pushedOn(b.N, len(es), i*perSched, (i+1)*perSched))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(float64(deps)/float64(b.N), "deps/job")
}

// pushedOn is how many of n jobs, spread round robin over m entities, went to
// entities [lo, hi).
func pushedOn(n, m, lo, hi int) int64 {
	var c int64
	for e := lo; e < hi; e++ {
		c += int64(n / m)
		if e < n%m {
			c++
		}
	}
	return c
}
