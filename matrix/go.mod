module github.com/saferetry/saferetry-go/matrix

go 1.25.0

require (
	github.com/saferetry/saferetry-go v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.58.0
)

require (
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	golang.org/x/oauth2 v0.34.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)

replace github.com/saferetry/saferetry-go => ../
