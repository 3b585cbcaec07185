package sched

import (
	"math"
	"time"
)

// epoch anchors the scheduler's clock: every time it keeps (when a job was
// pushed, reached the ring, completed; TDR deadlines) is nanoseconds since epoch
// on the monotonic clock, one reading where time.Now takes two. The kernel keeps
// ktime_t, nanoseconds on CLOCK_MONOTONIC, for the same stamps. at turns a reading
// back into a time.Time for events and fence timestamps.
//
// Inside a testing/synctest bubble time.Now has no monotonic reading, so the
// readings there are differences of wall clocks: still exact, in virtual time.
var epoch = time.Now()

// Readings no clock gives: never is "no deadline", longAgo "nothing yet".
const (
	never   = math.MaxInt64
	longAgo = math.MinInt64
)

// now reads the monotonic clock.
func now() int64 { return int64(time.Since(epoch)) }

// at is the time.Time of reading t.
func at(t int64) time.Time { return epoch.Add(time.Duration(t)) }

// reading is the clock reading of t.
func reading(t time.Time) int64 { return int64(t.Sub(epoch)) }
