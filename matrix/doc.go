// Package matrix runs saferetry's exactly-once checks over the
// configurations Go services run the transport in: HTTP/1.1, HTTP/2 over
// TLS and h2c; no bound, http.Client.Timeout, a context deadline and
// WithAttemptTimeout; request bodies with GetBody, streamed under and over
// WithMaxBufferedBody, and none; no auth, Chift tokens and zerohash
// signing; net/http's transport as the base, and a base that hides
// httptrace from the SDK.
//
// The suite lives in the test files. It is a module of its own so that
// golang.org/x/net, whose HTTP/2 framer drives the misbehaving server,
// stays out of the SDK's go.mod. Run it with
//
//	cd matrix && go vet ./... && go test -race -count=1 ./...
//
// SAFERETRY_MATRIX_OPS sets the operations per cell (default 20),
// SAFERETRY_MATRIX_SEED the seed of the faults (default 1) and
// SAFERETRY_MATRIX_PARALLEL how many cells run at once (default 8).
package matrix
