package sched_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
)

// stressJob is what the stress test knows about one job.
type stressJob struct {
	j *sched.Job
	w *work
	// guiltyBefore: the entity was guilty before the job was armed, so if the job
	// ran it was cancelled.
	guiltyBefore bool
	pushErr      error
}

// TestStress runs 100,000 jobs (10,000 with -short) from 8 submitting goroutines
// over 64 entities and 4 schedulers (each policy, different credit limits; some
// entities load-balance over all four), with random dependencies across entities
// and rings, random job credits and durations, hangs that the TDR resets, hardware
// errors, entities killed and made guilty while their owners push. Then it checks
// that every finished fence signalled exactly once, in seqno order per entity,
// with the error that the job's fate calls for; that FreeJob ran once per job, after
// its finished fence; that the credits on a ring never exceeded its limit; and,
// through goleak and synctest, that no goroutine is left. Virtual time: the hangs
// cost nothing.
func TestStress(t *testing.T) {
	total := 100_000
	if testing.Short() {
		total = 10_000
	}
	const (
		numScheds     = 4
		numEntities   = 64
		numSubmitters = 8
		maxKills      = 12
		timeout       = time.Millisecond
	)
	start := time.Now()
	synctest.Test(t, func(t *testing.T) {
		vstart := time.Now()
		chk := lockdeptest.New(t)
		limits := [numScheds]uint32{1, 4, 16, 64}
		policies := [numScheds]sched.Policy{sched.PolicyFair, sched.PolicyFIFO, sched.PolicyRoundRobin, sched.PolicyFair}
		drvs := make([]*drv, numScheds)
		scheds := make([]*sched.Scheduler, numScheds)
		for i := range drvs {
			limit := limits[i]
			var d *drv
			d = newDrv(t, sched.Config{
				Name:        "ring" + string(rune('0'+i)),
				CreditLimit: limit,
				Timeout:     timeout,
				Policy:      policies[i],
				Checker:     chk,
			}, func(x *drv) {
				x.onRun = func(j *sched.Job) {
					if c := d.s.Credits(); c > int64(limit) {
						t.Errorf("%s: %d credits on the hardware, limit %d", d.s.Name(), c, limit)
					}
				}
			})
			drvs[i], scheds[i] = d, d.s
		}
		ents := make([]*sched.Entity, numEntities)
		limitOf := make(map[*sched.Entity]uint32) // the credits a job of the entity may take
		for i := range ents {
			var err error
			if i%8 == 7 { // load-balanced over every ring
				ents[i], err = sched.NewEntity(sched.Priority(i%4), scheds...)
				limitOf[ents[i]] = slices.Min(limits[:])
			} else {
				ents[i], err = sched.NewEntity(sched.Priority(i%4), scheds[i%numScheds])
				limitOf[ents[i]] = limits[i%numScheds]
			}
			require.NoError(t, err)
			t.Cleanup(ents[i].Kill)
		}

		log := newOrderLog()
		var (
			mu     sync.Mutex
			jobs   = make([]*stressJob, 0, total)
			recent []*sched.Job // dependency candidates: the last armed jobs
			count  atomic.Int64
			kills  atomic.Int32
		)
		var wg sync.WaitGroup
		for sub := range numSubmitters {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(sub), 42))
				mine := ents[sub*8 : sub*8+8]
				for count.Load() < int64(total) {
					for n := 1 + rng.IntN(16); n > 0; n-- {
						e := mine[rng.IntN(len(mine))]
						limit := limitOf[e]
						w := &work{dur: time.Duration(1+rng.IntN(50)) * time.Microsecond}
						switch r := rng.IntN(1000); {
						case r < 2:
							w.dur = 0 // hangs: the TDR resets it
						case r < 12:
							w.err = errHW
						}
						credits := uint32(1 + rng.IntN(int(min(limit, 4))))
						j, err := e.NewJob(credits, w)
						if errors.Is(err, sched.ErrKilled) {
							continue
						}
						if !assert.NoError(t, err) {
							return
						}
						if count.Add(1) > int64(total) {
							assert.NoError(t, j.Cleanup())
							break
						}
						mu.Lock()
						for k := rng.IntN(4) - 1; k > 0 && len(recent) > 0; k-- {
							dep := recent[rng.IntN(len(recent))]
							f := dep.Finished()
							if rng.IntN(10) == 0 {
								f = dep.Scheduled()
							}
							assert.NoError(t, j.AddDependency(f))
						}
						mu.Unlock()
						sj := &stressJob{j: j, w: w, guiltyBefore: e.IsGuilty()}
						assert.NoError(t, j.Arm())
						log.watch(t, j)
						if rng.IntN(total/2) == 0 && kills.Add(1) <= maxKills {
							e.Kill() // the process dies between arm and push
						}
						sj.pushErr = j.Push()
						if sj.pushErr != nil {
							assert.ErrorIs(t, sj.pushErr, sched.ErrKilled)
						}
						mu.Lock()
						jobs = append(jobs, sj)
						if len(recent) < 256 {
							recent = append(recent, j)
						} else {
							recent[rng.IntN(len(recent))] = j
						}
						mu.Unlock()
					}
					time.Sleep(time.Duration(50+rng.IntN(400)) * time.Microsecond)
				}
			})
		}
		// The killer: kills an entity now and then, and makes a few guilty, while
		// their owners keep pushing.
		stop := make(chan struct{})
		var killer sync.WaitGroup
		killer.Go(func() {
			rng := rand.New(rand.NewPCG(7, 7))
			for step := int64(1); ; {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(100+rng.IntN(400)) * time.Microsecond):
				}
				if count.Load() < step*int64(total)/16 {
					continue
				}
				step++
				e := ents[rng.IntN(len(ents))]
				if rng.IntN(3) == 0 {
					e.SetGuilty()
				} else if kills.Add(1) <= maxKills {
					e.Kill()
				}
			}
		})
		wg.Wait()
		close(stop)
		killer.Wait()

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		for _, sj := range jobs {
			if err := sj.j.Finished().Wait(ctx); err != nil {
				j := sj.j
				t.Logf("stuck %s: runs %d scheduled %v sched %s killedPush %v guilty %v", name(j), sj.w.runs.Load(), j.Scheduled().IsSignaled(), j.Scheduler().Name(), sj.pushErr, j.Entity().IsGuilty())
				for _, d := range j.Dependencies() {
					dj := sched.JobOf(d)
					if dj != nil {
						t.Logf("  dep %s (%v) signalled %v, its finished %v, sched %s", name(dj), d == dj.Scheduled(), d.IsSignaled(), dj.Finished().IsSignaled(), dj.Scheduler().Name())
					}
				}
				for _, d := range drvs {
					t.Logf("  %s: credits %d pending %v onring %d", d.s.Name(), d.s.Credits(), names(d.s.Pending()), d.onRing())
				}
				probe, perr := j.Entity().NewJob(1, &work{})
				if perr == nil {
					_ = probe.Cleanup()
				}
				t.Logf("  entity on %s, NewJob: %v, score %v", j.Entity().Scheduler().Name(), perr, j.Entity().Scheduler().Score())
				for _, o := range jobs {
					if o.j.Entity() == j.Entity() {
						t.Logf("  sibling %s on %s runs %d finished %v err %v deps %d", name(o.j), o.j.Scheduler().Name(), o.w.runs.Load(), o.j.Finished().IsSignaled(), o.j.Finished().Error(), len(o.j.Dependencies()))
					}
				}
				t.FailNow()
			}
		}
		synctest.Wait()

		log.requireInOrder(t)
		require.Equal(t, int64(len(jobs)), log.n.Load(), "finished fences signalled")
		fates := make(map[string]int)
		for _, sj := range jobs {
			err, w := sj.j.Finished().Error(), sj.w
			require.LessOrEqual(t, w.runs.Load(), int32(1), "job %s ran twice", name(sj.j))
			require.Equal(t, int32(1), w.freed.Load(), "job %s freed %d times", name(sj.j), w.freed.Load())
			require.True(t, sj.j.Scheduled().IsSignaled())
			switch {
			case w.runs.Load() == 0:
				fates["killed"]++
				require.ErrorIs(t, err, sched.ErrSearch, "job %s never ran", name(sj.j))
			case w.timedOut.Load():
				fates["timed out"]++
				require.ErrorIs(t, err, sched.ErrTimedOut, "job %s hung", name(sj.j))
			case w.err != nil:
				fates["hw error"]++
				require.ErrorIs(t, err, w.err, "job %s failed", name(sj.j))
			case sj.guiltyBefore:
				fates["cancelled"]++
				require.ErrorIs(t, err, sched.ErrCanceled, "job %s of a guilty entity", name(sj.j))
			case err != nil:
				fates["cancelled"]++
				require.ErrorIs(t, err, sched.ErrCanceled, "job %s", name(sj.j))
				require.True(t, sj.j.Entity().IsGuilty())
			default:
				fates["ok"]++
			}
			if sj.pushErr != nil {
				fates["pushed after kill"]++
				require.Zero(t, w.runs.Load())
			}
		}
		for _, d := range drvs {
			require.Zero(t, d.s.Credits(), "%s: credits left", d.s.Name())
			require.Empty(t, d.s.Pending(), "%s: jobs left", d.s.Name())
		}
		t.Logf("%d jobs in %v of virtual time, %d kills: %v", len(jobs), time.Since(vstart), min(kills.Load(), maxKills), fates)
		require.Equal(t, total, len(jobs))
		require.Positive(t, fates["killed"])
		require.Positive(t, fates["timed out"])
	})
	t.Logf("real time %v", time.Since(start))
}
