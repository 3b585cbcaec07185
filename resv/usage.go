package resv

// Usage says what a fence in a reservation object is for, and so who must wait for
// it. Usages are ordered Kernel < Write < Read < Bookkeep; asking for a usage yields
// the fences of that usage and every stronger (smaller) one. Models enum
// dma_resv_usage.
type Usage uint8

const (
	// Kernel: memory management (moves, clears). Everyone waits for it. Models
	// DMA_RESV_USAGE_KERNEL.
	Kernel Usage = iota
	// Write: an implicitly synchronised writer. Models DMA_RESV_USAGE_WRITE.
	Write
	// Read: an implicitly synchronised reader. Models DMA_RESV_USAGE_READ.
	Read
	// Bookkeep: tracked but not implicitly synchronised (preemption fences, page-table
	// updates, explicitly synchronised work). Only eviction waits for it. Models
	// DMA_RESV_USAGE_BOOKKEEP.
	Bookkeep
)

var usageNames = [...]string{"kernel", "write", "read", "bookkeep"}

// String returns the usage's name: kernel, write, read or bookkeep. Models the
// names of the DMA_RESV_USAGE_* constants (dma_resv_describe() has its own table).
func (u Usage) String() string {
	if int(u) < len(usageNames) {
		return usageNames[u]
	}
	return "invalid"
}

// UsageRW returns the usage implicit synchronisation waits for: a writer waits for
// readers and writers (Read), a reader only for writers (Write). Models
// dma_resv_usage_rw().
func UsageRW(write bool) Usage {
	if write {
		return Read
	}
	return Write
}
