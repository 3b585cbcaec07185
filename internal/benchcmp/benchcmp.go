// Package benchcmp times a benchmark against its baseline in the same run, so that
// the ratio the project reports means the same on a noisy machine: the sides run in
// blocks, in rotating order, so a drift in clock speed, background load or GC
// pacing hits them alike. Shared by the benchmarks of every package.
package benchcmp

import "time"

// Block is how many operations run between two clock readings: large enough that
// reading the clock is noise, small enough that the sides alternate many times.
const Block = 1024

// A Side is one side of a comparison: it performs k operations and returns the time
// they took. It reads the clock itself, so that it can prepare a block untimed
// (make the fences it will signal, take a lock the timing must not include).
type Side func(k int) time.Duration

// Loop makes a Side of a loop that needs no preparation.
func Loop(loop func(k int)) Side {
	return func(k int) time.Duration {
		t0 := time.Now()
		loop(k)
		return time.Since(t0)
	}
}

// Run runs every side n times, in blocks of Block, rotating which side goes first
// from one block to the next, and returns the time each side took, in order.
func Run(n int, sides ...Side) []time.Duration {
	total := make([]time.Duration, len(sides))
	for i, done := 0, 0; done < n; i++ {
		k := min(Block, n-done)
		for j := range sides {
			s := (i + j) % len(sides)
			total[s] += sides[s](k)
		}
		done += k
	}
	return total
}

// PerOp is d spread over n operations, in nanoseconds.
func PerOp(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }

// Ratio is ours over base.
func Ratio(ours, base time.Duration) float64 { return float64(ours) / float64(base) }
