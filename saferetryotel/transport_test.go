package saferetryotel_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetryotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// An http.Client from saferetry.Wrap, no Create: the caller's span holds
// the logical request's span, which holds one CLIENT span per attempt;
// the query's value is redacted in url.full, and the key the Transport
// stamped is on the request span.
func TestWrappedClientTrace(t *testing.T) {
	tel := newTelemetry(t)
	statuses := []int{http.StatusServiceUnavailable, http.StatusCreated}
	base := &headerRecorder{answer: func(req *http.Request) *http.Response {
		status := statuses[0]
		statuses = statuses[1:]
		return answer(req, status, `{}`)
	}}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	ctx, checkout := tel.tp.Tracer("app").Start(context.Background(), "checkout")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.test/orders?token=secret", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	checkout.End()
	want := `checkout (internal)
  saferetry POST (internal)
    | http.request.method: POST
    | http.response.status_code: 201
    | saferetry.attempts: 2
    | saferetry.idempotency_key: {Idempotency-Key 1}
    | saferetry.outcome_unknown: false
    | saferetry.retry_budget_exhausted: false
    | url.full: https://api.test/orders?token=REDACTED
    POST (client, error)
      | error.type: 503
      | http.request.method: POST
      | http.response.status_code: 503
      | saferetry.attempt: 1
      | saferetry.replayed: false
      | saferetry.retry: true
      | saferetry.retry.reason: status_503
      | saferetry.retry.wait: {wait}
      | saferetry.sent: true
      | server.address: api.test
      | server.port: 443
      | url.full: https://api.test/orders?token=REDACTED
    POST (client)
      | http.request.method: POST
      | http.request.resend_count: 1
      | http.response.status_code: 201
      | saferetry.attempt: 2
      | saferetry.replayed: false
      | saferetry.retry: false
      | saferetry.sent: true
      | server.address: api.test
      | server.port: 443
      | url.full: https://api.test/orders?token=REDACTED`
	if got := tree(tel.ended(), "", base.placeholders("Idempotency-Key")...); got != want {
		t.Errorf("spans:\n%s\nwant:\n%s", got, want)
	}
	if got, want := base.seen("Traceparent"), traceparents(tel.attemptSpans()); len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("the server saw %q, want each attempt's own span %q", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{error.type=503,http.request.method=POST,http.response.status_code=503}": 1,
		"saferetry.attempts{http.request.method=POST,http.response.status_code=201}":                1,
		"saferetry.request.duration{http.request.method=POST,http.response.status_code=201}":        1,
		"saferetry.retries{saferetry.retry.reason=status_503}":                                      1,
	})
}

// Ten requests meet a server that answers 503 and spend the retry
// budget's burst of 100 (no deposits, no refill: WithRetryBudget(0, 0));
// the eleventh's first retry is refused. Its attempt and its request say
// so, and the refusals metric counts one, with the reason refused.
func TestRetryBudgetRefusal(t *testing.T) {
	tel := newTelemetry(t)
	base := &headerRecorder{answer: func(req *http.Request) *http.Response {
		return answer(req, http.StatusServiceUnavailable, `{}`)
	}}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, fast(), saferetry.WithMaxRetries(10),
		saferetry.WithRetryBudget(0, 0), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	for range 11 {
		resp, err := hc.Get("http://api.test/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := `saferetry GET (internal, error)
  | error.type: 503
  | http.request.method: GET
  | http.response.status_code: 503
  | saferetry.attempts: 1
  | saferetry.outcome_unknown: false
  | saferetry.retry_budget_exhausted: true
  | url.full: http://api.test/status
  GET (client, error)
    | error.type: 503
    | http.request.method: GET
    | http.response.status_code: 503
    | saferetry.attempt: 1
    | saferetry.replayed: false
    | saferetry.retry: false
    | saferetry.retry.reason: status_503
    | saferetry.retry_budget_exhausted: true
    | saferetry.sent: true
    | server.address: api.test
    | server.port: 80
    | url.full: http://api.test/status`
	if got := tree(lastTrace(tel.ended()), ""); got != want {
		t.Errorf("the last request's spans:\n%s\nwant:\n%s", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{error.type=503,http.request.method=GET,http.response.status_code=503}":         111,
		"saferetry.request.duration{error.type=503,http.request.method=GET,http.response.status_code=503}": 11,
		"saferetry.retries{saferetry.retry.reason=status_503}":                                             100,
		"saferetry.retry_budget.refusals{saferetry.retry.reason=status_503}":                               1,
	})
}

// lastTrace are the spans of the trace the last span started belongs to.
func lastTrace(spans []sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	id := spans[len(spans)-1].SpanContext().TraceID()
	return slices.DeleteFunc(slices.Clone(spans), func(s sdktrace.ReadOnlySpan) bool { return s.SpanContext().TraceID() != id })
}

// Without options, Hooks uses the global providers and propagator.
func TestHooksDefaultToTheGlobals(t *testing.T) {
	tel := newTelemetry(t)
	tp, mp, prop := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(tp)
		otel.SetMeterProvider(mp)
		otel.SetTextMapPropagator(prop)
	})
	otel.SetTracerProvider(tel.tp)
	otel.SetMeterProvider(tel.mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	base := &headerRecorder{answer: func(req *http.Request) *http.Response { return answer(req, http.StatusOK, `{}`) }}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithHooks(saferetryotel.Hooks()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get("http://api.test/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var names []string
	for _, s := range tel.ended() {
		names = append(names, s.Name())
	}
	if want := []string{"saferetry GET", "GET"}; !slices.Equal(names, want) {
		t.Errorf("spans %q, want %q", names, want)
	}
	if got, want := base.seen("Traceparent"), traceparents(tel.attemptSpans()); len(want) != 1 || !slices.Equal(got, want) {
		t.Errorf("the server saw %q, want %q", got, want)
	}
	diffMetrics(t, tel.metrics(t), map[string]int64{
		"saferetry.attempts{http.request.method=GET,http.response.status_code=200}":         1,
		"saferetry.request.duration{http.request.method=GET,http.response.status_code=200}": 1,
	})
}

// A zerohash create whose POST gets a gateway's 502 must be looked up;
// with the budget's burst spent, the lookup is refused. The create says
// so (outcome unknown, budget exhausted) and the refusals metric counts it
// with the reason "create", beside the transport's own refusals.
func TestCreateLookupRefusedByTheBudget(t *testing.T) {
	tel := newTelemetry(t)
	base := &headerRecorder{answer: func(req *http.Request) *http.Response {
		return answer(req, http.StatusBadGateway, `{}`)
	}}
	client, err := saferetry.NewClient("http://api.test", saferetry.WithHTTPClient(&http.Client{Transport: base}),
		saferetry.WithZeroHashAuth("key", "c2VjcmV0", "pass"), fast(), saferetry.WithMaxRetries(10),
		saferetry.WithRetryBudget(0, 0), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // 10 GETs of 10 retries each spend the burst of 100
		resp, err := client.HTTPClient().Get("http://api.test/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_, err = client.Transfers.Create(context.Background(), saferetry.TransferRequest{
		ClientTransferID:    "payout-9",
		FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01", ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01",
		Asset: "USD", Amount: "1.00",
	})
	if !errors.Is(err, saferetry.ErrOutcomeUnknown) || !errors.Is(err, saferetry.ErrRetryBudgetExhausted) {
		t.Fatalf("create: %v; want outcome unknown, budget exhausted", err)
	}
	var create sdktrace.ReadOnlySpan
	for _, s := range tel.ended() {
		if s.Name() == "saferetry zerohash create" {
			create = s
		}
	}
	if create == nil {
		t.Fatal("no create span")
	}
	attrs := map[string]string{}
	for _, kv := range create.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if create.Name() != "saferetry zerohash create" || attrs["saferetry.create.outcome"] != "unknown" ||
		attrs["saferetry.retry_budget_exhausted"] != "true" || attrs["saferetry.create.lookups"] != "0" {
		t.Errorf("create span %s %v", create.Name(), attrs)
	}
	m := tel.metrics(t)
	if got := m["saferetry.retry_budget.refusals{saferetry.retry.reason=create}"]; got != 1 {
		t.Errorf("create refusals %d, want 1; metrics %v", got, m)
	}
	if got := m["saferetry.creates{saferetry.api=zerohash,saferetry.create.outcome=unknown}"]; got != 1 {
		t.Errorf("creates unknown %d, want 1; metrics %v", got, m)
	}
}
