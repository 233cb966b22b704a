module github.com/saferetry/saferetry-go/retryablehttp

go 1.25.0

require (
	github.com/hashicorp/go-cleanhttp v0.5.2
	github.com/hashicorp/go-retryablehttp v0.7.8
	github.com/saferetry/saferetry-go v0.0.0
)

require (
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	golang.org/x/oauth2 v0.34.0 // indirect
)

replace github.com/saferetry/saferetry-go => ../
