package saferetryotel_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

const consumer = "00000000-0000-4000-8000-000000000001"

func chiftInvoice(srv *saferetrytest.ChiftServer, requestID string) saferetry.ChiftCreate {
	return saferetry.ChiftCreate{
		Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "F-1"},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: requestID,
	}
}

// A Chift create whose first answer is lost after processing: one create
// span holds the POST's request span, whose two attempts are CLIENT spans
// (the first failed and retried, the second heard 409
// REQUEST_ALREADY_PROCESSED), and the lookup's request span with its one
// attempt. Each attempt sent its own span as the traceparent.
func TestChiftCreateTrace(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	tel := newTelemetry(t)
	base := &headerRecorder{}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithHTTPClient(&http.Client{Transport: base}),
		fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	created, err := client.Chift.Create(context.Background(), chiftInvoice(srv, "inv-F-1"))
	if err != nil || !created.Recovered {
		t.Fatalf("created %+v, %v; want recovered", created, err)
	}
	want := `saferetry chift create (internal)
  | saferetry.api: chift
  | saferetry.create.lookups: 1
  | saferetry.create.outcome: recovered
  | saferetry.create.posts: 1
  | saferetry.create.resumed: false
  | saferetry.idempotency_key: inv-F-1
  saferetry POST (internal, error: {description})
    | error.type: saferetry.ErrRequestAlreadyProcessed
    | http.request.method: POST
    | http.response.status_code: 409
    | saferetry.api: chift
    | saferetry.attempts: 2
    | saferetry.idempotency_key: inv-F-1
    | saferetry.outcome_unknown: false
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: post
    | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
    POST (client, error: {description})
      | error.type: io.EOF
      | http.request.method: POST
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: true
      | saferetry.retry.reason: transport_error
      | saferetry.retry.wait: {wait}
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
    POST (client, error)
      | error.type: 409
      | http.request.method: POST
      | http.request.resend_count: 1
      | http.response.status_code: 409
      | saferetry.attempt: 2
      | saferetry.chift.error_code: REQUEST_ALREADY_PROCESSED
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
  saferetry GET (internal)
    | http.request.method: GET
    | http.response.status_code: 200
    | saferetry.api: chift
    | saferetry.attempts: 1
    | saferetry.outcome_unknown: false
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: lookup
    | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/connections/{connection}/transactions?client_request_id=REDACTED
    GET (client)
      | http.request.method: GET
      | http.response.status_code: 200
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/connections/{connection}/transactions?client_request_id=REDACTED`
	if got := tree(tel.ended(), srv.URL, srv.ConnectionID, "{connection}"); got != want {
		t.Errorf("spans:\n%s\nwant:\n%s", got, want)
	}
	if got, want := base.seen("Traceparent"), traceparents(tel.attemptSpans()); len(want) != 3 || !slices.Equal(got, want) {
		t.Errorf("the server saw %q, want each attempt's own span %q", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{error.type=io.EOF,http.request.method=POST}":                                                                                                             1,
		"saferetry.attempts{error.type=409,http.request.method=POST,http.response.status_code=409}":                                                                                  1,
		"saferetry.attempts{http.request.method=GET,http.response.status_code=200}":                                                                                                  1,
		"saferetry.retries{saferetry.retry.reason=transport_error}":                                                                                                                  1,
		"saferetry.creates{saferetry.api=chift,saferetry.create.outcome=recovered}":                                                                                                  1,
		"saferetry.lookups{saferetry.api=chift,saferetry.step=lookup}":                                                                                                               1,
		"saferetry.request.duration{error.type=saferetry.ErrRequestAlreadyProcessed,http.request.method=POST,http.response.status_code=409,saferetry.api=chift,saferetry.step=post}": 1,
		"saferetry.request.duration{http.request.method=GET,http.response.status_code=200,saferetry.api=chift,saferetry.step=lookup}":                                                1,
	})
}

// A zerohash transfer cut before processing: the POST's outcome is
// unknown, the lookup finds nothing, and a second POST creates it. The
// requests carry zerohash's X-REQUEST-ID, a request id and not a key: the
// spans say saferetry.request_id, each the one its attempt sent (one
// attempt per request); the create span has the client_transfer_id as its
// key.
func TestTransferCreateTrace(t *testing.T) {
	srv := saferetrytest.StartZeroHashServer(t)
	srv.Script(saferetrytest.FaultDropBeforeProcessing)
	tel := newTelemetry(t)
	base := &headerRecorder{}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithHTTPClient(&http.Client{Transport: base}), fast(), saferetry.WithMaxRetries(0), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := client.Transfers.Create(context.Background(), saferetry.TransferRequest{
		ClientTransferID:    "payout-1",
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01", ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "1.00",
	})
	if err != nil || tr.Outcome != saferetry.OutcomeReposted {
		t.Fatalf("transfer %+v, %v; want reposted", tr, err)
	}
	want := `saferetry zerohash create (internal)
  | saferetry.api: zerohash
  | saferetry.create.lookups: 1
  | saferetry.create.outcome: reposted
  | saferetry.create.posts: 2
  | saferetry.create.resumed: false
  | saferetry.idempotency_key: payout-1
  saferetry POST (internal, error: {description})
    | error.type: saferetry.ErrOutcomeUnknown
    | http.request.method: POST
    | saferetry.api: zerohash
    | saferetry.attempts: 1
    | saferetry.outcome_unknown: true
    | saferetry.request_id: {X-Request-Id 1}
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: post
    | url.full: {srv}/transfers
    POST (client, error: {description})
      | error.type: io.EOF
      | http.request.method: POST
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/transfers
  saferetry GET (internal)
    | http.request.method: GET
    | http.response.status_code: 200
    | saferetry.api: zerohash
    | saferetry.attempts: 1
    | saferetry.outcome_unknown: false
    | saferetry.request_id: {X-Request-Id 2}
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: lookup
    | url.full: {srv}/transfers?client_transfer_id=REDACTED
    GET (client)
      | http.request.method: GET
      | http.response.status_code: 200
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/transfers?client_transfer_id=REDACTED
  saferetry POST (internal)
    | http.request.method: POST
    | http.response.status_code: 201
    | saferetry.api: zerohash
    | saferetry.attempts: 1
    | saferetry.outcome_unknown: false
    | saferetry.request_id: {X-Request-Id 3}
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: post
    | url.full: {srv}/transfers
    POST (client)
      | http.request.method: POST
      | http.response.status_code: 201
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/transfers`
	if got := tree(tel.ended(), srv.URL, base.placeholders("X-Request-Id")...); got != want {
		t.Errorf("spans:\n%s\nwant:\n%s", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{error.type=io.EOF,http.request.method=POST}":                                                                         1,
		"saferetry.attempts{http.request.method=GET,http.response.status_code=200}":                                                              1,
		"saferetry.attempts{http.request.method=POST,http.response.status_code=201}":                                                             1,
		"saferetry.creates{saferetry.api=zerohash,saferetry.create.outcome=reposted}":                                                            1,
		"saferetry.lookups{saferetry.api=zerohash,saferetry.step=lookup}":                                                                        1,
		"saferetry.request.duration{error.type=saferetry.ErrOutcomeUnknown,http.request.method=POST,saferetry.api=zerohash,saferetry.step=post}": 1,
		"saferetry.request.duration{http.request.method=GET,http.response.status_code=200,saferetry.api=zerohash,saferetry.step=lookup}":         1,
		"saferetry.request.duration{http.request.method=POST,http.response.status_code=201,saferetry.api=zerohash,saferetry.step=post}":          1,
	})
}

// A Chift create whose answer is lost and whose lookup is refused (a 403
// from the monitoring log): nothing tells the outcome. The create span
// says "unknown", with an error status and error.type
// saferetry.ErrOutcomeUnknown; so does the creates metric.
func TestChiftCreateOutcomeUnknown(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	tel := newTelemetry(t)
	base := &headerRecorder{answer: func(req *http.Request) *http.Response {
		if req.Method == http.MethodGet {
			return answer(req, http.StatusForbidden, `{"message":"forbidden"}`)
		}
		return nil
	}}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithHTTPClient(&http.Client{Transport: base}),
		fast(), saferetry.WithMaxRetries(0), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Chift.Create(context.Background(), chiftInvoice(srv, "inv-F-2"))
	if !errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatalf("err %v, want ErrOutcomeUnknown", err)
	}
	spans := tel.ended()
	if create := spans[0]; create.Status().Description != err.Error() {
		t.Errorf("%s: status description %q, want the error Create returned", create.Name(), create.Status().Description)
	}
	want := `saferetry chift create (internal, error: {description})
  | error.type: saferetry.ErrOutcomeUnknown
  | saferetry.api: chift
  | saferetry.create.lookups: 1
  | saferetry.create.outcome: unknown
  | saferetry.create.posts: 2
  | saferetry.create.resumed: false
  | saferetry.idempotency_key: inv-F-2
  saferetry POST (internal, error: {description})
    | error.type: saferetry.ErrOutcomeUnknown
    | http.request.method: POST
    | saferetry.api: chift
    | saferetry.attempts: 1
    | saferetry.idempotency_key: inv-F-2
    | saferetry.outcome_unknown: true
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: post
    | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
    POST (client, error: {description})
      | error.type: io.EOF
      | http.request.method: POST
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
  saferetry POST (internal, error: {description})
    | error.type: saferetry.ErrRequestAlreadyProcessed
    | http.request.method: POST
    | http.response.status_code: 409
    | saferetry.api: chift
    | saferetry.attempts: 1
    | saferetry.idempotency_key: inv-F-2
    | saferetry.outcome_unknown: false
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: post
    | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
    POST (client, error)
      | error.type: 409
      | http.request.method: POST
      | http.response.status_code: 409
      | saferetry.attempt: 1
      | saferetry.chift.error_code: REQUEST_ALREADY_PROCESSED
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices
  saferetry GET (internal, error)
    | error.type: 403
    | http.request.method: GET
    | http.response.status_code: 403
    | saferetry.api: chift
    | saferetry.attempts: 1
    | saferetry.outcome_unknown: false
    | saferetry.retry_budget_exhausted: false
    | saferetry.step: lookup
    | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/connections/{connection}/transactions?client_request_id=REDACTED
    GET (client, error)
      | error.type: 403
      | http.request.method: GET
      | http.response.status_code: 403
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: 127.0.0.1
      | server.port: {port}
      | url.full: {srv}/consumers/00000000-0000-4000-8000-000000000001/connections/{connection}/transactions?client_request_id=REDACTED`
	if got := tree(spans, srv.URL, srv.ConnectionID, "{connection}"); got != want {
		t.Errorf("spans:\n%s\nwant:\n%s", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{error.type=403,http.request.method=GET,http.response.status_code=403}":                                                                                   1,
		"saferetry.attempts{error.type=409,http.request.method=POST,http.response.status_code=409}":                                                                                  1,
		"saferetry.attempts{error.type=io.EOF,http.request.method=POST}":                                                                                                             1,
		"saferetry.creates{saferetry.api=chift,saferetry.create.outcome=unknown}":                                                                                                    1,
		"saferetry.lookups{saferetry.api=chift,saferetry.step=lookup}":                                                                                                               1,
		"saferetry.request.duration{error.type=403,http.request.method=GET,http.response.status_code=403,saferetry.api=chift,saferetry.step=lookup}":                                 1,
		"saferetry.request.duration{error.type=saferetry.ErrOutcomeUnknown,http.request.method=POST,saferetry.api=chift,saferetry.step=post}":                                        1,
		"saferetry.request.duration{error.type=saferetry.ErrRequestAlreadyProcessed,http.request.method=POST,http.response.status_code=409,saferetry.api=chift,saferetry.step=post}": 1,
	})
}
