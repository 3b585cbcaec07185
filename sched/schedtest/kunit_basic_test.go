package schedtest_test

// The KUnit cases of the kernel's drivers/gpu/drm/scheduler/tests/tests_basic.c,
// one Go test each, named after the kernel function, on the schedtest mock ring.
// Every wait the kernel bounds in jiffies is a context deadline in the virtual time
// of a testing/synctest bubble, so "does not finish within HZ/2" costs nothing and
// is exact.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/schedtest"
)

const (
	hz          = time.Second      // HZ jiffies: one second
	mockTimeout = hz / 5           // MOCK_TIMEOUT
	noTimeout   = time.Duration(0) // MAX_SCHEDULE_TIMEOUT: the TDR is off
)

// within returns a context that ends after d of (virtual) time: a kernel wait
// timeout.
func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitScheduled is drm_mock_sched_job_wait_scheduled(job, timeout).
func waitScheduled(t *testing.T, j *schedtest.Job, d time.Duration) bool {
	return j.WaitScheduled(within(t, d)) == nil
}

// waitFinished is drm_mock_sched_job_wait_finished(job, timeout).
func waitFinished(t *testing.T, j *schedtest.Job, d time.Duration) bool {
	return j.WaitFinished(within(t, d))
}

// newRing is drm_mock_sched_new(test, timeout), with a lockdep checker that fails
// the test on any report. Call it inside the bubble.
func newRing(t *testing.T, timeout time.Duration, creditLimit uint32) *schedtest.Ring {
	t.Helper()
	return schedtest.New(t, schedtest.Config{
		Timeout:     timeout,
		CreditLimit: creditLimit,
		Checker:     lockdeptest.New(t),
	})
}

// newJob is drm_mock_sched_job_new plus drm_mock_sched_job_set_duration_us.
func newJob(t *testing.T, r *schedtest.Ring, e *sched.Entity, d time.Duration) *schedtest.Job {
	t.Helper()
	j := r.NewJob(t, e)
	j.Duration = d
	return j
}

// submit is drm_mock_sched_job_submit.
func submit(t *testing.T, j *schedtest.Job) {
	t.Helper()
	require.NoError(t, j.Submit())
}

// destroy is drm_mock_sched_entity_free: drm_sched_entity_destroy, which flushes
// for at most a second (MAX_WAIT_SCHED_ENTITY_Q_EMPTY) and then kills.
func destroy(t *testing.T, e *sched.Entity) {
	t.Helper()
	_ = e.Destroy(within(t, hz))
}

// waitAll waits, within d, for every job's finished fence, and then for the
// callbacks of the last ones (a waiter wakes before the callbacks run).
func waitAll(t *testing.T, jobs []*schedtest.Job, d time.Duration) {
	t.Helper()
	ctx := within(t, d)
	for _, j := range jobs {
		require.NoError(t, j.Finished().Wait(ctx))
	}
	synctest.Wait()
}

// orderLog checks that each entity's finished fences signal in seqno order:
// when one signals, every fence watched before it on the same entity has
// signalled (their state, not the order the callbacks run in, which may differ
// when fences signal concurrently).
type orderLog struct {
	mu   sync.Mutex
	ents map[*sched.Entity]*entityLog
	bad  []string
	n    int
}

type entityLog struct {
	fences []*fence.Fence // watched, in seqno order
	done   int            // fences[:done] have all signalled
}

func newOrderLog() *orderLog { return &orderLog{ents: make(map[*sched.Entity]*entityLog)} }

// watch adds j, just armed, to its entity's log, in seqno order.
func (o *orderLog) watch(t *testing.T, j *sched.Job) {
	t.Helper()
	e := j.Entity()
	o.mu.Lock()
	el := o.ents[e]
	if el == nil {
		el = new(entityLog)
		o.ents[e] = el
	}
	i := len(el.fences)
	el.fences = append(el.fences, j.Finished())
	o.mu.Unlock()
	require.NoError(t, j.Finished().AddCallback(new(fence.Callback), func(f *fence.Fence, _ *fence.Callback) {
		o.mu.Lock()
		defer o.mu.Unlock()
		for el.done < len(el.fences) && el.fences[el.done].IsSignaled() {
			el.done++
		}
		if el.done <= i {
			o.bad = append(o.bad, fmt.Sprintf("entity %d: finished fence %d signalled before %d",
				e.ID(), f.Seqno(), el.fences[el.done].Seqno()))
		}
		o.n++
	}))
}

// requireInOrder checks the order, and that want finished fences signalled.
func (o *orderLog) requireInOrder(t *testing.T, want int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	require.Empty(t, o.bad, "finished fences out of seqno order")
	require.Equal(t, want, o.n, "finished fences signalled")
}

// Suite drm_sched_basic_tests: no timeout.

func TestDrmSchedBasic_drm_sched_basic_submit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, noTimeout, 0)
		e := r.NewEntity(t, sched.PriorityNormal)
		j := newJob(t, r, e, 0)
		submit(t, j)

		require.True(t, waitScheduled(t, j, hz))
		require.False(t, waitFinished(t, j, hz/2), "a job without a duration finishes only on advance")
		require.Equal(t, 1, r.Advance(1))
		require.True(t, waitFinished(t, j, hz))
		require.NoError(t, j.Finished().Wait(t.Context()))
		require.NoError(t, j.Finished().Error())
		destroy(t, e)
	})
}

func TestDrmSchedBasic_drm_sched_basic_test(t *testing.T) {
	cases := []struct {
		desc       string
		queueDepth int
		numEnts    int
		jobDur     time.Duration
		depChain   bool
	}{
		{"A queue of jobs in a single entity", 100, 1, time.Millisecond, false},
		{"A chain of dependent jobs across multiple entities", 100, 1, time.Millisecond, true},
		{"Multiple independent job queues", 100, 4, time.Millisecond, false},
		{"Multiple inter-dependent job queues", 100, 4, time.Millisecond, true},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRing(t, noTimeout, 0)
				ents := make([]*sched.Entity, c.numEnts)
				for i := range ents {
					ents[i] = r.NewEntity(t, sched.PriorityNormal)
				}
				log := newOrderLog()
				start := time.Now()
				var job, prev *schedtest.Job
				var jobs []*schedtest.Job
				for i := range c.queueDepth {
					job = newJob(t, r, ents[i%c.numEnts], c.jobDur)
					if c.depChain && prev != nil {
						require.NoError(t, job.AddDependency(prev.Finished()))
					}
					submit(t, job)
					log.watch(t, job.Job)
					jobs = append(jobs, job)
					prev = job
				}
				require.True(t, waitFinished(t, job, hz))
				waitAll(t, jobs, hz)
				// The mock executes back to back and the scheduler adds no virtual
				// time (a dependency on the same ring only waits for submission), so
				// the ring is never idle.
				require.Equal(t, time.Duration(c.queueDepth)*c.jobDur, time.Since(start))
				log.requireInOrder(t, c.queueDepth)
				for _, e := range ents {
					destroy(t, e)
				}
			})
		})
	}
}

func TestDrmSchedBasic_drm_sched_basic_entity_cleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const qd = 100
		r := newRing(t, noTimeout, 0)
		var ents [4]*sched.Entity
		for i := range ents {
			ents[i] = r.NewEntity(t, sched.PriorityNormal)
		}
		var jobs []*schedtest.Job
		var mid, prev *schedtest.Job
		for i := range qd {
			j := newJob(t, r, ents[i%len(ents)], time.Millisecond)
			if prev != nil {
				require.NoError(t, j.AddDependency(prev.Finished()))
			}
			submit(t, j)
			if i == qd/2 {
				mid = j
			}
			jobs = append(jobs, j)
			prev = j
		}
		require.True(t, waitFinished(t, mid, hz))

		// Exit with half of the queue still pending to be executed.
		for _, e := range ents {
			destroy(t, e)
		}
		r.Close()
		// Nothing hangs or leaks: every job completed, normally or cancelled by
		// drm_sched_fini's cancel_job, and goleak checks the goroutines.
		for _, j := range jobs {
			require.True(t, j.Finished().IsSignaled())
			if err := j.Finished().Error(); err != nil {
				require.ErrorIs(t, err, sched.ErrCanceled)
				require.True(t, j.Canceled())
			}
		}
		require.False(t, jobs[qd-1].IsFinished(), "the tail was still pending at destroy")
	})
}

// Suite drm_sched_concurrent_tests (newer trees): submission from many goroutines.

func TestDrmSchedBasic_drm_sched_parallel_submit_test(t *testing.T) {
	t.Run("Parallel submission of multiple jobs per worker", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const numJobs, numWorkers = 8, 16
			r := newRing(t, noTimeout, 0)
			workers := make([][]*schedtest.Job, numWorkers)
			for w := range workers {
				e := r.NewEntity(t, sched.PriorityNormal)
				for range numJobs {
					workers[w] = append(workers[w], r.NewJob(t, e))
				}
			}
			goCh := make(chan struct{})
			var wg sync.WaitGroup
			for _, jobs := range workers {
				wg.Go(func() {
					<-goCh
					for _, j := range jobs {
						assert.NoError(t, j.Submit())
					}
				})
			}
			close(goCh)
			wg.Wait()
			for _, jobs := range workers {
				for _, j := range jobs {
					assert.True(t, waitScheduled(t, j, hz))
				}
			}
			require.Equal(t, numJobs*numWorkers, r.Advance(numJobs*numWorkers))
			for _, jobs := range workers {
				for _, j := range jobs {
					assert.True(t, waitFinished(t, j, hz))
				}
			}
		})
	})
}

func TestDrmSchedBasic_drm_sched_interleaved_submit_test(t *testing.T) {
	t.Run("Interleaved submission of multiple jobs per worker", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const (
				testDuration = time.Second
				jobBase      = 100 * time.Microsecond
				numWorkers   = 16
				inFlight     = 8
			)
			r := newRing(t, noTimeout, 0)
			share := testDuration / numWorkers
			workers := make([][]*schedtest.Job, numWorkers)
			for w := range workers {
				d := jobBase * time.Duration(w+1)
				n := max(1, int(share/d))
				e := r.NewEntity(t, sched.PriorityNormal)
				for range n {
					workers[w] = append(workers[w], newJob(t, r, e, d))
				}
			}
			goCh := make(chan struct{})
			var wg sync.WaitGroup
			for w, jobs := range workers {
				wg.Go(func() {
					<-goCh
					window := min(len(jobs), inFlight)
					for _, j := range jobs[:window] {
						assert.NoError(t, j.Submit())
					}
					for i, j := range jobs {
						assert.Truef(t, waitFinished(t, j, 2*testDuration), "job %d of worker %d timed out", i, w)
						if k := i + window; k < len(jobs) {
							assert.NoError(t, jobs[k].Submit())
						}
					}
				})
			}
			close(goCh)
			wg.Wait()
			for _, jobs := range workers {
				for _, j := range jobs {
					require.True(t, j.IsFinished())
				}
			}
		})
	})
}

// Suite drm_sched_basic_timeout_tests: timeout MOCK_TIMEOUT.

func TestDrmSchedBasic_drm_sched_basic_timeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, mockTimeout, 0)
		e := r.NewEntity(t, sched.PriorityNormal)
		j := newJob(t, r, e, 0)
		submit(t, j)

		require.True(t, waitScheduled(t, j, hz))
		require.False(t, waitFinished(t, j, mockTimeout/2))
		require.False(t, j.TimedOut(), "timed out before MOCK_TIMEOUT")
		require.False(t, waitFinished(t, j, mockTimeout))
		require.True(t, j.TimedOut(), "not timed out after MOCK_TIMEOUT")
		// The waiter is not told "finished", but the fences are done, with the
		// error the mock's timedout_job gave the hardware fence.
		require.True(t, j.Finished().IsSignaled())
		require.ErrorIs(t, j.Finished().Error(), sched.ErrTimedOut)
		require.Equal(t, int64(0), r.Sched.Credits())
		destroy(t, e)
	})
}

func TestDrmSchedBasic_drm_sched_skip_reset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, mockTimeout, 0)
		e := r.NewEntity(t, sched.PriorityNormal)
		j := newJob(t, r, e, 0)
		j.DontReset = true
		submit(t, j)

		require.True(t, waitScheduled(t, j, hz))
		require.False(t, waitFinished(t, j, 2*mockTimeout))
		require.True(t, j.ResetSkipped())
		require.False(t, j.TimedOut())
		// DRM_GPU_SCHED_STAT_NO_HANG put it back on the pending list. (The TDR
		// fires again at this very instant: let it finish.)
		synctest.Wait()
		require.Equal(t, 1, len(r.Sched.Pending()))
		require.Same(t, j.Job, r.Sched.Pending()[0])
		require.Equal(t, 1, r.Advance(1))
		require.True(t, waitFinished(t, j, hz))
		require.NoError(t, j.Finished().Error())
		destroy(t, e)
	})
}

// Suite drm_sched_basic_cancel_tests.

func TestDrmSchedBasic_drm_sched_basic_cancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, noTimeout, 0)
		e := r.NewEntity(t, sched.PriorityNormal)
		j := newJob(t, r, e, 0)
		submit(t, j)
		require.True(t, waitScheduled(t, j, hz))

		destroy(t, e)
		r.Close() // drm_mock_sched_fini: drm_sched_fini calls cancel_job

		require.True(t, j.Canceled())
		require.ErrorIs(t, j.Hardware().Error(), sched.ErrCanceled)
		require.ErrorIs(t, j.Finished().Error(), sched.ErrCanceled)
	})
}

// Suite drm_sched_basic_priority_tests.

func TestDrmSchedBasic_drm_sched_priorities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const qd = 100
		r := newRing(t, noTimeout, 0)
		var ents []*sched.Entity
		for p := sched.PriorityKernel; p <= sched.PriorityLow; p++ {
			ents = append(ents, r.NewEntity(t, p))
		}
		log := newOrderLog()
		var job *schedtest.Job
		var jobs []*schedtest.Job
		for i := range qd {
			job = newJob(t, r, ents[i%len(ents)], time.Millisecond)
			submit(t, job)
			log.watch(t, job.Job)
			jobs = append(jobs, job)
		}
		require.True(t, waitFinished(t, job, hz))
		waitAll(t, jobs, hz) // the last pushed is not always the last to run
		log.requireInOrder(t, qd)
		for _, e := range ents {
			destroy(t, e)
		}
	})
}

func TestDrmSchedBasic_drm_sched_change_priority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const qd = 1000
		r := newRing(t, noTimeout, 0)
		var ents []*sched.Entity
		for p := sched.PriorityKernel; p <= sched.PriorityLow; p++ {
			ents = append(ents, r.NewEntity(t, p))
		}
		log := newOrderLog()
		var job *schedtest.Job
		var jobs []*schedtest.Job
		for i := range qd {
			job = newJob(t, r, ents[i%len(ents)], time.Millisecond)
			submit(t, job)
			log.watch(t, job.Job)
			jobs = append(jobs, job)
		}
		deadline := time.Now().Add(2 * qd * time.Millisecond)
		for i := 0; !job.IsFinished(); i++ {
			require.True(t, time.Now().Before(deadline), "the last job did not finish")
			e := ents[i%len(ents)]
			require.NoError(t, e.SetPriority((e.Priority()+1)%(sched.PriorityLow+1)))
			time.Sleep(time.Duration(200+rand.N(300)) * time.Microsecond) // usleep_range(200, 500)
		}
		waitAll(t, jobs, hz)
		log.requireInOrder(t, qd)
		for _, e := range ents {
			destroy(t, e)
		}
	})
}

// Suite drm_sched_basic_modify_sched_tests.
//
// The kernel test keeps calling drm_sched_entity_modify_sched() to move 13
// entities between 3 schedulers while 1000 jobs run. This model has no
// modify_sched: an entity made with several schedulers, NewEntity(p, s1, s2, s3),
// moves by itself, while idle, to the least loaded one when a job is armed
// (drm_sched_entity_select_rq). So this test drives that load balancing instead:
// random bursts on random entities, with pauses and the odd drain so that entities
// go idle, and checks that entities do move, only while idle, and that every job
// completes in order on its entity.
func TestDrmSchedBasic_drm_sched_test_modify_sched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const qd = 1000
		chk := lockdeptest.New(t)
		var rings [3]*schedtest.Ring
		var scheds [3]*sched.Scheduler
		for i := range rings {
			rings[i] = schedtest.New(t, schedtest.Config{Name: "ring" + string(rune('0'+i)), Checker: chk})
			scheds[i] = rings[i].Sched
		}
		var ents [13]*sched.Entity
		for i := range ents {
			// Primes, as in the kernel, and each entity prefers a different ring.
			e, err := sched.NewEntity(sched.PriorityNormal, scheds[i%3], scheds[(i+1)%3], scheds[(i+2)%3])
			require.NoError(t, err)
			t.Cleanup(func() { _ = e.Destroy(context.Background()) })
			ents[i] = e
		}
		rng := rand.New(rand.NewPCG(13, 3))
		log := newOrderLog()
		last := make(map[*sched.Entity]*schedtest.Job)
		ran := make(map[*sched.Scheduler]int)
		moves := 0
		var job *schedtest.Job
		var jobs []*schedtest.Job
		for i := 0; i < qd; {
			for n := 1 + rng.IntN(len(ents)); n > 0 && i < qd; n, i = n-1, i+1 {
				e := ents[rng.IntN(len(ents))]
				job = newJob(t, rings[0], e, time.Millisecond)
				submit(t, job)
				log.watch(t, job.Job)
				jobs = append(jobs, job)
				s := job.Scheduler()
				require.Same(t, s, e.Scheduler())
				ran[s]++
				if p := last[e]; p != nil && p.Scheduler() != s {
					// Moved: only allowed when the entity was idle at arm.
					require.True(t, p.Finished().IsSignaled(), "entity moved with a job in flight")
					moves++
				}
				last[e] = job
			}
			time.Sleep(time.Duration(200+rng.IntN(300)) * time.Microsecond)
			if rng.IntN(10) == 0 {
				require.True(t, waitFinished(t, job, hz)) // drain: everyone idle
			}
		}
		require.True(t, waitFinished(t, job, 2*qd*time.Millisecond))
		waitAll(t, jobs, qd*time.Millisecond)
		log.requireInOrder(t, qd)
		require.Positive(t, moves, "no entity ever moved")
		for _, s := range scheds {
			require.Positive(t, ran[s], "scheduler %s ran nothing", s.Name())
		}
		t.Logf("moves %d, jobs per ring %d %d %d", moves, ran[scheds[0]], ran[scheds[1]], ran[scheds[2]])
	})
}

// Suite drm_sched_basic_credits_tests.

func TestDrmSchedBasic_drm_sched_test_credits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRing(t, noTimeout, 1)
		e := r.NewEntity(t, sched.PriorityNormal)
		j0, j1 := newJob(t, r, e, 0), newJob(t, r, e, 0)
		submit(t, j0)
		submit(t, j1)

		require.True(t, waitScheduled(t, j0, hz))
		require.False(t, waitScheduled(t, j1, hz), "second job ran beyond the credit limit")
		require.Equal(t, int64(1), r.Sched.Credits())
		require.Equal(t, 1, r.Advance(1))
		require.True(t, waitScheduled(t, j1, hz))
		require.Equal(t, 1, r.Advance(1))
		require.True(t, waitFinished(t, j1, hz))
		synctest.Wait()
		require.Equal(t, int64(0), r.Sched.Credits())
		destroy(t, e)
		r.Close()
	})
}
