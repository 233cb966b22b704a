package saferetryotel_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

func okBase() *headerRecorder {
	return &headerRecorder{answer: func(req *http.Request) *http.Response { return answer(req, http.StatusCreated, `{}`) }}
}

func post(t *testing.T, hc *http.Client, method string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://api.test/orders", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// A Hooks value installed after WithTracing whose Start hooks return nil
// does not drop the context WithTracing's Start returned: every span
// started is ended, and the metrics are recorded.
func TestLaterNilContextKeepsSpans(t *testing.T) {
	tel := newTelemetry(t)
	other := saferetry.Hooks{
		RequestStart: func(context.Context, saferetry.RequestStart) context.Context { return nil },
		AttemptStart: func(context.Context, saferetry.AttemptStart) context.Context { return nil },
	}
	hc, err := saferetry.Wrap(&http.Client{Transport: okBase()}, fast(), tel.tracing(), saferetry.WithHooks(other))
	if err != nil {
		t.Fatal(err)
	}
	post(t, hc, http.MethodPost)
	started, ended := len(tel.spans.Started()), len(tel.spans.Ended())
	if started != ended {
		t.Errorf("%d spans started, %d ended: the rest leak", started, ended)
	}
	if m := tel.metrics(t); len(m) == 0 {
		t.Errorf("no metric recorded for a request that was sent")
	}
}

// A nil context from a Hooks value installed before WithTracing is taken
// as the caller's: the request span is the caller's span's child, and the
// caller's deadline still ends the request.
func TestEarlierNilContextKeepsCallerContext(t *testing.T) {
	tel := newTelemetry(t)
	other := saferetry.Hooks{
		RequestStart: func(context.Context, saferetry.RequestStart) context.Context { return nil },
	}
	base := rtFuncOtel(func(req *http.Request) (*http.Response, error) {
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(2 * time.Second):
			return answer(req, http.StatusCreated, `{}`), nil
		}
	})
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, fast(), saferetry.WithHooks(other), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	ctx, caller := tel.tp.Tracer("app").Start(context.Background(), "caller")
	ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.test/orders", nil)
	began := time.Now()
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	caller.End()
	if d := time.Since(began); d > time.Second {
		t.Errorf("the request ran %v past a 50ms context deadline (err %v)", d.Round(time.Millisecond), err)
	}
	for _, s := range tel.ended() {
		if s.Name() == "saferetry GET" && s.Parent().SpanID() != caller.SpanContext().SpanID() {
			t.Errorf("the request span's parent is %v, not the caller's span", s.Parent().SpanID())
		}
	}
}

type rtFuncOtel func(*http.Request) (*http.Response, error)

func (f rtFuncOtel) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// An unknown method is "_OTHER" in metrics, never the original: made-up
// methods do not grow a metric's series.
func TestMadeUpMethodsAddNoMetricSeries(t *testing.T) {
	tel := newTelemetry(t)
	hc, err := saferetry.Wrap(&http.Client{Transport: okBase()}, fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"PURGE-1", "PURGE-2", "PURGE-3"} {
		post(t, hc, m)
	}
	for name := range tel.metrics(t) {
		if strings.Contains(name, "method_original") {
			t.Errorf("metric series %s: the original method is a metric attribute", name)
		}
	}
}

// A context cancelled mid-attempt ends every span.
func TestProbeCancelMidAttemptEndsSpans(t *testing.T) {
	tel := newTelemetry(t)
	base := rtFuncOtel(func(req *http.Request) (*http.Response, error) {
		<-req.Context().Done()
		return nil, req.Context().Err()
	})
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.test/orders", strings.NewReader(`{}`))
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
	if s, e := len(tel.spans.Started()), len(tel.spans.Ended()); s != e || s == 0 {
		t.Errorf("%d spans started, %d ended", s, e)
	}
}

// A base RoundTripper that panics (a bug in a wrapper under the
// Transport), recovered by the caller as net/http's server recovers a
// handler's panic: the request and attempt spans are ended all the same.
func TestPanickingBaseEndsSpans(t *testing.T) {
	tel := newTelemetry(t)
	base := rtFuncOtel(func(req *http.Request) (*http.Response, error) { panic("bug in a wrapper") })
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		post(t, hc, http.MethodPost)
	}()
	if s, e := len(tel.spans.Started()), len(tel.spans.Ended()); s != e {
		t.Errorf("%d spans started, %d ended after a recovered panic", s, e)
	}
}

// When Chift's token endpoint fails, nothing reaches the base transport,
// yet each post made an attempt: its CLIENT span and the attempts metric
// say so, with saferetry.sent false and the token endpoint's answer as
// error.type (doc.go, "An attempt is every try").
func TestAttemptsNotSentAreCounted(t *testing.T) {
	tel := newTelemetry(t)
	srv := saferetrytest.StartChiftServer(t)
	srv.RequireAuth = true
	for range 50 {
		srv.ScriptToken(saferetrytest.FaultUnavailable)
	}
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChiftAuth(saferetry.ChiftCredentials{
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret, AccountID: srv.AccountID,
	}), saferetry.WithMaxRetries(0), fast(), tel.tracing())
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.Chift.Create(context.Background(), chiftInvoice(srv, "inv-tok-1"))
	if err == nil {
		t.Fatal("created with no token")
	}
	for _, r := range srv.Requests() {
		if r.Path != "/token" {
			t.Fatalf("%s %s reached the server", r.Method, r.Path)
		}
	}
	spans := tel.attemptSpans()
	if len(spans) != 3 {
		t.Fatalf("%d CLIENT spans, want one per post: 3", len(spans))
	}
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			if kv.Key == "saferetry.sent" && kv.Value.AsBool() {
				t.Errorf("attempt span %v says sent", s.Attributes())
			}
		}
	}
	if got := tel.metrics(t)["saferetry.attempts{error.type=503,http.request.method=POST}"]; got != 3 {
		t.Errorf("saferetry.attempts with the token's 503 = %d, want 3; metrics %v", got, tel.metrics(t))
	}
}
