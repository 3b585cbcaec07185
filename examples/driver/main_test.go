package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func small(t *testing.T, seed uint64) (string, config) {
	cfg := config{clients: 2, duration: 20 * time.Millisecond, seed: seed, timeout: 30 * time.Millisecond,
		trace: filepath.Join(t.TempDir(), "trace.json")}
	var out bytes.Buffer
	require.NoError(t, run(&out, cfg))
	return out.String(), cfg
}

var row = regexp.MustCompile(`(?m)^(client-\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+$`)

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// The summary has the right counts: every planned job accounted, the hanging
// client's one timeout and its later jobs cancelled, the other clients untouched,
// one preemption and one resume of the LR client, and no lockdep report.
func TestDriverSummaryCounts(t *testing.T) {
	out, _ := small(t, 1)
	rows := row.FindAllStringSubmatch(out, -1)
	require.Len(t, rows, 3, out)
	for _, r := range rows {
		jobs, timedOut, cancelled := atoi(t, r[3]), atoi(t, r[4]), atoi(t, r[5])
		require.Positive(t, jobs, r[0])
		if r[1] == "client-hang" {
			require.Equal(t, 1, timedOut, out)
			require.Equal(t, jobs-3, cancelled, "every job after the hang is cancelled: %s", out)
		} else {
			require.Zero(t, timedOut, "other clients are unaffected: %s", out)
			require.Zero(t, cancelled, out)
		}
	}
	require.Contains(t, out, "TDR: 1 timeout(s); client-hang job 3 on compute")
	require.Contains(t, out, "LR: compute-lr preempted 1 time(s) by an eviction, resumed 1 time(s), finished with error <nil>")
	require.Contains(t, out, "lockdep: 0 report(s)")
}

// A seed fixes the run: the summary is the same both times.
func TestDriverSameSeedSameRun(t *testing.T) {
	a, _ := small(t, 42)
	b, _ := small(t, 42)
	strip := regexp.MustCompile(`(?m)^trace: .*$`)
	require.Equal(t, strip.ReplaceAllString(a, ""), strip.ReplaceAllString(b, ""))
}

// The trace file is valid trace-event JSON with ring and entity tracks.
func TestDriverWritesTrace(t *testing.T) {
	_, cfg := small(t, 3)
	b, err := os.ReadFile(cfg.trace)
	require.NoError(t, err)
	var file struct {
		TraceEvents []struct {
			Ph   string         `json:"ph"`
			Name string         `json:"name"`
			Args map[string]any `json:"args"`
		} `json:"traceEvents"`
	}
	require.NoError(t, json.Unmarshal(b, &file))
	tracks := map[string]bool{}
	var slices int
	for _, e := range file.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			tracks[e.Args["name"].(string)] = true
		}
		if e.Ph == "X" {
			slices++
		}
	}
	for _, want := range []string{"gfx", "compute", "client-0/gfx", "client-hang/compute"} {
		require.True(t, tracks[want], "track %q in %v", want, tracks)
	}
	require.Positive(t, slices)
}
