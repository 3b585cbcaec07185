module github.com/gpusync/gpusync

go 1.26.0

require (
	github.com/petermattis/goid v0.0.0-20260820044319-269ab09b5261
	go.uber.org/goleak v1.3.0
)

require github.com/stretchr/testify v1.11.1 // indirect
