// Package interop tests saferetry against idempotency implementations that
// other people wrote, not only against the fakes in the SDK's own tests: the
// transport's behaviour is only as good as its agreement with real servers.
// It is a separate Go module, with its own go.mod, so that the servers it
// needs (Fiber v3 and its idempotency middleware, fasthttp and their
// dependencies) stay out of the SDK's go.mod and go.sum: code that imports
// github.com/saferetry/saferetry-go never downloads or builds them. The
// module holds tests only; CI runs them with `cd interop && go test ./...`.
//
// Two servers are tested: Fiber's idempotency middleware, in process
// (fiber_test.go), and the npm package express-idempotency on Express, run
// as `node express/server.js` (express_test.go). The Express tests need
// Node.js and npm on PATH; the first run installs the versions pinned in
// express/package-lock.json with `npm ci` into express/node_modules (not
// committed). Without node they skip, except under CI=true, where they fail.
package interop
