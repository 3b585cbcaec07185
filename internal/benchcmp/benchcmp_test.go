package benchcmp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Run gives every side every operation, in blocks of at most Block, and rotates
// which side goes first, so that neither always runs right after the other.
func TestRunSplitsIntoBlocksAndRotatesTheOrder(t *testing.T) {
	var order []int
	counts := make([]int, 3)
	side := func(i int) Side {
		return func(k int) time.Duration {
			order = append(order, i)
			counts[i] += k
			return time.Duration(k)
		}
	}
	n := 2*Block + 7
	got := Run(n, side(0), side(1), side(2))
	require.Equal(t, []int{n, n, n}, counts)
	require.Equal(t, []time.Duration{time.Duration(n), time.Duration(n), time.Duration(n)}, got)
	require.Equal(t, []int{0, 1, 2, 1, 2, 0, 2, 0, 1}, order)
	require.InDelta(t, 2.0, Ratio(2*time.Second, time.Second), 1e-12)
	require.InDelta(t, 1.5, PerOp(3*time.Nanosecond, 2), 1e-12)
}
