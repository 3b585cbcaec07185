package sched

import (
	"math"
	"time"

	"github.com/gpusync/gpusync/internal/monotime"
)

// The scheduler's clock is internal/monotime's, the one fences keep their
// timestamps on: every time it keeps (when a job was pushed, reached the ring,
// completed; TDR deadlines) is a reading, nanoseconds since one epoch on the
// monotonic clock, one clock read where time.Now takes two. The kernel keeps
// ktime_t, nanoseconds on CLOCK_MONOTONIC, for the same stamps.

// Readings no clock gives: never is "no deadline", longAgo "nothing yet".
const (
	never   = math.MaxInt64
	longAgo = math.MinInt64
)

// now reads the monotonic clock.
func now() int64 { return monotime.Now() }

// at is the time.Time of reading t, for events and fence timestamps.
func at(t int64) time.Time { return monotime.Time(t) }

// reading is the clock reading of t.
func reading(t time.Time) int64 { return monotime.Reading(t) }
