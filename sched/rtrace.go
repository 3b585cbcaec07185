package sched

import (
	"context"
	"fmt"
	rtrace "runtime/trace"
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
	rtrace.Logf(ctx, "sched", "queued entity=%d seqno=%d credits=%d", j.entity.id, j.seqno, j.credits)
}

// traceRun runs RunJob inside a region of the job's task.
func (j *Job) traceRun(run func()) {
	if j.rt == nil {
		run()
		return
	}
	rtrace.WithRegion(j.rt.ctx, "RunJob", run)
}

func (j *Job) traceEnd(err error) {
	if j.rt == nil {
		return
	}
	rtrace.Log(j.rt.ctx, "sched", fmt.Sprintf("done err=%v", err))
	j.rt.task.End()
}
