// Package saferetrytest runs in-process fakes of two APIs, Chift's invoice
// API (ChiftServer) and zerohash's transfers API (ZeroHashServer), so
// that tests and examples can show a retrying client meeting the failures
// that make retries dangerous: a connection lost before or after the server
// acted, a body cut off halfway, a proxy's HTML error page, a rate limit, a
// duplicate arriving while the original is still being committed.
//
// The server speaks real HTTP on loopback (net/http/httptest) and is written
// from Chift's published documents alone. It imports nothing from the SDK, so
// a wrong header, status or field name in the client cannot be mirrored here
// and pass unnoticed.
//
// # Endpoints
//
// POST /consumers/{consumer_id}/invoicing/invoices and
// POST /consumers/{consumer_id}/accounting/invoices create an invoice from a
// JSON object and answer 200 with the posted fields plus "id": "inv_<n>".
// A body that is not a JSON object gets a 422 validation error. An
// "invoice_number" already used for the same consumer gets 409
// ERROR_INVOICE_NUMBER_ALREADY_USED: a business conflict, not an idempotency
// answer. Other methods on those paths get 405, other paths 404, both with
// ERROR_RESOURCE_NOT_SUPPORTED.
//
// POST /token issues an access token; GET
// /consumers/{consumer_id}/connections/{connection_id}/transactions?client_request_id=...
// looks a key up in the transaction log; other methods on those two paths
// get 405 as well. Both are described below.
//
// # Idempotency
//
// The X-Chift-Client-RequestId header (any case; an empty value counts as
// absent) is the idempotency key. Requests without it are processed every
// time. A key is "in process" while its first request is processed and is
// then recorded with the status that processing produced (200, 409 or 422).
// Later requests with the key get 409 REQUEST_IN_PROCESS or 409
// REQUEST_ALREADY_PROCESSED ("Request already processed: <status>"), with
// the bodies Chift documents. Keys are never forgotten while the server runs.
//
// # How each create request is handled, in this order
//
//  1. A key longer than 255 characters is refused with 422. Nothing is
//     recorded and no fault is consumed.
//  2. Key check: a key in process or recorded gets its 409 at once. No fault
//     is consumed. Otherwise the key becomes in process.
//  3. The fault is chosen: the next one queued by Script; when the queue is
//     empty, the func given to SetFaultFunc; without one, FaultNone.
//  4. Faults that strike before processing (drop-before, 500, 502, 503, 429)
//     release the key, so a retry with it is processed as a first request.
//  5. Processing creates the invoice (or refuses it) and records the key.
//     FaultSlowCommit waits SlowDelay first, with the key in process;
//     ReleaseSlowCommits ends that wait at once, for tests that must choose
//     the moment of the commit rather than race a timer.
//  6. The response is sent, or damaged as drop-after and reset-mid-body say;
//     the entity exists and the key is recorded either way.
//
// Every request, whatever its path, is kept for Requests, with the fault it
// met and the status written.
//
// # Authentication
//
// POST /token takes Chift's AuthItem JSON body: clientId, clientSecret and
// accountId (a UUID) are required, envId (a string) and marketplaceId (a
// UUID) are optional and may be null. A body that breaks that schema gets a
// 422 validation error listing every problem. Credentials other than
// ChiftServer.ClientID, ClientSecret and AccountID get 401
// ERROR_CHIFT_AUTHENTICATION_ERROR (the message is this fake's wording).
// Otherwise the answer is 200 {"access_token", "token_type": "bearer",
// "expires_in": TokenLifetime in seconds, "expires_on": Unix seconds}. The
// token is an opaque random string (Chift's OpenAPI says JWT; nothing
// depends on that). It is valid while Now is before expires_on; there is no
// refresh token. ScriptToken queues faults for this endpoint only; each
// token request consumes one before its body is read.
//
// With RequireAuth set, every other request, including those to unknown
// paths, needs "Authorization: Bearer <token>" (the scheme in any case:
// Chift's documents write BEARER) with a valid token. Without one it gets
// 401 {"status":"error","message":"Invalid or expired token",
// "error_code":"ERROR_CHIFT_AUTHENTICATION_ERROR"} before anything else
// happens: no key is checked or recorded and no fault is consumed. The
// server keeps only a hash of each token, so no record or field can print
// one. RequireAuth is off by default, and then the header is ignored.
//
// # Transaction lookup
//
// The transactions endpoint answers a recorded key with 200
// {"created_on", "method", "route", "status_code", "created_entity_id"}:
// when the original request started (RFC 3339, UTC, by Now), its method and
// path, the status its processing produced, and the invoice id, or null
// when nothing was created (409 ERROR_INVOICE_NUMBER_ALREADY_USED, 422). A
// key whose answer was lost (drop-after, reset-mid-body) is found like any
// other. Lookups are per consumer: only the consumer in the original
// request's path finds its key. The server has one connection,
// ChiftServer.ConnectionID. An unknown key, a key released by a fault
// before processing, another consumer or another connection id all get 404
// {"message":"The specified transaction could not be found","status":"error"}.
// A missing client_request_id gets a 422 validation error.
//
// Choices where Chift's documents are silent:
//   - A key still in process is answered 200 with "status_code": null and
//     "created_entity_id": null.
//   - SetLookupDelay(d) makes the log lag by d on the Now clock: a lookup at
//     time t sees each key as it stood at t-d, so a key processed less than
//     d ago is unknown (404), or in process if its request started at least
//     d ago. (ZeroHashServer measures its visibility delay on the real
//     clock instead.)
//   - Lookups take no fault from Script or SetFaultFunc; ScriptLookup queues
//     faults for them alone, consumed after authentication and before the
//     query is read.
//   - Path ids are not checked to be UUIDs, as the invoice paths' consumer
//     ids are not.
//
// # zerohash transfers
//
// ZeroHashServer is a second, independent fake, of zerohash's POST
// /transfers, GET /transfers, GET /transfers/{id} and GET /time, with
// zerohash's HMAC request signing (X-SCX-* headers, 60 s timestamp window)
// and X-Request-Id echo. Its idempotency key is the client_transfer_id body
// field, unique for a rolling 72 hours: a repeat gets 400
// {"error":true,"message":"Request does not contain an unique
// client_transfer_id"} (zerohash documents the body, not the status; 400 is
// this fake's choice). The documented recovery after an ambiguous failure
// is to look the transfer up with GET /transfers?client_transfer_id=... and
// to repost only if it is absent. Script feeds faults to POST /transfers and
// ScriptLookup to the two GETs; the order of checks and faults, the error
// bodies and the choices made where zerohash is silent are listed on
// ZeroHashServer.
package saferetrytest
