package sched_test

import (
	"bytes"
	"context"
	rtrace "runtime/trace"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
)

// With runtime tracing on, each job is a "gpu job" task and RunJob a region of it,
// so `go tool trace` shows jobs on the goroutines that handled them.
func TestRuntimeTraceShowsJobsAsTasksAndRegions(t *testing.T) {
	chk := lockdeptest.New(t)
	hw := fence.NewContext("test", "hw", fence.WithChecker(chk))
	s, err := sched.New(sched.Config{
		Name: "traced", CreditLimit: 4, Checker: chk,
		Ops: sched.Ops{
			RunJob:      func(*sched.Job) (*fence.Fence, error) { f := hw.Next(); f.Signal(); return f, nil },
			TimedOutJob: func(*sched.Job) sched.Status { return sched.StatusReset },
			FreeJob:     func(*sched.Job) {},
		},
	})
	require.NoError(t, err)
	defer s.Close()
	e, err := s.NewEntity(sched.PriorityNormal)
	require.NoError(t, err)
	defer e.Destroy(context.Background())

	var buf bytes.Buffer
	require.NoError(t, rtrace.Start(&buf))
	j, err := e.NewJob(1, nil)
	require.NoError(t, err)
	require.NoError(t, j.Arm())
	require.NoError(t, j.Push())
	require.NoError(t, j.Finished().Wait(context.Background()))
	rtrace.Stop()

	require.Contains(t, buf.String(), "gpu job", "the job's task is in the trace")
	require.Contains(t, buf.String(), "RunJob", "RunJob's region is in the trace")
}
