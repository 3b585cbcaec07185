// Package monotime is the clock the model's packages share. A reading is
// nanoseconds since one epoch taken at start-up, on the monotonic clock: one
// clock read where time.Now takes two (wall and monotonic), and an int64 that
// packs into a fence or a job where a time.Time takes 24 bytes. The kernel keeps
// the same kind of value, ktime_t on CLOCK_MONOTONIC, for fence timestamps and
// the scheduler's stamps.
//
// One epoch for every package means a reading taken by the scheduler and one
// stored in a fence are the same number for the same instant, so either can be
// compared with, or turned into, the other without loss.
//
// Inside a testing/synctest bubble time.Now carries no monotonic reading, so
// readings there are differences of wall clocks: still exact, in virtual time.
// A time.Time without a monotonic reading keeps its wall clock exactly when it
// is turned into a reading and back.
package monotime

import "time"

var epoch = time.Now()

// Now reads the monotonic clock.
func Now() int64 { return int64(time.Since(epoch)) }

// Time is the time.Time of reading r.
func Time(r int64) time.Time { return epoch.Add(time.Duration(r)) }

// Reading is the reading of t.
func Reading(t time.Time) int64 { return int64(t.Sub(epoch)) }
