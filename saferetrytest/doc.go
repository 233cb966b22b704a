// Package saferetrytest runs an in-process fake of Chift's invoice API, so
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
//     FaultSlowCommit waits SlowDelay first, with the key in process.
//  6. The response is sent, or damaged as drop-after and reset-mid-body say;
//     the entity exists and the key is recorded either way.
//
// Every request, whatever its path, is kept for Requests, with the fault it
// met and the status written.
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
