// Command driver is gpusync's main example: a simulated GPU driver.
//
// Two rings (graphics and compute) are fed by drm_sched-style schedulers. Several
// clients at different priorities submit jobs whose buffers they lock with resv's
// Exec (drm_exec) and synchronise implicitly through the buffers' reservation
// objects. One client's job hangs: the timeout handler (TDR) resets the ring,
// blames the client, and the other clients carry on unaffected. A long-running
// compute client runs on an LR queue; memory pressure evicts a buffer it uses, and
// instead of being killed it is preempted and resumed. Everything runs under a
// primed lockdep checker.
//
//	go run ./examples/driver                      # a few seconds, prints a summary
//	go run ./examples/driver -trace trace.json    # also a timeline for ui.perfetto.dev
//	go run ./examples/driver -clients 6 -duration 400ms -seed 7
//
// A seed fixes every choice (buffers, job lengths, which job hangs), so the summary
// is the same for the same flags; wall-clock timing in the trace varies.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/traceevent"
)

type config struct {
	clients  int
	duration time.Duration // simulated GPU time each client submits
	seed     uint64
	trace    string
	verbose  bool
	timeout  time.Duration // TDR timeout
}

func main() {
	var cfg config
	flag.IntVar(&cfg.clients, "clients", 3, "graphics clients (one more client hangs, one runs long-running compute)")
	flag.DurationVar(&cfg.duration, "duration", 300*time.Millisecond, "simulated GPU time each client submits")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed for every random choice; the same seed gives the same run")
	flag.StringVar(&cfg.trace, "trace", "", "write a Chrome/Perfetto trace-event JSON timeline to this file")
	flag.BoolVar(&cfg.verbose, "v", false, "print lockdep reports in full")
	flag.DurationVar(&cfg.timeout, "timeout", 100*time.Millisecond, "TDR timeout of each ring")
	flag.Parse()
	if err := run(os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
}

// driver is the simulated kernel driver: rings, buffers, clients, the LR queue.
type driver struct {
	chk     *lockdep.Checker
	reports lockdep.Collector
	rings   []*ring
	bos     []*resv.Object
	clients []*client
	stats   stats
}

var ringNames = []string{"gfx", "compute"}

// stats collects what the TDR handler saw.
type stats struct {
	mu       sync.Mutex
	timeouts []string
}

func (s *stats) timeout(j *sched.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := j.Payload.(*jobSpec).client
	s.timeouts = append(s.timeouts, fmt.Sprintf("%s job %d on %s", c.name, j.Seqno(), j.Scheduler().Name()))
}

func run(w io.Writer, cfg config) error {
	if cfg.clients < 1 {
		return fmt.Errorf("need at least one client")
	}
	d := &driver{}
	d.chk = lockdep.NewChecker(lockdep.WithHandler(d.reports.Handle))
	d.chk.Prime()
	rec := &traceevent.Recorder{}
	for _, name := range ringNames {
		r, err := newRing(name, cfg.timeout, rec, d.chk, &d.stats)
		if err != nil {
			return err
		}
		d.rings = append(d.rings, r)
	}
	for range 8 {
		d.bos = append(d.bos, resv.NewObject(d.chk))
	}

	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15))
	prios := []sched.Priority{sched.PriorityHigh, sched.PriorityNormal, sched.PriorityLow}
	for i := range cfg.clients + 1 {
		c := &client{name: fmt.Sprintf("client-%d", i), prio: prios[i%len(prios)], rings: ringNames,
			entities: map[string]*sched.Entity{}}
		hangAt := -1
		if i == cfg.clients { // the extra client: its third job hangs
			c.name, c.prio, c.rings, hangAt = "client-hang", sched.PriorityNormal, []string{"compute"}, 2
		}
		c.plan = planClient(rng, c.rings, cfg.duration, len(d.bos), hangAt)
		for _, r := range d.rings {
			e, err := r.sched.NewEntity(c.prio)
			if err != nil {
				return err
			}
			e.ShareGuilty(&c.guilty)
			c.entities[r.name] = e
			rec.NameEntity(e, c.name+"/"+r.name)
		}
		d.clients = append(d.clients, c)
	}

	ctx := context.Background()
	lrRes, err := d.runWithLR(ctx)
	if err != nil {
		return err
	}
	for _, c := range d.clients {
		for _, r := range d.rings {
			_ = c.entities[r.name].Destroy(ctx)
		}
	}
	for _, r := range d.rings {
		r.close()
	}
	d.printSummary(w, cfg, lrRes)
	if cfg.verbose {
		for _, r := range d.reports.Reports() {
			fmt.Fprintln(w, r.String())
		}
	}
	if cfg.trace != "" {
		if err := writeTrace(cfg.trace, rec); err != nil {
			return err
		}
		fmt.Fprintf(w, "trace: %s (open in https://ui.perfetto.dev)\n", cfg.trace)
	}
	return nil
}

func writeTrace(path string, rec *traceevent.Recorder) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := rec.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// lrResult is what the long-running client did.
type lrResult struct {
	preemptions, resumes int
	err                  error
}

// runWithLR runs the graphics clients and, alongside, a long-running compute job
// on an LR queue whose VM maps buffer 0. While the clients run, memory pressure
// evicts buffer 0, which preempts the LR queue through its preempt fence; the
// rebind worker then resumes it. The LR job completes when the clients are done.
func (d *driver) runWithLR(ctx context.Context) (lrResult, error) {
	var res lrResult
	var mu sync.Mutex
	suspended := make(chan struct{}, 1)
	resumed := make(chan struct{}, 1)
	q, err := lr.NewQueue(lr.QueueConfig{
		Name: "compute-lr", RingSize: 4, Checker: d.chk,
		Ops: lr.QueueOps{
			Run: func(*lr.Job) error { return nil },
			Suspend: func(*lr.Queue) error {
				mu.Lock()
				res.preemptions++
				mu.Unlock()
				suspended <- struct{}{}
				return nil
			},
			SuspendWait: func(ctx context.Context, _ *lr.Queue) error {
				select {
				case <-suspended:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			},
			Resume: func(*lr.Queue) {
				mu.Lock()
				res.resumes++
				mu.Unlock()
				resumed <- struct{}{}
			},
		},
	})
	if err != nil {
		return res, err
	}
	defer q.Close()
	vm := lr.NewVM(lr.VMOps{Revalidate: func(*resv.Object) error { return nil }}, d.chk)
	defer vm.Close()
	if err := vm.AddBuffer(ctx, d.bos[0]); err != nil {
		return res, err
	}
	if err := vm.AddQueue(ctx, q); err != nil {
		return res, err
	}
	job, err := q.Push(ctx, "simulation")
	if err != nil {
		return res, err
	}

	var g errgroup.Group
	for _, c := range d.clients {
		g.Go(func() error { return c.submit(ctx, d) })
	}
	if err := vm.Evict(ctx, d.bos[0]); err != nil { // memory pressure: buffer 0 must move
		return res, err
	}
	<-resumed
	if err := g.Wait(); err != nil {
		return res, err
	}
	for _, c := range d.clients {
		if err := c.wait(ctx); err != nil {
			return res, err
		}
	}
	job.Complete(nil) // the simulation is done
	if err := job.Done().Wait(ctx); err != nil {
		return res, err
	}
	mu.Lock()
	defer mu.Unlock()
	res.err = job.Done().Error()
	return res, nil
}

func (d *driver) printSummary(w io.Writer, cfg config, lrRes lrResult) {
	fmt.Fprintf(w, "gpusync simulated driver: seed %d, %d clients (+1 hanging, +1 long-running), %v of GPU work each\n\n",
		cfg.seed, cfg.clients, cfg.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "client\tpriority\tjobs\ttimed out\tcancelled\tgpu time")
	for _, c := range d.clients {
		var jobs int64
		for _, r := range d.rings {
			jobs += c.entities[r.name].Stats().Jobs
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%v\n", c.name, c.prio, jobs, c.timedOut, c.cancelled, c.gpuTime.Round(time.Microsecond))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nTDR: %d timeout(s)", len(d.stats.timeouts))
	for _, t := range d.stats.timeouts {
		fmt.Fprintf(w, "; %s: ring reset, client blamed, its later jobs cancelled", t)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "LR: compute-lr preempted %d time(s) by an eviction, resumed %d time(s), finished with error %v\n",
		lrRes.preemptions, lrRes.resumes, lrRes.err)
	fmt.Fprintf(w, "lockdep: %d report(s)\n", len(d.reports.Reports()))
}
