package lockdep

import (
	"fmt"
	"io"
	"sync"
)

// A Handler receives each report a Checker makes. It runs in the goroutine that
// broke the rule, before that goroutine blocks on the lock it asked for, and with no
// lockdep-internal lock held, so it may panic, log or record. A handler that panics
// leaves lockdep consistent: the acquisition it interrupted is not recorded.
//
// The kernel has no counterpart: it prints each splat to the console. Log does that.
type Handler func(*Report)

// Panic is a Handler that panics with the *Report, as the kernel's
// panic_on_warn does. Recover it and use errors.As to inspect it.
func Panic(r *Report) { panic(r) }

// Log returns a Handler that writes each report's splat to w. Writes are serialised
// so that concurrent reports do not interleave. Models the kernel printing a splat
// to the console.
func Log(w io.Writer) Handler {
	var mu sync.Mutex
	return func(r *Report) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprint(w, r.String())
	}
}

// A Collector keeps reports for later inspection. Its zero value is ready to use;
// Handle is its Handler. It is safe for concurrent use. The kernel has no
// counterpart: reports are for tests to assert on, as Report is.
type Collector struct {
	mu      sync.Mutex
	reports []*Report // guarded by mu
}

// Handle records r. Pass c.Handle as a Checker's handler. No kernel counterpart
// (see Collector).
func (c *Collector) Handle(r *Report) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reports = append(c.reports, r)
}

// Reports returns the reports collected so far, oldest first. No kernel
// counterpart (see Collector).
func (c *Collector) Reports() []*Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Report(nil), c.reports...)
}

// Kinds returns the kinds of the reports collected so far, oldest first: the value
// tests usually assert on. No kernel counterpart (see Collector).
func (c *Collector) Kinds() []Kind {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Kind, len(c.reports))
	for i, r := range c.reports {
		out[i] = r.Kind
	}
	return out
}

// Reset forgets the collected reports. No kernel counterpart (see Collector).
func (c *Collector) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reports = nil
}
