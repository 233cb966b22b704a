// Package saferetry makes writes to payment and accounting APIs safe to
// retry: a POST that timed out is neither created twice nor silently lost.
//
// The heart of the package is Transport, an http.RoundTripper. For every
// logical request it stamps one idempotency key (a UUIDv4, or the key the
// caller set), and it retries only what is safe to retry, with the same key
// and the same bytes on every attempt, waiting a jittered exponential backoff
// and honouring Retry-After. Wrap puts it under an existing http.Client:
//
//	hc, err := saferetry.Wrap(http.DefaultClient, saferetry.WithChift())
//
// # What is retried
//
// "Not sent" fails closed: a request counts as never sent only on proof
// (the base transport never got it, or net/http asked for a connection,
// never obtained one, and failed with a dial, DNS, proxy or TLS handshake
// error). Such a request is always retried. A request that may have reached
// the server is retried only if repeating it cannot apply it twice: GET,
// HEAD, PUT, DELETE, OPTIONS, or a request carrying an idempotency key the
// server deduplicates on (the default header, WithChift, or
// WithServerDeduplication). Those are retried after a connection lost or
// timed out after sending, and on 408, 429, 502, 503, 504 and 409
// REQUEST_IN_PROCESS. Every other 4xx is returned at once, and so is 500: it
// is the server's answer. A request that must not be resent reaches
// net/http without GetBody, so net/http cannot resend it either.
//
// When the retries run out on a status, the last response is returned with
// its body readable, unless it leaves a keyed write's outcome open (a
// gateway's 502 or 504, or a status that says nothing about the key after
// an attempt that may have been processed): then ErrOutcomeUnknown. When
// they run out on errors, the error is a *RequestError with the key and the
// attempt count; it matches ErrOutcomeUnknown when an attempt may have
// reached the server, so the caller knows to reconcile with that key rather
// than start over with a new one.
//
// # Typed errors
//
// Two Chift answers are the idempotency protocol talking to the transport
// and come back from RoundTrip as an error instead of a response:
// 409 REQUEST_ALREADY_PROCESSED (ErrRequestAlreadyProcessed) and 409
// REQUEST_IN_PROCESS once the retries are spent (ErrRequestInProcess). Both
// are *APIError values with the key in Key:
//
//	resp, err := hc.Do(req)
//	var apiErr *saferetry.APIError
//	switch {
//	case errors.Is(err, saferetry.ErrRequestAlreadyProcessed):
//		// created before; apiErr.OriginalStatus holds its status
//	case errors.As(err, &apiErr):
//		log.Printf("key %s: %v", apiErr.Key, err)
//	}
//
// They are matched on Chift's error_code, never on 409 alone: Chift also
// answers 409 for business conflicts such as ERROR_INVOICE_NUMBER_ALREADY_USED,
// which pass through as responses. CheckResponse turns any non-2xx response
// into an *APIError for callers who prefer errors.
//
// A status is read as the idempotency protocol's own only when that reading
// is certain: Chift's error_code says so. Under the default Idempotency-Key
// header a bare 409 that answers a retry after an attempt of unknown outcome
// may be the IETF draft's "still in progress" or the server's stored answer
// to the lost attempt (servers replay stored answers, errors included), and
// nothing on the wire tells which: it is retried with the same key while
// retries remain and then returned as the response. A 422 is always the
// server's answer.
//
// # Bodies
//
// A request body with GetBody (what http.NewRequest sets for in-memory
// readers) is replayed through GetBody without a copy. Another body is
// buffered up to WithMaxBufferedBody (4 MiB by default) to be resent; a
// larger one streams through once and is never retried.
//
// # Retry budget
//
// All requests of one Transport share a retry budget: retries may add 20 %
// to the requests plus 10 a second (WithRetryBudget), so a server that is
// down sees about 1.2 attempts per request, not 1 + retries. A request
// whose retry the budget refuses gets its last response, or an error that
// matches ErrRetryBudgetExhausted.
//
// # API clients
//
// NewClient adds typed calls over the same transport: Client.Transfers
// creates zerohash transfers exactly once (WithZeroHashAuth signs every
// attempt; Create looks a transfer up before any repost), and Client.Chift
// recovers the entity id of a create whose answer was lost from Chift's
// monitoring log (WithChiftAuth handles the token).
//
// # Keys
//
// A key must be 1 to 255 printable ASCII characters; anything else is
// refused before a byte is sent. The key a request carried can be read from
// its response with KeyFromResponse and from any error with KeyFromError. A
// request id the server does not deduplicate on (zerohash's X-REQUEST-ID)
// is not a key: RequestIDFromResponse and RequestIDFromError read it, and
// ServerRequestID the X-Request-Id a server answers with.
package saferetry
