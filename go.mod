module github.com/gpusync/gpusync

go 1.26.0

require (
	github.com/petermattis/goid v0.0.0-20260820044319-269ab09b5261
	github.com/sasha-s/go-deadlock v0.3.9
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.24.0
	pgregory.net/rapid v1.2.0
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	github.com/stretchr/testify v1.11.1
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
