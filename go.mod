module github.com/saferetry/saferetry-go

go 1.25.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/google/uuid v1.6.0
	github.com/jarcoal/httpmock v1.4.2
	golang.org/x/oauth2 v0.34.0
)

require go.uber.org/goleak v1.3.0
