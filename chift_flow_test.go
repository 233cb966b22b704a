package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The tests of Chift.Create's flow: whose record the log holds, how the
// loops above the transport spend the retry budget and honour Retry-After,
// which answers are definite, and what input is refused before anything is
// sent. They speak to saferetrytest.ChiftServer and reach into the client
// only where a test must (the budget's clock, a wrapper that loses an
// error's type, the wait between posts).

const flowConsumer = "c1"

func flowPath(kind string) string { return "consumers/" + flowConsumer + "/" + kind + "/invoices" }

// flowRig is a Chift fake and a client for it with short waits.
type flowRig struct {
	srv *saferetrytest.ChiftServer
	c   *Client
}

func newFlowRig(t *testing.T, opts ...Option) *flowRig {
	t.Helper()
	srv := saferetrytest.NewChiftServer()
	t.Cleanup(srv.Close)
	base := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(base.CloseIdleConnections)
	all := append([]Option{WithHTTPClient(&http.Client{Transport: base}), WithChift(),
		WithBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	c, err := NewClient(srv.URL, all...)
	if err != nil {
		t.Fatal(err)
	}
	return &flowRig{srv: srv, c: c}
}

// create runs Chift.Create on the invoices endpoint of kind ("invoicing" or
// "accounting").
func (r *flowRig) create(ctx context.Context, kind, id string, body any) (*ChiftCreated, error) {
	return r.c.Chift.Create(ctx, r.input(kind, id, body))
}

func (r *flowRig) input(kind, id string, body any) ChiftCreate {
	return ChiftCreate{Path: flowPath(kind), Body: body, ConsumerID: flowConsumer,
		ConnectionID: r.srv.ConnectionID, RequestID: id}
}

// sequence is the server's request log as "POST invoicing/invoices" (the
// path's last two segments) and "GET transactions" (a lookup).
func (r *flowRig) sequence() []string {
	var out []string
	for _, req := range r.srv.Requests() {
		parts := strings.Split(req.Path, "/")
		if parts[len(parts)-1] == "transactions" {
			parts = parts[len(parts)-1:]
		}
		out = append(out, req.Method+" "+strings.Join(parts[max(0, len(parts)-2):], "/"))
	}
	return out
}

func (r *flowRig) count(method string) int {
	n := 0
	for _, req := range r.srv.Requests() {
		if req.Method == method {
			n++
		}
	}
	return n
}

func invoice(number string) map[string]any {
	return map[string]any{"invoice_number": number, "total": 121}
}

// Kind 1: the same request id first creates an accounting entry; a create
// of an invoicing invoice under it must not be handed the accounting
// entry as its own, recovered. Chift's log names the method and route of
// the request it holds (ApiTransactionLookupOut).
func TestChiftCreateRefusesARecordOfAnotherRoute(t *testing.T) {
	ctx := context.Background()
	t.Run("processed", func(t *testing.T) {
		r := newFlowRig(t)
		first, err := r.create(ctx, "accounting", "F-42", invoice("A-1"))
		if err != nil || first.Recovered {
			t.Fatalf("accounting entry: %+v, %v", first, err)
		}
		got, err := r.create(ctx, "invoicing", "F-42", invoice("I-1"))
		if err == nil {
			t.Fatalf("got %+v and no error: the accounting entry %s handed back as the invoice", got, first.EntityID)
		}
		var reused *ChiftRequestIDReusedError
		if !errors.As(err, &reused) || reused.RequestID != "F-42" || reused.Logged == nil ||
			reused.Logged.Route != "/consumers/c1/accounting/invoices" || reused.Route != "/consumers/c1/invoicing/invoices" {
			t.Fatalf("err = %v (%T); want a *ChiftRequestIDReusedError naming both routes and F-42", err, err)
		}
		if !errors.Is(err, ErrRequestIDSpent) || errors.Is(err, ErrOutcomeUnknown) || got != nil {
			t.Fatalf("err = %v: want ErrRequestIDSpent and not ErrOutcomeUnknown", err)
		}
		for _, want := range []string{"F-42", "/consumers/c1/accounting/invoices", "/consumers/c1/invoicing/invoices", "new request id"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
		}
		if r.srv.Created() != 1 {
			t.Fatalf("%d entities, want the accounting entry alone", r.srv.Created())
		}
	})
	t.Run("still in process", func(t *testing.T) {
		r := newFlowRig(t, WithMaxRetries(1))
		r.srv.SlowDelay = time.Hour // held until released below
		r.srv.Script(saferetrytest.FaultSlowCommit)
		held := make(chan error, 1)
		go func() {
			_, err := r.create(ctx, "accounting", "F-43", invoice("A-2"))
			held <- err
		}()
		waitFor(t, "the accounting request in the log", func() bool {
			tx, err := r.c.Chift.LookupTransaction(ctx, flowConsumer, r.srv.ConnectionID, "F-43")
			return err == nil && tx.InProcess()
		})
		// Without the comparison Create would poll the other request until
		// its poll limit; the deadline ends that sooner.
		bounded, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := r.create(bounded, "invoicing", "F-43", invoice("I-2"))
		r.srv.ReleaseSlowCommits()
		var reused *ChiftRequestIDReusedError
		if !errors.As(err, &reused) || !reused.Logged.InProcess() || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v; want *ChiftRequestIDReusedError for the request in process", err)
		}
		if err := <-held; err != nil {
			t.Fatalf("the accounting create: %v", err)
		}
	})
}

// waitFor polls cond for a state another goroutine brings about; the limit
// only guards against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Kind 3c: a request id whose first use ended in a 4xx is spent: Chift
// answers REQUEST_ALREADY_PROCESSED with the original status to every later
// request under it. A corrected resend must say so and ask for a new id.
func TestChiftCreateSaysASpentRequestIDNeedsANewOne(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		first  any                 // the body of the id's first use
		fault  saferetrytest.Fault // on the first use
		status int
	}{
		{"validation error", json.RawMessage(`["not an object"]`), saferetrytest.FaultNone, 422},
		{"validation error whose answer was lost", json.RawMessage(`["not an object"]`), saferetrytest.FaultDropAfterProcessing, 422},
		{"business conflict", invoice("DUP-1"), saferetrytest.FaultNone, 409},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t)
			want := 0
			if tt.status == 409 {
				if _, err := r.create(ctx, "invoicing", "", invoice("DUP-1")); err != nil {
					t.Fatal(err)
				}
				want = 1
			}
			r.srv.Script(tt.fault)
			// Create refuses a body Chift would answer 422 before sending
			// it, so the id's failed first use goes through the plain client.
			req, err := r.c.NewRequest(ctx, http.MethodPost, flowPath("invoicing"), tt.first)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(ChiftRequestIDHeader, "V-1")
			if _, err := r.c.Do(req, nil); err == nil {
				t.Fatal("the first use succeeded (setup)")
			}
			_, err = r.create(ctx, "invoicing", "V-1", invoice("V-1"))
			var spent *ChiftRequestIDSpentError
			if !errors.As(err, &spent) || spent.OriginalStatus != tt.status || spent.RequestID != "V-1" {
				t.Fatalf("err = %v (%T); want *ChiftRequestIDSpentError with the original %d", err, err, tt.status)
			}
			if !errors.Is(err, ErrRequestIDSpent) || errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != "V-1" ||
				!strings.Contains(err.Error(), "new request id") {
				t.Fatalf("err = %v: want ErrRequestIDSpent with the key, not ErrOutcomeUnknown, and the advice", err)
			}
			if r.srv.Created() != want {
				t.Fatalf("%d entities, want %d", r.srv.Created(), want)
			}
		})
	}
}

// Kind 5: input Chift would refuse is refused before anything is sent, so
// the request id stays unused; pre-encoded JSON goes as it is.
func TestChiftCreateRefusesBadInputBeforeSpendingTheID(t *testing.T) {
	ctx := context.Background()
	r := newFlowRig(t)
	var nilInvoice *struct{ N string }
	for _, tt := range []struct {
		name  string
		in    ChiftCreate
		field string
	}{
		{"nil body", r.input("invoicing", "F-9", nil), "Body"},
		{"string body", r.input("invoicing", "F-9", `{"invoice_number":"F-9"}`), "Body"},
		{"bytes that are not JSON", r.input("invoicing", "F-9", []byte(`invoice_number=F-9`)), "Body"},
		{"raw message that is not JSON", r.input("invoicing", "F-9", json.RawMessage(`{"invoice_number":`)), "Body"},
		{"a nil pointer, JSON null", r.input("invoicing", "F-9", nilInvoice), "Body"},
		{"a reader", r.input("invoicing", "F-9", strings.NewReader(`{"invoice_number":"F-9"}`)), "Body"},
		{"a path under another consumer", func() ChiftCreate {
			in := r.input("invoicing", "F-9", invoice("F-9"))
			in.Path = "consumers/c2/invoicing/invoices"
			return in
		}(), "ConsumerID"},
		{"first sent in the future", func() ChiftCreate {
			in := r.input("invoicing", "F-9", invoice("F-9"))
			in.FirstSentAt = time.Now().Add(time.Hour)
			return in
		}(), "FirstSentAt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.srv.Requests())
			_, err := r.c.Chift.Create(ctx, tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.field) || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v; want a refusal naming %s", err, tt.field)
			}
			if n := len(r.srv.Requests()) - before; n != 0 {
				t.Fatalf("%d requests sent: %v", n, r.sequence())
			}
		})
	}
	for i, body := range []any{[]byte(`{"invoice_number":"F-9"}`), json.RawMessage(` {"invoice_number":"F-10"} `)} {
		id := []string{"F-9", "F-10"}[i]
		got, err := r.create(ctx, "invoicing", id, body)
		if err != nil || got.Recovered {
			t.Fatalf("pre-encoded %T: %+v, %v", body, got, err)
		}
		if inv, ok := r.srv.Entity(got.EntityID); !ok || inv.Body["invoice_number"] != id || inv.Key != id {
			t.Fatalf("pre-encoded %T: entity %+v", body, inv)
		}
	}
}

// typeLosingTransport stands in for a wrapper between the client and the
// Transport that replaces the error of the first POST by one of its own:
// after the server processed it (process) or before it left.
type typeLosingTransport struct {
	next    http.RoundTripper
	process bool
	lost    chan struct{} // closed by the first POST
}

func (l *typeLosingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-l.lost:
		return l.next.RoundTrip(req)
	default:
	}
	if req.Method != http.MethodPost {
		return l.next.RoundTrip(req)
	}
	close(l.lost)
	if !l.process {
		req.Body.Close()
		return nil, errors.New("proxy: upstream connection reset")
	}
	resp, err := l.next.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return nil, errors.New("proxy: upstream connection reset")
}

// Kind 4: an error of a type Create does not know proves nothing: the log
// is asked before any repost and before anything is reported.
func TestChiftCreateLooksInTheLogAfterAnErrorOfUnknownType(t *testing.T) {
	for _, tt := range []struct {
		name      string
		processed bool
		recovered bool
		sequence  []string
	}{
		{"processed", true, true, []string{"POST invoicing/invoices", "GET transactions"}},
		{"never sent", false, false, []string{"GET transactions", "POST invoicing/invoices"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t)
			r.c.httpClient.Transport = &typeLosingTransport{next: r.c.httpClient.Transport, process: tt.processed, lost: make(chan struct{})}
			got, err := r.create(context.Background(), "invoicing", "U-1", invoice("U-1"))
			if err != nil || got.Recovered != tt.recovered || got.EntityID == "" {
				t.Fatalf("got %+v, %v; want the invoice (recovered %v)", got, err, tt.recovered)
			}
			seq := r.sequence()
			if !slices.Equal(seq, tt.sequence) || r.srv.CreatedWithKey("U-1") != 1 {
				t.Fatalf("server saw %v, created %d; want %v and one invoice", seq, r.srv.CreatedWithKey("U-1"), tt.sequence)
			}
		})
	}
}

// Kind 2b: every POST answered 429 with Retry-After: 60, beyond the
// transport's 30 s cap: one post, then a definite error that says to wait
// 60 s, never a repost sooner.
func TestChiftCreateHonoursRetryAfterOrSaysToWait(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []Option
	}{
		{"beyond the transport's cap", nil},
		{"beyond the context's deadline", []Option{WithMaxRetryAfter(2 * time.Minute), WithMaxRetries(0)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t, tt.opts...)
			r.srv.RetryAfterSeconds = 60
			r.srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultRateLimited })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := r.create(ctx, "invoicing", "R-1", invoice("R-1"))
			var limited *ChiftRateLimitedError
			var apiErr *APIError
			if !errors.As(err, &limited) || limited.RetryAfter != time.Minute || limited.RequestID != "R-1" ||
				!errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("err = %v (%T) after %d posts; want *ChiftRateLimitedError asking for 60 s", err, err, r.count(http.MethodPost))
			}
			if errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "1m0s") {
				t.Fatalf("err = %v: want a definite error that says how long to wait", err)
			}
			if n := r.count(http.MethodPost); n != 1 {
				t.Fatalf("%d posts (%v); want 1", n, r.sequence())
			}
		})
	}
}

// spentBudget replaces the client's retry budget by one with the default
// ratio and rate on a clock the test moves, and spends its burst: the
// steady state of an outage that has lasted.
func spentBudget(c *Client) (advance func(time.Duration)) {
	var now atomic.Int64
	b := newRetryBudget(DefaultRetryRatio, DefaultRetriesPerSec, func() time.Time { return time.Unix(0, now.Load()) })
	for b.withdraw() {
	}
	c.transport.budget = b
	return func(d time.Duration) { now.Add(int64(d)) }
}

// Kind 2a: Chift down (503 on every POST), the budget's burst spent. The
// reposts and lookups of Create draw from the budget the transport's own
// retries draw from, so the server sees what the transport alone would
// send: 1, plus the ratio (0.2), plus what the 10 retries a second add per
// create, plus at most one retry the spent budget had left. Measured at
// three rates of creates, on the budget's clock.
func TestChiftCreateInAnOutageCostsWhatTheBudgetAllows(t *testing.T) {
	const creates = 1000
	for _, tt := range []struct {
		name  string
		every time.Duration // budget clock time between two creates
	}{
		{"sustained, the clock still", 0},
		{"1000 creates a second", time.Millisecond},
		{"100 creates a second", 10 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t)
			r.srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultUnavailable })
			advance := spentBudget(r.c)
			for i := range creates {
				advance(tt.every)
				_, err := r.create(context.Background(), "invoicing", fmt.Sprintf("down-%04d", i), invoice("D"))
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || errors.Is(err, ErrOutcomeUnknown) {
					t.Fatalf("create %d: err = %v; want the 503, definite", i, err)
				}
			}
			perCreate := float64(len(r.srv.Requests())) / creates
			limit := 1 + DefaultRetryRatio + DefaultRetriesPerSec*tt.every.Seconds() + 1.0/creates
			t.Logf("requests per Chift.Create in an outage (%s): %.3f", tt.name, perCreate)
			if perCreate > limit || r.srv.Created() != 0 {
				t.Fatalf("%.3f requests per create (the budget allows %.3f), %d created", perCreate, limit, r.srv.Created())
			}
		})
	}
}

// Kind 2b, the other side: a Retry-After within the transport's
// WithMaxRetryAfter and the context is waited out in full before the
// repost. The waits are recorded, not made.
func TestChiftCreateWaitsTheRetryAfterItCan(t *testing.T) {
	r := newFlowRig(t, WithMaxRetryAfter(2*time.Minute), WithMaxRetries(0))
	var waits []time.Duration
	r.c.Chift.sleep = func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}
	r.srv.RetryAfterSeconds = 60
	r.srv.Script(saferetrytest.FaultRateLimited)
	got, err := r.create(context.Background(), "invoicing", "W-1", invoice("W-1"))
	if err != nil || got.Recovered || r.srv.CreatedWithKey("W-1") != 1 {
		t.Fatalf("got %+v, %v", got, err)
	}
	if len(waits) != 1 || waits[0] < time.Minute || r.count(http.MethodPost) != 2 {
		t.Fatalf("waits %v, %d posts; want one wait of at least 60 s, then the repost", waits, r.count(http.MethodPost))
	}
}

// Kind 2 and 3: when the budget refuses the repost or the lookup, Create
// stops. The error matches ErrRetryBudgetExhausted, and ErrOutcomeUnknown
// only when a post may have been processed.
func TestChiftCreateStopsWhenTheBudgetRefuses(t *testing.T) {
	for _, tt := range []struct {
		name    string
		fault   saferetrytest.Fault
		unknown bool
		created int
	}{
		{"a 503: nothing created", saferetrytest.FaultUnavailable, false, 0},
		{"the answer lost after processing", saferetrytest.FaultDropAfterProcessing, true, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t)
			spentBudget(r.c)
			r.srv.Script(tt.fault)
			_, err := r.create(context.Background(), "invoicing", "B-1", invoice("B-1"))
			if !errors.Is(err, ErrRetryBudgetExhausted) || errors.Is(err, ErrOutcomeUnknown) != tt.unknown || KeyFromError(err) != "B-1" {
				t.Fatalf("err = %v; want ErrRetryBudgetExhausted, ErrOutcomeUnknown %v, the key", err, tt.unknown)
			}
			if n := len(r.srv.Requests()); n != 1 || r.srv.Created() != tt.created {
				t.Fatalf("server saw %v, created %d", r.sequence(), r.srv.Created())
			}
		})
	}
}

// Kind 3: a rate limit is definite only when no post may have been
// processed. Here the first post may have reached Chift, a 429 with a wait
// Create cannot make follows, and the log does not know the request: the
// outcome is unknown, with the 429 inside, and there is no repost sooner
// than the wait asked.
func TestChiftCreateRateLimitAfterAnUnknownOutcomeIsUnknown(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  []Option
		first saferetrytest.Fault
		typed bool // the 429 answered a post of its own: its Retry-After is known
	}{
		// A gateway's 502 to the first post, the repost hears the 429.
		{"the 429 answers the repost", []Option{WithMaxRetries(0)}, saferetrytest.FaultBadGateway, true},
		// The first attempt's connection is dropped, the transport's retry
		// hears the 429 and hands back ErrOutcomeUnknown, the response gone.
		{"the 429 answers the transport's retry", nil, saferetrytest.FaultDropBeforeProcessing, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newFlowRig(t, tt.opts...)
			r.srv.RetryAfterSeconds = 60
			r.srv.Script(tt.first)
			r.srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultRateLimited })
			_, err := r.create(context.Background(), "invoicing", "L-1", invoice("L-1"))
			var limited *ChiftRateLimitedError
			var apiErr *APIError
			if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != "L-1" || !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("err = %v; want ErrOutcomeUnknown with the key and the 429 inside", err)
			}
			if tt.typed && (!errors.As(err, &limited) || limited.RetryAfter != time.Minute) {
				t.Fatalf("err = %v; want the *ChiftRateLimitedError inside", err)
			}
			want := []string{"POST invoicing/invoices", "POST invoicing/invoices", "GET transactions"}
			if seq := r.sequence(); !slices.Equal(seq, want) {
				t.Fatalf("server saw %v, want %v", seq, want)
			}
		})
	}
}

func TestChiftCreateComparesMethodAndRoute(t *testing.T) {
	for _, tt := range []struct {
		base, path string
		logged     Transaction
		want       string // "ours", "reused" or "unknown"
	}{
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/c1/invoicing/invoices"}, "ours"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "post", Route: "/consumers/c1/invoicing/invoices/"}, "ours"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices?raw=1", Transaction{Method: "POST", Route: "/consumers/c1/invoicing/invoices"}, "ours"},
		{"https://api.chift.eu", "consumers/a%20b/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/a b/invoicing/invoices"}, "ours"},
		{"https://api.chift.eu", "consumers/a%20b/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/a%20b/invoicing/invoices"}, "ours"},
		{"https://proxy.example/chift", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/chift/consumers/c1/invoicing/invoices"}, "ours"},
		{"https://proxy.example/chift", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/c1/invoicing/invoices"}, "ours"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/c1/accounting/invoices"}, "reused"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/c2/invoicing/invoices"}, "reused"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "PATCH", Route: "/consumers/c1/invoicing/invoices"}, "reused"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "POST", Route: "/consumers/c1/invoicing/invoices/extra"}, "reused"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "", Route: "/consumers/c1/invoicing/invoices"}, "unknown"},
		{"https://api.chift.eu", "consumers/c1/invoicing/invoices", Transaction{Method: "POST"}, "unknown"},
	} {
		c, err := NewClient(tt.base, WithChift())
		if err != nil {
			t.Fatal(err)
		}
		consumer, _ := pathConsumer(tt.path)
		create, err := c.Chift.newCreate(ChiftCreate{Path: tt.path, Body: invoice("X"), ConsumerID: consumer, ConnectionID: "k1", RequestID: "id-1"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		err = create.notOurs(&tt.logged)
		got := "ours"
		switch {
		case errors.Is(err, ErrOutcomeUnknown):
			got = "unknown"
		case errors.Is(err, ErrRequestIDSpent):
			got = "reused"
		}
		if got != tt.want {
			t.Errorf("%s + %s, logged %s %s: %s (%v), want %s", tt.base, tt.path, tt.logged.Method, tt.logged.Route, got, err, tt.want)
		}
	}
}

// A request id whose request Chift recorded with a 5xx is spent, and what
// it left in the connected system is unknown.
func TestChiftCreateSpentOnAServerErrorIsUnknown(t *testing.T) {
	c, err := NewClient("https://api.chift.eu", WithChift())
	if err != nil {
		t.Fatal(err)
	}
	create, err := c.Chift.newCreate(ChiftCreate{Path: "consumers/c1/invoicing/invoices", Body: invoice("X"), ConsumerID: "c1", ConnectionID: "k1", RequestID: "id-5"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for status, unknown := range map[int]bool{422: false, 409: false, 500: true, 502: true} {
		next, err := create.alreadyProcessed(&APIError{StatusCode: 409, Code: codeAlreadyProcessed, OriginalStatus: status, kind: ErrRequestAlreadyProcessed})
		var spent *ChiftRequestIDSpentError
		if next != chiftDone || !errors.As(err, &spent) || spent.OriginalStatus != status || errors.Is(err, ErrOutcomeUnknown) != unknown {
			t.Errorf("original %d: %v, %v; want spent, ErrOutcomeUnknown %v", status, next, err, unknown)
		}
	}
}

// The chaos scenarios of Chift.Create's flow, beside chaos_test.go's: ids
// reused across endpoints under seeded faults, a rate-limit storm, and an
// outage with the budget spent. Each prints a "chaos " line (.ci/run shows
// them) with posts per operation (POST attempts, the transport's retries
// included) beside requests per logical create (everything the server
// received: posts, reposts, lookups). SAFERETRY_CHAOS_OPS and
// SAFERETRY_CHAOS_SEED set the size and the seed, as for chaos_test.go.

const (
	flowChaosWorkers   = 32
	flowChaosFaultRate = 0.30
)

func flowChaosSetting(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// flowChaosFaults are the create faults the Chift fake supports.
var flowChaosFaults = []saferetrytest.Fault{
	saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultSlowCommit,
	saferetrytest.FaultResetMidBody, saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
	saferetrytest.FaultUnavailable, saferetrytest.FaultGatewayTimeout, saferetrytest.FaultRateLimited,
	saferetrytest.FaultInProcess,
}

// flowChaosFault draws the fault of one attempt from the seed, the key and
// the attempt number, so a run is the same whatever order the goroutines
// reach the server in.
func flowChaosFault(seed int, key string, attempt int) saferetrytest.Fault {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%d", seed, key, attempt)
	x := h.Sum64()
	if float64(x%10000)/10000 >= flowChaosFaultRate {
		return saferetrytest.FaultNone
	}
	return flowChaosFaults[(x/10000)%uint64(len(flowChaosFaults))]
}

// runFlowChaos runs op(0) to op(n-1) on flowChaosWorkers goroutines.
func runFlowChaos(n int, op func(i int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range flowChaosWorkers {
		wg.Go(func() {
			for i := range work {
				op(i)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// perOp is what the server received per operation: POST attempts and all
// requests.
func perOp(srv *saferetrytest.ChiftServer, ops int) (posts, requests float64) {
	reqs := srv.Requests()
	n := 0
	for _, r := range reqs {
		if r.Method == http.MethodPost {
			n++
		}
	}
	return float64(n) / float64(ops), float64(len(reqs)) / float64(ops)
}

// flowChaosOutcome is what one Create reported.
type flowChaosOutcome struct {
	created *ChiftCreated
	err     error
}

// A request id first creates an accounting entry, then an invoicing
// invoice, both under seeded faults: no create may be reported done with
// an entity that is not its own (the other endpoint's), none may be
// reported failed while its entity exists, and no id may hold two. The
// retry budget is off: at this fault rate it would end many creates before
// the lookup whose record is compared (TestChaosChiftOutage measures it).
func TestChaosChiftReusedIDs(t *testing.T) {
	ops, seed := flowChaosSetting(t, "SAFERETRY_CHAOS_OPS", 1000), flowChaosSetting(t, "SAFERETRY_CHAOS_SEED", 1)
	ids := max(ops/2, 1)
	r := newFlowRig(t, WithAttemptTimeout(200*time.Millisecond), WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		WithMaxRetries(5), WithoutRetryBudget())
	r.srv.SlowDelay = 300 * time.Millisecond
	r.srv.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault { return flowChaosFault(seed, key, attempt) })
	kinds := []string{"accounting", "invoicing"}
	outcomes := make([][2]flowChaosOutcome, ids)
	runFlowChaos(ids, func(i int) {
		id := fmt.Sprintf("reuse-%06d", i)
		for k, kind := range kinds {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			created, err := r.create(ctx, kind, id, map[string]any{"kind": kind, "total": 121})
			cancel()
			outcomes[i][k] = flowChaosOutcome{created, err}
		}
	})
	r.srv.Close() // a commit still held for a create that gave up lands now
	// Entity ids are inv_1 to inv_<created>: the kind held under each id.
	held := map[string]string{}
	for n := 1; n <= r.srv.Created(); n++ {
		inv, _ := r.srv.Entity("inv_" + strconv.Itoa(n))
		held[inv.Key] = fmt.Sprint(inv.Body["kind"])
	}
	var done, unknown, failed, spent, duplicates, lost, wrong int
	for i := range ids {
		id := fmt.Sprintf("reuse-%06d", i)
		if r.srv.CreatedWithKey(id) > 1 {
			duplicates++
		}
		for k, kind := range kinds {
			o := outcomes[i][k]
			switch {
			case o.err == nil:
				done++
				if inv, ok := r.srv.Entity(o.created.EntityID); !ok || inv.Key != id || inv.Body["kind"] != kind {
					wrong++
					t.Errorf("%s %s reported done with %s, which is %+v", kind, id, o.created.EntityID, inv)
				}
			case errors.Is(o.err, ErrOutcomeUnknown) && KeyFromError(o.err) == id:
				unknown++
			case held[id] == kind:
				lost++
				t.Errorf("%s %s exists but was reported failed: %v", kind, id, o.err)
			default:
				failed++
				if errors.Is(o.err, ErrRequestIDSpent) {
					spent++
				}
			}
		}
	}
	posts, requests := perOp(r.srv, 2*ids)
	line := fmt.Sprintf("chaos chift-reused-ids: ops=%d ids=%d fault_rate=%.2f duplicates=%d lost=%d wrong_entity=%d done=%d unknown=%d failed=%d id_spent=%d posts_per_op=%.2f requests_per_create=%.2f seed=%d",
		2*ids, ids, flowChaosFaultRate, duplicates, lost, wrong, done, unknown, failed, spent, posts, requests, seed)
	fmt.Println(line)
	t.Log(line)
	if duplicates != 0 || lost != 0 || wrong != 0 || spent == 0 {
		t.Errorf("%d duplicates, %d lost, %d with another's entity, %d refused as spent (want some)", duplicates, lost, wrong, spent)
	}
}

// Every POST answered 429 with Retry-After: 60: each create posts once and
// ends in a definite *ChiftRateLimitedError that says to wait 60 s.
func TestChaosChiftRateLimitStorm(t *testing.T) {
	ops := flowChaosSetting(t, "SAFERETRY_CHAOS_OPS", 1000)
	r := newFlowRig(t)
	r.srv.RetryAfterSeconds = 60
	r.srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultRateLimited })
	var mu sync.Mutex
	var limited, other int
	runFlowChaos(ops, func(i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := r.create(ctx, "invoicing", fmt.Sprintf("storm-%06d", i), invoice("S"))
		var rl *ChiftRateLimitedError
		ok := errors.As(err, &rl) && rl.RetryAfter == time.Minute && !errors.Is(err, ErrOutcomeUnknown)
		mu.Lock()
		defer mu.Unlock()
		if ok {
			limited++
		} else if other++; other <= 3 {
			t.Errorf("create %d: %v", i, err)
		}
	})
	posts, requests := perOp(r.srv, ops)
	line := fmt.Sprintf("chaos chift-rate-limit-storm: ops=%d retry_after=60s rate_limited=%d other=%d created=%d posts_per_op=%.2f requests_per_create=%.2f",
		ops, limited, other, r.srv.Created(), posts, requests)
	fmt.Println(line)
	t.Log(line)
	if limited != ops || r.srv.Created() != 0 || requests != 1 {
		t.Errorf("want every create rate limited after one request, nothing created")
	}
}

// Chift down, the budget's burst spent, 32 callers at once: a 503 (nothing
// processed) ends every create definite, a gateway's 502 (the origin may
// have processed it) in ErrOutcomeUnknown; either way the server sees
// about 1.2 requests per create (the budget's clock stands still here, so
// its 10 a second add nothing).
func TestChaosChiftOutage(t *testing.T) {
	ops := flowChaosSetting(t, "SAFERETRY_CHAOS_OPS", 1000)
	for _, tt := range []struct {
		fault   saferetrytest.Fault
		unknown bool
	}{
		{saferetrytest.FaultUnavailable, false},
		{saferetrytest.FaultBadGateway, true},
	} {
		t.Run(tt.fault.String(), func(t *testing.T) {
			r := newFlowRig(t)
			r.srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return tt.fault })
			spentBudget(r.c)
			var mu sync.Mutex
			var honest, other int
			runFlowChaos(ops, func(i int) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				id := fmt.Sprintf("outage-%06d", i)
				_, err := r.create(ctx, "invoicing", id, invoice("O"))
				ok := err != nil && errors.Is(err, ErrOutcomeUnknown) == tt.unknown && KeyFromError(err) == id
				mu.Lock()
				defer mu.Unlock()
				if ok {
					honest++
				} else if other++; other <= 3 {
					t.Errorf("create %d: %v", i, err)
				}
			})
			posts, requests := perOp(r.srv, ops)
			line := fmt.Sprintf("chaos chift-outage-%s: ops=%d budget=spent unknown_expected=%v as_expected=%d other=%d created=%d posts_per_op=%.2f requests_per_create=%.3f",
				tt.fault, ops, tt.unknown, honest, other, r.srv.Created(), posts, requests)
			fmt.Println(line)
			t.Log(line)
			if limit := 1 + DefaultRetryRatio + 1.0/float64(ops); requests > limit || honest != ops || r.srv.Created() != 0 {
				t.Errorf("want %.3f requests per create at most, every error as expected, nothing created", limit)
			}
		})
	}
}
