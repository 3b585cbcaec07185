package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gpusync/gpusync/resv"
	"github.com/gpusync/gpusync/sched"
)

// client is one graphics client: an entity on each ring it uses, submitting jobs
// whose buffers it locks with resv's Exec and synchronises implicitly.
type client struct {
	name     string
	prio     sched.Priority
	rings    []string
	entities map[string]*sched.Entity
	guilty   atomic.Bool // shared by the client's entities, as amdgpu's ctx->guilty
	plan     []plannedJob

	mu        sync.Mutex
	gpuTime   time.Duration // simulated time of the jobs the hardware ran
	timedOut  int
	cancelled int
	jobs      []*sched.Job
}

// plannedJob is decided up front from the seed, so a seed gives the same run.
type plannedJob struct {
	ring  string
	dur   time.Duration
	bos   []int
	write []bool
	hang  bool
}

// planClient draws a client's jobs until their simulated GPU time reaches budget.
// hangAt is the index of the job that hangs, or -1.
func planClient(rng *rand.Rand, rings []string, budget time.Duration, nbos int, hangAt int) []plannedJob {
	var plan []plannedJob
	var total time.Duration
	for i := 0; total < budget; i++ {
		p := plannedJob{
			ring: rings[rng.IntN(len(rings))],
			dur:  time.Duration(500+rng.IntN(1500)) * time.Microsecond,
			hang: i == hangAt,
		}
		// Each buffer once per job (a writer if any use writes): a job's fence takes
		// one slot per buffer, and a duplicate Prepare reserves nothing more.
		for range 1 + rng.IntN(3) {
			bo, write := rng.IntN(nbos), rng.IntN(3) == 0
			if k := slices.Index(p.bos, bo); k >= 0 {
				p.write[k] = p.write[k] || write
				continue
			}
			p.bos = append(p.bos, bo)
			p.write = append(p.write, write)
		}
		total += p.dur
		plan = append(plan, p)
	}
	return plan
}

// submit runs the client's plan: for each job, lock its buffers (Exec backs off
// and retries by itself), take the implicit dependencies, arm, publish the job's
// fence in the buffers, unlock, push. After a job that hangs the client waits for
// it, as a client that syncs each frame would, so that what follows is decided by
// the hang's outcome and the run stays the same for a seed.
func (c *client) submit(ctx context.Context, d *driver) error {
	for _, p := range c.plan {
		j, err := c.entities[p.ring].NewJob(1, &jobSpec{client: c, dur: p.dur, hang: p.hang})
		if err != nil {
			return err
		}
		ex := resv.NewExec(resv.IgnoreDuplicates, d.chk)
		err = ex.Run(ctx, func(ctx context.Context) error {
			for _, i := range p.bos {
				if err := ex.Prepare(ctx, d.bos[i], 1); err != nil {
					return err
				}
			}
			return nil
		})
		for k, i := range p.bos {
			if err != nil {
				break
			}
			err = j.AddImplicitDependencies(d.bos[i], p.write[k])
		}
		if err != nil {
			ex.Fini()
			_ = j.Cleanup()
			return err
		}
		_ = j.Arm() // the point of no return: from here nothing may fail
		for k, i := range p.bos {
			u := resv.Read
			if p.write[k] {
				u = resv.Write
			}
			if err := d.bos[i].AddFence(j.Finished(), u); err != nil {
				panic(err) // cannot happen: Prepare reserved a slot
			}
		}
		ex.Fini()
		if err := j.Push(); err != nil {
			return err
		}
		c.mu.Lock()
		c.jobs = append(c.jobs, j)
		c.mu.Unlock()
		if p.hang {
			if err := j.Finished().Wait(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// ran accounts a job the hardware executed to completion.
func (c *client) ran(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gpuTime += d
}

// wait waits for every job the client pushed and counts how they ended.
func (c *client) wait(ctx context.Context) error {
	c.mu.Lock()
	jobs := c.jobs
	c.mu.Unlock()
	for _, j := range jobs {
		if err := j.Finished().Wait(ctx); err != nil {
			return err
		}
		switch err := j.Finished().Error(); {
		case err == nil:
		case errors.Is(err, sched.ErrTimedOut):
			c.timedOut++
		case errors.Is(err, sched.ErrCanceled):
			c.cancelled++
		default:
			return err
		}
	}
	return nil
}
