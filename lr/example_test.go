package lr_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// fakeGPU plays the hardware: a compute job runs until the test says it is done;
// suspending and resuming the queue is instant.
type fakeGPU struct {
	mu     sync.Mutex
	events []string
}

func (g *fakeGPU) log(format string, args ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events = append(g.events, fmt.Sprintf(format, args...))
}

// A long-running compute job shares a buffer with the rest of the system. Memory
// pressure evicts the buffer: the job's queue is preempted through its preempt
// fence, the buffer moves, and the VM's rebind worker brings the buffer back and
// resumes the queue. The job is never terminated, and lockdep (primed with the
// kernel's memory-management order) stays silent.
func Example() {
	var reports lockdep.Collector
	chk := lockdep.NewChecker(lockdep.WithHandler(reports.Handle))
	chk.Prime()

	gpu := &fakeGPU{}
	suspended := make(chan struct{}, 1)
	resumed := make(chan struct{}, 1)
	q, _ := lr.NewQueue(lr.QueueConfig{
		Name: "compute", RingSize: 4, Checker: chk,
		Ops: lr.QueueOps{
			Run: func(j *lr.Job) error { gpu.log("run %v", j.Data); return nil },
			Suspend: func(*lr.Queue) error {
				gpu.log("suspend")
				suspended <- struct{}{}
				return nil
			},
			SuspendWait: func(ctx context.Context, _ *lr.Queue) error { <-suspended; return nil },
			Resume:      func(*lr.Queue) { gpu.log("resume"); resumed <- struct{}{} },
		},
	})
	defer q.Close()
	vm := lr.NewVM(lr.VMOps{Revalidate: func(*resv.Object) error { gpu.log("revalidate"); return nil }}, chk)
	defer vm.Close()

	ctx := context.Background()
	bo := resv.NewObject(chk)
	vm.AddBuffer(ctx, bo)
	vm.AddQueue(ctx, q)

	job, _ := q.Push(ctx, "simulation")
	job.Scheduled().Wait(ctx) // on the ring, running for as long as it takes

	vm.Evict(ctx, bo) // memory pressure: waits for the preempt fence, not the job
	<-resumed         // the rebind worker brought the buffer back

	job.Complete(nil) // much later, the simulation ends
	job.Done().Wait(ctx)

	for _, e := range gpu.events {
		fmt.Println(e)
	}
	fmt.Println("job error:", job.Done().Error(), "- lockdep reports:", len(reports.Reports()))
	// Output:
	// run simulation
	// suspend
	// revalidate
	// resume
	// job error: <nil> - lockdep reports: 0
}
