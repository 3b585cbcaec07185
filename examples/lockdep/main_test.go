package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEveryMistakeGivesItsReport(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out, true))
	s := out.String()
	for _, m := range mistakes {
		require.Contains(t, s, m.name)
		require.Contains(t, s, "-> "+m.want.String()+":")
	}
	require.Equal(t, len(mistakes), strings.Count(s, "\n======================================================\nWARNING: "))
}
