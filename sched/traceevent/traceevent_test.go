package traceevent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/sched"
	"github.com/gpusync/gpusync/sched/schedtest"
	"github.com/gpusync/gpusync/sched/traceevent"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run drives two rings and three entities with cross-ring dependencies and one
// hang, recording everything.
func run(t *testing.T) *traceevent.Recorder {
	rec := &traceevent.Recorder{}
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		gfx := schedtest.New(t, schedtest.Config{Name: "gfx", Tracer: rec, Checker: chk, Timeout: 50 * time.Millisecond})
		comp := schedtest.New(t, schedtest.Config{Name: "compute", Tracer: rec, Checker: chk, Timeout: 50 * time.Millisecond})
		a := gfx.NewEntity(t, sched.PriorityNormal)
		b := gfx.NewEntity(t, sched.PriorityHigh)
		c := comp.NewEntity(t, sched.PriorityNormal)
		rec.NameEntity(a, "client-a")
		rec.NameEntity(c, "client-c")
		var last *schedtest.Job
		for i := range 6 {
			ring, e := gfx, a
			switch i % 3 {
			case 1:
				ring, e = gfx, b
			case 2:
				ring, e = comp, c
			}
			j := ring.NewJob(t, e)
			j.Duration = time.Millisecond
			if last != nil {
				require.NoError(t, j.AddDependency(last.Finished()))
			}
			require.NoError(t, j.Submit())
			last = j
		}
		require.True(t, last.WaitFinished(context.Background()))
		hang := comp.NewJob(t, c)
		require.NoError(t, hang.Submit())
		require.NoError(t, hang.Finished().Wait(context.Background()))
	})
	return rec
}

func TestTraceJSONStructure(t *testing.T) {
	rec := run(t)
	var buf bytes.Buffer
	_, err := rec.WriteTo(&buf)
	require.NoError(t, err)

	var file struct {
		TraceEvents []map[string]any `json:"traceEvents"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &file))
	require.NotEmpty(t, file.TraceEvents)

	starts, finishes := map[float64]int{}, map[float64]int{}
	threads := map[[2]float64]string{}
	var slices, timeouts int
	for _, e := range file.TraceEvents {
		ph, ok := e["ph"].(string)
		require.True(t, ok, "every event has ph: %v", e)
		require.Contains(t, e, "pid")
		require.Contains(t, e, "tid")
		switch ph {
		case "M":
			if e["name"] == "thread_name" {
				threads[[2]float64{e["pid"].(float64), e["tid"].(float64)}] = e["args"].(map[string]any)["name"].(string)
			}
			continue
		case "X":
			slices++
			require.Contains(t, e, "dur")
			require.GreaterOrEqual(t, e["dur"].(float64), 0.0)
		case "s":
			starts[e["id"].(float64)]++
		case "f":
			finishes[e["id"].(float64)]++
			require.Equal(t, "e", e["bp"])
		case "i":
			timeouts++
		default:
			t.Fatalf("unexpected phase %q", ph)
		}
		require.GreaterOrEqual(t, e["ts"].(float64), 0.0)
	}
	require.Equal(t, starts, finishes, "every flow start has its end")
	require.NotEmpty(t, starts, "cross-ring dependencies produce flow arrows")
	require.Equal(t, 1, timeouts, "the hung job's TDR shows as an instant")
	require.GreaterOrEqual(t, slices, 2*6, "a wait slice and a GPU slice per finished job")
	names := map[string]bool{}
	for _, n := range threads {
		names[n] = true
	}
	for _, want := range []string{"gfx", "compute", "client-a", "client-c"} {
		require.True(t, names[want], "a track named %q in %v", want, names)
	}
}
