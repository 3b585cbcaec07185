package lr_test

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	"github.com/gpusync/gpusync/lockdep/lockdeptest"
	"github.com/gpusync/gpusync/lr"
	"github.com/gpusync/gpusync/resv"
)

// A queue added while another queue of the VM is being preempted must not start
// running on buffers that are about to move: its preempt fence is triggered at
// once, and the rebind worker resumes both, as xe_vm_add_compute_exec_queue() does.
func TestAddQueueDuringPreemptionIsPreemptedToo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chk := lockdeptest.New(t)
		release := make(chan struct{})
		suspended := map[string]int{}
		resumed := map[string]int{}
		newQueue := func(name string) *lr.Queue {
			q, err := lr.NewQueue(lr.QueueConfig{Name: name, RingSize: 2, Checker: chk, Ops: lr.QueueOps{
				Run:         func(*lr.Job) error { return nil },
				Suspend:     func(q *lr.Queue) error { suspended[q.Name()]++; return nil },
				SuspendWait: func(ctx context.Context, _ *lr.Queue) error { <-release; return nil },
				Resume:      func(q *lr.Queue) { resumed[q.Name()]++ },
			}})
			require.NoError(t, err)
			t.Cleanup(q.Close)
			return q
		}
		vm := lr.NewVM(lr.VMOps{}, chk)
		t.Cleanup(vm.Close)
		ctx := context.Background()
		bo := resv.NewObject(chk)
		require.NoError(t, vm.AddBuffer(ctx, bo))
		first := newQueue("first")
		require.NoError(t, vm.AddQueue(ctx, first))

		vm.PreemptFence(first).EnableSignaling() // eviction starts preempting first
		synctest.Wait()                          // first's suspension is in flight
		second := newQueue("second")
		require.NoError(t, vm.AddQueue(ctx, second))
		require.True(t, vm.PreemptFence(second).Triggered(), "the newcomer is preempted at once")

		close(release) // both suspensions complete
		synctest.Wait()
		require.Equal(t, 1, suspended["first"])
		require.Equal(t, 1, suspended["second"])
		require.Equal(t, 1, resumed["first"], "the rebind worker resumes both")
		require.Equal(t, 1, resumed["second"])
	})
}
