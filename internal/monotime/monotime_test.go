package monotime

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A reading and a time.Time turn into each other without loss, with or without
// a monotonic reading in the time.Time, and readings order as the clock does.
func TestReadingRoundTrip(t *testing.T) {
	a := Now()
	b := Now()
	require.LessOrEqual(t, a, b, "the monotonic clock went backwards")

	now := time.Now()
	require.True(t, Time(Reading(now)).Equal(now))

	wall := now.Round(0) // no monotonic reading
	back := Time(Reading(wall))
	require.True(t, back.Equal(wall), "wall clock %v came back as %v", wall, back)

	require.Equal(t, int64(1500), Reading(Time(1000).Add(500*time.Nanosecond)))
}

// In a synctest bubble readings follow virtual time exactly.
func TestReadingInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := Now()
		time.Sleep(3 * time.Second)
		require.Equal(t, int64(3*time.Second), Now()-a)
		require.True(t, Time(a).Add(3*time.Second).Equal(time.Now()))
	})
}
