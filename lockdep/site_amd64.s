#include "textflag.h"

// func callerPCs(pcs *sitePCs)
// BP is the frame pointer of the Go function that called us (a $0 frame does not
// push one). Each frame holds the saved BP at 0(BP) and its return address at 8(BP).
TEXT ·callerPCs(SB), NOSPLIT, $0-8
	MOVQ pcs+0(FP), DI
	MOVQ BP, AX
	MOVQ 0(AX), AX // skip the calling frame (captureSite)
	MOVQ $4, CX
loop:
	TESTQ AX, AX
	JZ   done
	MOVQ 8(AX), DX
	MOVQ DX, 0(DI)
	ADDQ $8, DI
	MOVQ 0(AX), AX
	DECQ CX
	JNZ  loop
done:
	RET
