package sched

import (
	"context"
	"fmt"
	rtrace "runtime/trace"

	"github.com/gpusync/gpusync/fence"
)

// jobTrace makes a job visible in `go tool trace`: a task from Push to completion,
// with a region around RunJob and a log record per step. Everything is skipped
// unless runtime tracing was on when the job was pushed.
type jobTrace struct {
	ctx  context.Context
	task *rtrace.Task
}

func (j *Job) traceStart() {
	if !rtrace.IsEnabled() {
		return
	}
	ctx, task := rtrace.NewTask(context.Background(), "gpu job")
	j.rt = &jobTrace{ctx: ctx, task: task}
	rtrace.Logf(ctx, "sched", "queued entity=%d seqno=%d credits=%d", j.entity.id, j.Seqno(), j.credits)
}

// run calls the driver's RunJob, inside a region of the job's task when traced.
func (j *Job) run(runJob func(*Job) (*fence.Fence, error)) (hw *fence.Fence, err error) {
	if j.rt == nil {
		return runJob(j)
	}
	rtrace.WithRegion(j.rt.ctx, "RunJob", func() { hw, err = runJob(j) })
	return hw, err
}

func (j *Job) traceEnd(err error) {
	if j.rt == nil {
		return
	}
	rtrace.Log(j.rt.ctx, "sched", fmt.Sprintf("done err=%v", err))
	j.rt.task.End()
}
