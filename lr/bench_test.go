package lr_test

import (
	"context"
	"testing"

	"github.com/gpusync/gpusync/lockdep"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// BenchmarkPreemptEvictResumeCycle is one full eviction of a buffer shared with a
// running LR queue, on hardware whose Suspend, SuspendWait and Resume return at
// once: Evict (preempt fence triggered, queue suspended, fence signalled, buffer
// moved) and then the rebind worker's revalidate, fresh preempt fence and resume.
// A cycle ends when Resume has run. Reports ns/cycle.
func BenchmarkPreemptEvictResumeCycle(b *testing.B) {
	ctx := context.Background()
	chk := lockdep.NewChecker(lockdep.Off())
	resumed := make(chan struct{}, 1)
	q, err := lr.NewQueue(lr.QueueConfig{
		Name: "compute", RingSize: 1, Checker: chk,
		Ops: lr.QueueOps{
			Run:         func(*lr.Job) error { return nil },
			Suspend:     func(*lr.Queue) error { return nil },
			SuspendWait: func(context.Context, *lr.Queue) error { return nil },
			Resume:      func(*lr.Queue) { resumed <- struct{}{} },
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	vm := lr.NewVM(lr.VMOps{Revalidate: func(*resv.Object) error { return nil }}, chk)
	defer vm.Close()
	bo := resv.NewObject(chk)
	if err := vm.AddBuffer(ctx, bo); err != nil {
		b.Fatal(err)
	}
	if err := vm.AddQueue(ctx, q); err != nil {
		b.Fatal(err)
	}
	job, err := q.Push(ctx, "long-running")
	if err != nil {
		b.Fatal(err)
	}
	defer job.Complete(nil)

	b.ReportAllocs()
	for b.Loop() {
		if err := vm.Evict(ctx, bo); err != nil {
			b.Fatal(err)
		}
		<-resumed
	}
	b.StopTimer()
	if vm.Rebinds() != b.N || q.Err() != nil || job.Done().IsSignaled() {
		b.Fatalf("%d rebinds for %d cycles, queue error %v", vm.Rebinds(), b.N, q.Err())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/cycle")
}

// BenchmarkPushFullRing pushes through a ring of one slot that is always full: a
// helper goroutine completes each job as soon as it is in flight, so each Push
// waits for the previous job's slot. Reports ns/push.
func BenchmarkPushFullRing(b *testing.B) {
	ctx := context.Background()
	chk := lockdep.NewChecker(lockdep.Off())
	q, err := lr.NewQueue(lr.QueueConfig{
		Name: "compute", RingSize: 1, Checker: chk,
		Ops: lr.QueueOps{Run: func(*lr.Job) error { return nil }},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	inflight := make(chan *lr.Job, 1)
	helper := make(chan struct{})
	go func() {
		defer close(helper)
		for j := range inflight {
			j.Complete(nil) // the oldest (and only) job in flight
		}
	}()

	b.ReportAllocs()
	for b.Loop() {
		j, err := q.Push(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		inflight <- j
	}
	b.StopTimer()
	close(inflight)
	<-helper
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/push")
}
