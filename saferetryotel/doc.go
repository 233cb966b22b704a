// Package saferetryotel traces and measures saferetry with OpenTelemetry:
// a span for each Chift.Create and Transfers.Create, one for each logical
// request under it (or under the caller's span, for an http.Client from
// saferetry.Wrap), a CLIENT span for each attempt of a request, and
// counters of attempts, retries, retry budget refusals, creates and
// lookups. WithTracing installs it on a Client or a wrapped http.Client;
// Hooks returns the saferetry.Hooks to combine with others. It uses the
// OpenTelemetry API only: the program chooses the SDK and the exporter.
//
// It is a module of its own, so that a program that does not trace does
// not download OpenTelemetry.
//
// # Spans
//
//	span                       kind      one per                                            parent
//	saferetry chift create     INTERNAL  Chift.Create                                       the caller's span
//	saferetry zerohash create  INTERNAL  Transfers.Create                                   the caller's span
//	saferetry {method}         INTERNAL  logical request: one RoundTrip, retries included,  the create's span, else the caller's
//	                                     until its answer's headers or its error return
//	{method}                   CLIENT    attempt: one try of the request                    the request's span
//
// {method} is the request's method, "HTTP" for a method HTTP semantic
// conventions do not know. An attempt is every try, one that ended before
// reaching the base transport included (its Chift token could not be had:
// saferetry.sent false, error.type the token endpoint's answer); it counts
// in saferetry.attempts too. Each attempt writes its span's context into its
// headers with the propagator (a W3C traceparent with
// propagation.TraceContext), so the server's span is the attempt's child.
//
// A span fails (status Error, with error.type) when its error is set or, for
// a request or an attempt, when its answer's status is 400 or more. A
// recovered Chift create therefore holds a failed POST, whose last attempt
// heard 409 REQUEST_ALREADY_PROCESSED, and a lookup that tells the id: the
// create's span carries the outcome.
//
// Attributes, with the span that carries each (C create, R request, A
// attempt):
//
//	saferetry.api                     C R    "chift" or "zerohash"; R: the preset of the client that sent it, when it has one
//	saferetry.idempotency_key         C R    C: the create's key (Chift's request id, zerohash's client_transfer_id);
//	                                         R: the key the request carried, when the server deduplicates on it
//	saferetry.request_id              R      the request id the Transport stamped when the server does not
//	                                         deduplicate on it (zerohash's X-REQUEST-ID)
//	saferetry.create.outcome          C      created, recovered, reposted, unknown (saferetry.ErrOutcomeUnknown) or failed
//	saferetry.create.posts            C      POSTs made
//	saferetry.create.lookups          C      lookups and polls sent
//	saferetry.create.resumed          C      FirstSentAt was set: an earlier run may have sent the create
//	saferetry.step                    R      post, lookup or poll (saferetry.StepPost...), when a create sent the request
//	saferetry.attempts                R      attempts made
//	saferetry.outcome_unknown         R      the error matches saferetry.ErrOutcomeUnknown
//	saferetry.retry_budget_exhausted  C R A  a retry was due and the retry budget refused it (C, A: only when true;
//	                                         C: a repost or lookup of the create)
//	saferetry.attempt                 A      the attempt's number, from 1
//	saferetry.retry                   A      another attempt follows
//	saferetry.retry.reason            A      why one was due: a saferetry.Reason... constant or "status_NNN"
//	saferetry.retry.wait              A      the wait before the next attempt, in seconds (double), when one follows
//	saferetry.sent                    A      the attempt may have reached the server
//	saferetry.replayed                A      net/http resent it on a new connection within the attempt
//	saferetry.chift.error_code        A      Chift's error_code of a 409, e.g. REQUEST_IN_PROCESS
//	http.request.method               R A    the method; "_OTHER", with http.request.method_original, for an unknown one
//	url.full                          R A    the URL without user info, query values REDACTED
//	server.address, server.port       A      from the URL, the port from the scheme when it names none
//	http.request.resend_count         A      the attempt's number - 1, absent on the first attempt
//	http.response.status_code         R A    the answer's status, when one came (R: also when the Transport turned
//	                                         it into an error, a 409 REQUEST_ALREADY_PROCESSED say)
//	error.type                        C R A  see below
//
// The http.*, url.*, server.* and error.type attributes and the CLIENT
// span's name, kind and status follow the OpenTelemetry semantic
// conventions for HTTP clients (stable since v1.23.0), in their v1.43.0
// (package go.opentelemetry.io/otel/semconv/v1.43.0, whose SchemaURL the
// tracer and the meter carry). The saferetry.* names are this package's.
//
// error.type is, for a failure: the status code of an answer of 400 or more
// ("409"); the saferetry sentinel the error matches
// ("saferetry.ErrOutcomeUnknown", "saferetry.ErrRequestAlreadyProcessed",
// "saferetry.ErrRetryBudgetExhausted", ...); "context.DeadlineExceeded",
// "context.Canceled", "io.EOF", "io.ErrUnexpectedEOF"; the status code of a
// *saferetry.APIError; else the Go type of the cause ("*net.OpError").
//
// # Metrics
//
//	name                              instrument         unit       attributes
//	saferetry.attempts                Int64Counter       {attempt}  http.request.method, http.response.status_code, error.type
//	saferetry.retries                 Int64Counter       {retry}    saferetry.retry.reason
//	saferetry.retry_budget.refusals   Int64Counter       {refusal}  saferetry.retry.reason (of the retry refused; "create" for a Create's repost or lookup)
//	saferetry.creates                 Int64Counter       {create}   saferetry.api, saferetry.create.outcome
//	saferetry.lookups                 Int64Counter       {lookup}   saferetry.api, saferetry.step (lookup or poll)
//	saferetry.request.duration        Float64Histogram   s          http.request.method, http.response.status_code,
//	                                                                error.type, saferetry.api, saferetry.step
//
// An attribute is left out where it does not apply (no status without an
// answer, no step outside a create). Metric attributes never hold a key,
// an id or a URL: each series stays one of few. The duration runs from
// the start of the logical request to its RequestDone, waits between
// attempts included; its bucket boundaries are those HTTP semantic
// conventions advise, plus 30 s and 60 s.
//
// These names, span and metric, are part of the module's API: a change to
// one is a breaking change.
//
// # Providers
//
// Hooks and WithTracing use the global TracerProvider, MeterProvider and
// TextMapPropagator as they are when called, unless WithTracerProvider,
// WithMeterProvider or WithPropagators say otherwise. The global
// propagator sends nothing until otel.SetTextMapPropagator is called.
// The instrumentation scope is ScopeName, this package's import path.
package saferetryotel
