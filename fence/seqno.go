package fence

// IsLater reports whether f1 is later than f2 on their common context. Fences on
// different contexts are not ordered: the answer is false (the kernel warns). With
// Seqno64 seqnos compare as plain numbers, otherwise wrap-aware on the low 32 bits,
// so 1 is later than 0xffffffff. Models dma_fence_is_later().
func IsLater(f1, f2 *Fence) bool {
	if f1.ctx.id != f2.ctx.id {
		return false
	}
	return seqnoLater(f1.ctx.seqno64, f1.seqno, f2.seqno)
}

// IsLaterOrSame is IsLater, or the same fence. Models dma_fence_is_later_or_same().
func IsLaterOrSame(f1, f2 *Fence) bool { return f1 == f2 || IsLater(f1, f2) }

func seqnoLater(wide bool, s1, s2 uint64) bool {
	if wide {
		return s1 > s2
	}
	return int32(uint32(s1)-uint32(s2)) > 0
}

// Later returns the later of two fences on one context, or nil if the later one
// has already signalled or the contexts differ. Models dma_fence_later().
func Later(f1, f2 *Fence) *Fence {
	if f1.ctx.id != f2.ctx.id {
		return nil
	}
	f := f2
	if IsLater(f1, f2) {
		f = f1
	}
	if f.IsSignaled() {
		return nil
	}
	return f
}
