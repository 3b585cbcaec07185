//go:build !amd64

package lockdep

import "runtime"

// captureSite records the site of an acquisition in the caller of the function that
// calls captureSite. Off amd64 it falls back to runtime.Callers, which is correct but
// costs about a hundred nanoseconds more per checked acquisition.
//
//go:noinline
func captureSite(s *sitePCs) {
	runtime.Callers(3, s[:])
}
