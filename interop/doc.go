// Package interop tests saferetry against idempotency implementations that
// other people wrote, not only against the fakes in the SDK's own tests: the
// transport's behaviour is only as good as its agreement with real servers.
// It is a separate Go module, with its own go.mod, so that the servers it
// needs (Fiber v3 and its idempotency middleware, fasthttp and their
// dependencies) stay out of the SDK's go.mod and go.sum: code that imports
// github.com/saferetry/saferetry-go never downloads or builds them. The
// module holds tests only; CI runs them with `cd interop && go test ./...`.
package interop
