package fence_test

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/gpusync/gpusync/fence"
	"github.com/gpusync/gpusync/lockdep/lockdeptest"
)

// timelinePoint is the fuzz model of one point: where it sits on the timeline's
// unbounded count of increments, and what it must show.
type timelinePoint struct {
	value    uint32
	pos      int64 // total increments at which it signals
	closed   bool  // signalled by Close (or made after it): ErrNoEntry
	born     bool  // signalled at creation (value already reached)
	sequence int   // creation order, for messages
}

// FuzzTimeline decodes bytes into Point, Inc and Close operations on a Timeline
// and checks it against a model that counts increments without wrapping: a point
// signals once the increments since its creation reach its distance ahead of the
// value then (an Inc above INT_MAX is applied in INT_MAX steps, as sw_sync does),
// in value order; a closed timeline signals every pending point with ErrNoEntry.
//
// Each operation is one byte, op&3 choosing it (0, 1: Point; 2: Inc; 3: Close)
// and op&4 choosing a short operand (one byte, relative to the value for a
// Point) over a full 32-bit one.
func FuzzTimeline(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 6, 2})                                  // point 3, inc 2
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff})             // point 1, inc 0xffffffff
	f.Add([]byte{2, 0xf0, 0xff, 0xff, 0xff, 4, 5, 4, 0x20, 6, 0x30, 3}) // wrap around 2^32
	f.Add([]byte{4, 5, 4, 5, 4, 9, 6, 3, 3, 4, 1})                      // duplicates, close
	f.Add([]byte{0, 0, 0, 0, 0x80, 2, 0, 0, 0, 0x80, 2, 0, 0, 0, 0x80}) // half the ring ahead
	f.Fuzz(func(t *testing.T, data []byte) {
		tl := fence.NewTimeline("fuzz", fence.WithChecker(lockdeptest.New(t)))
		var (
			value    uint32 // the model's counter
			total    int64  // increments so far, unwrapped
			closed   bool
			points   = map[*fence.Fence]*timelinePoint{}
			pending  = map[uint32]*fence.Fence{} // unsignalled points by value
			signals  []int64                     // positions of points as their callbacks ran
			sequence int
		)
		next := func(n int) []byte {
			if len(data) < n {
				data = append(data, make([]byte, n-len(data))...)
			}
			b := data[:n]
			data = data[n:]
			return b
		}
		operand := func(short bool) uint32 {
			if short {
				return uint32(next(1)[0])
			}
			return binary.LittleEndian.Uint32(next(4))
		}

		for len(data) > 0 && sequence < 256 {
			op := next(1)[0]
			short := op&4 != 0
			switch op & 3 {
			case 0, 1: // Point
				v := operand(short)
				if short {
					v += value - 8 // near the value, on both sides of it
				}
				p := tl.Point(v)
				if m, ok := points[p]; ok {
					if closed || m.born || total >= m.pos || pending[v] != p {
						t.Fatalf("Point(%d) returned point #%d (value %d), which is not the pending point of that value", v, m.sequence, m.value)
					}
					continue
				}
				if p.Seqno() != uint64(v) {
					t.Fatalf("Point(%d) has seqno %d", v, p.Seqno())
				}
				if old, ok := pending[v]; ok {
					t.Fatalf("Point(%d) made a second fence while %v is pending", v, old)
				}
				sequence++
				d := int64(int32(v - value))
				m := &timelinePoint{value: v, pos: total + d, closed: closed, born: closed || d <= 0, sequence: sequence}
				points[p] = m
				if !m.born {
					pending[v] = p
					var cb fence.Callback
					if err := p.AddCallback(&cb, func(*fence.Fence, *fence.Callback) { signals = append(signals, m.pos) }); err != nil {
						t.Fatalf("AddCallback on a pending point: %v", err)
					}
				}
			case 2: // Inc
				n := operand(short)
				signals = signals[:0]
				tl.Inc(n)
				value += n
				total += int64(n)
				var due []int64
				for v, p := range pending {
					if m := points[p]; m.pos <= total {
						due = append(due, m.pos)
						delete(pending, v)
					}
				}
				slices.Sort(due)
				if !slices.Equal(signals, due) {
					t.Fatalf("Inc(%d) to %d signalled positions %v, want %v in order", n, value, signals, due)
				}
			case 3: // Close
				tl.Close()
				closed = true
				for v, p := range pending {
					points[p].closed = true
					delete(pending, v)
				}
			}

			if got := tl.Value(); got != value {
				t.Fatalf("Value() = %d, want %d", got, value)
			}
			for p, m := range points {
				want := m.born || m.closed || m.pos <= total
				if p.IsSignaled() != want {
					t.Fatalf("point #%d (value %d, signals at %d, %d increments so far, timeline value %d, closed %v): signalled %v, want %v",
						m.sequence, m.value, m.pos, total, value, closed, p.IsSignaled(), want)
				}
				if !want {
					if int32(m.value-value) <= 0 {
						t.Fatalf("pending point #%d (value %d) is not ahead of the value %d", m.sequence, m.value, value)
					}
					continue
				}
				err := p.Error()
				if m.closed && !errors.Is(err, fence.ErrNoEntry) || !m.closed && err != nil {
					t.Fatalf("point #%d (value %d, closed %v): error %v", m.sequence, m.value, m.closed, err)
				}
			}
		}
	})
}
