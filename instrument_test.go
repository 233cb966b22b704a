package saferetry_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// spanKey carries the name of the recorder's innermost open "span".
type spanKey struct{}

// hookRecorder writes one line per hook call: the event, the "span" it
// opened or closed, and its parent, the span open in the context it got.
type hookRecorder struct {
	mu    sync.Mutex
	lines []string
	n     int
}

func parentOf(ctx context.Context) string {
	if s, ok := ctx.Value(spanKey{}).(string); ok {
		return s
	}
	return "-"
}

func (r *hookRecorder) open(ctx context.Context, kind, detail string) (context.Context, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	name := fmt.Sprintf("%s#%d", kind, r.n)
	r.lines = append(r.lines, fmt.Sprintf("start %s parent=%s %s", name, parentOf(ctx), detail))
	return context.WithValue(ctx, spanKey{}, name), name
}

func (r *hookRecorder) close(ctx context.Context, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf("end %s %s", parentOf(ctx), detail))
}

func (r *hookRecorder) hooks() saferetry.Hooks {
	return saferetry.Hooks{
		CreateStart: func(ctx context.Context, c saferetry.CreateStart) context.Context {
			ctx, _ = r.open(ctx, "create", fmt.Sprintf("api=%s key=%s resumed=%t", c.API, c.Key, c.Resumed))
			return ctx
		},
		CreateDone: func(ctx context.Context, c saferetry.CreateDone) {
			r.close(ctx, fmt.Sprintf("outcome=%s posts=%d lookups=%d err=%t", c.Outcome, c.Posts, c.Lookups, c.Err != nil))
		},
		RequestStart: func(ctx context.Context, q saferetry.RequestStart) context.Context {
			ctx, _ = r.open(ctx, "request", fmt.Sprintf("%s %s step=%s key=%t rid=%t api=%s", q.Method, pathOnly(q.URL), q.Step, q.Key != "", q.RequestID != "", q.API))
			return ctx
		},
		RequestDone: func(ctx context.Context, d saferetry.RequestDone) {
			r.close(ctx, fmt.Sprintf("status=%d attempts=%d unknown=%t budget=%t err=%t", d.StatusCode, d.Attempts, d.OutcomeUnknown, d.BudgetExhausted, d.Err != nil))
		},
		AttemptStart: func(ctx context.Context, a saferetry.AttemptStart) context.Context {
			ctx, name := r.open(ctx, "attempt", fmt.Sprintf("n=%d %s %s", a.Number, a.Method, pathOnly(a.URL)))
			a.Header.Set("Traceparent", name)
			return ctx
		},
		AttemptDone: func(ctx context.Context, a saferetry.Attempt) {
			r.close(ctx, fmt.Sprintf("n=%d status=%d code=%s retry=%t reason=%s", a.Number, a.StatusCode, a.Code, a.Retry, a.Reason))
		},
	}
}

func pathOnly(u string) string {
	u = u[strings.Index(u, "//")+2:]
	u = u[strings.Index(u, "/"):]
	if i := strings.Index(u, "?"); i >= 0 {
		u = u[:i]
	}
	return u
}

func (r *hookRecorder) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// A Chift create whose first answer is lost after processing: the hooks
// show one create holding the POST (two attempts, the first retried for
// its transport error) and the lookup in the monitoring log, each attempt
// under its request, and the create recovered.
func TestHooksFollowAChiftCreate(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	var rec hookRecorder
	var seen []string
	var seenMu sync.Mutex
	base := rtFunc(func(r *http.Request) (*http.Response, error) {
		seenMu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("Traceparent"))
		seenMu.Unlock()
		return http.DefaultTransport.RoundTrip(r)
	})
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithHTTPClient(&http.Client{Transport: base}),
		saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond), saferetry.WithHooks(rec.hooks()))
	if err != nil {
		t.Fatal(err)
	}
	const consumer = "00000000-0000-4000-8000-000000000001"
	created, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path: "consumers/" + consumer + "/invoicing/invoices", Body: map[string]any{"invoice_number": "F-1"},
		ConsumerID: consumer, ConnectionID: srv.ConnectionID, RequestID: "inv-F-1",
	})
	if err != nil || !created.Recovered {
		t.Fatalf("created %+v, %v; want recovered", created, err)
	}
	want := strings.Join([]string{
		"start create#1 parent=- api=chift key=inv-F-1 resumed=false",
		"start request#2 parent=create#1 POST /consumers/" + consumer + "/invoicing/invoices step=post key=true rid=false api=chift",
		"start attempt#3 parent=request#2 n=1 POST /consumers/" + consumer + "/invoicing/invoices",
		"end attempt#3 n=1 status=0 code= retry=true reason=transport_error",
		"start attempt#4 parent=request#2 n=2 POST /consumers/" + consumer + "/invoicing/invoices",
		"end attempt#4 n=2 status=409 code=REQUEST_ALREADY_PROCESSED retry=false reason=",
		"end request#2 status=409 attempts=2 unknown=false budget=false err=true",
		"start request#5 parent=create#1 GET /consumers/" + consumer + "/connections/" + srv.ConnectionID + "/transactions step=lookup key=false rid=false api=chift",
		"start attempt#6 parent=request#5 n=1 GET /consumers/" + consumer + "/connections/" + srv.ConnectionID + "/transactions",
		"end attempt#6 n=1 status=200 code= retry=false reason=",
		"end request#5 status=200 attempts=1 unknown=false budget=false err=false",
		"end create#1 outcome=recovered posts=1 lookups=1 err=false",
	}, "\n")
	if got := rec.got(); got != want {
		t.Errorf("hooks:\n%s\nwant:\n%s", got, want)
	}
	// Each attempt carried the header its AttemptStart set, its own.
	if want := []string{"POST attempt#3", "POST attempt#4", "GET attempt#6"}; !slices.Equal(seen, want) {
		t.Errorf("the server saw %q, want %q", seen, want)
	}
}

// A zerohash transfer cut before processing: the lookup finds nothing and
// the id is posted again. The last POST's attempts are under the second
// post request; the outcome is reposted.
func TestHooksFollowATransferCreate(t *testing.T) {
	srv := saferetrytest.StartZeroHashServer(t)
	srv.Script(saferetrytest.FaultDropBeforeProcessing)
	var rec hookRecorder
	client, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond), saferetry.WithMaxRetries(0), saferetry.WithHooks(rec.hooks()))
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
	want := strings.Join([]string{
		"start create#1 parent=- api=zerohash key=payout-1 resumed=false",
		"start request#2 parent=create#1 POST /transfers step=post key=false rid=true api=zerohash",
		"start attempt#3 parent=request#2 n=1 POST /transfers",
		"end attempt#3 n=1 status=0 code= retry=false reason=",
		"end request#2 status=0 attempts=1 unknown=true budget=false err=true",
		"start request#4 parent=create#1 GET /transfers step=lookup key=false rid=true api=zerohash",
		"start attempt#5 parent=request#4 n=1 GET /transfers",
		"end attempt#5 n=1 status=200 code= retry=false reason=",
		"end request#4 status=200 attempts=1 unknown=false budget=false err=false",
		"start request#6 parent=create#1 POST /transfers step=post key=false rid=true api=zerohash",
		"start attempt#7 parent=request#6 n=1 POST /transfers",
		"end attempt#7 n=1 status=201 code= retry=false reason=",
		"end request#6 status=201 attempts=1 unknown=false budget=false err=false",
		"end create#1 outcome=reposted posts=2 lookups=1 err=false",
	}, "\n")
	if got := rec.got(); got != want {
		t.Errorf("hooks:\n%s\nwant:\n%s", got, want)
	}
}

// Hooks given twice both run, the first's context under the second's.
func TestWithHooksTwiceRunsBoth(t *testing.T) {
	var a, b hookRecorder
	postKeyed(t, okBase, a.hooks(), b.hooks())
	if got := a.got(); !strings.Contains(got, "start request#1 parent=-") || !strings.Contains(got, "start attempt#2 parent=request#1") {
		t.Errorf("first hooks:\n%s", got)
	}
	// b's hooks got the contexts a's returned: a's spans are their parents.
	if got := b.got(); !strings.Contains(got, "start request#1 parent=request#1") || !strings.Contains(got, "start attempt#2 parent=attempt#2") {
		t.Errorf("second hooks:\n%s", got)
	}
	if _, err := saferetry.Wrap(http.DefaultClient, saferetry.WithHooks(saferetry.Hooks{})); err == nil || !strings.Contains(err.Error(), "WithHooks: no hook set") {
		t.Errorf("empty Hooks: %v", err)
	}
}

// The retry reason names why another attempt was due, and a budget
// refusal keeps the reason of the retry it refused.
func TestAttemptReasons(t *testing.T) {
	statuses := []int{503, 429, 502}
	i := 0
	var reasons []string
	hc, err := saferetry.Wrap(&http.Client{Transport: rtFunc(func(req *http.Request) (*http.Response, error) {
		s := statuses[i%len(statuses)]
		i++
		return &http.Response{StatusCode: s, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
	})}, saferetry.WithBackoff(time.Millisecond, time.Millisecond), saferetry.WithMaxRetries(2),
		saferetry.WithObserver(func(a saferetry.Attempt) { reasons = append(reasons, fmt.Sprintf("%d:%s", a.Number, a.Reason)) }))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get("http://api.test/x")
	if err == nil {
		resp.Body.Close()
	}
	if want := []string{"1:status_503", "2:rate_limited", "3:"}; !slices.Equal(reasons, want) {
		t.Errorf("reasons %q, want %q", reasons, want)
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A hook that rewrites or drops the key header, or returns a nil context,
// cannot change what is sent: every attempt carries the request's key.
func TestHooksCannotChangeTheKey(t *testing.T) {
	var keys []string
	calls := 0
	base := rtFunc(func(req *http.Request) (*http.Response, error) {
		keys = append(keys, strings.Join(req.Header.Values(saferetry.DefaultRequestIDHeader), ","))
		calls++
		if calls == 1 {
			return &http.Response{StatusCode: 503, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
		}
		return &http.Response{StatusCode: 201, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
	})
	hooks := saferetry.Hooks{
		RequestStart: func(context.Context, saferetry.RequestStart) context.Context { return nil },
		AttemptStart: func(_ context.Context, a saferetry.AttemptStart) context.Context {
			if a.Number == 1 {
				a.Header.Set(saferetry.DefaultRequestIDHeader, "hook-key")
			} else {
				a.Header.Del(saferetry.DefaultRequestIDHeader)
			}
			return nil
		},
	}
	postKeyed(t, base, hooks)
	if want := []string{"caller-key", "caller-key"}; !slices.Equal(keys, want) {
		t.Errorf("keys sent %q, want %q", keys, want)
	}
}

// okBase answers every request 200 at once.
var okBase = rtFunc(func(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
})

// postKeyed sends one POST under the key "caller-key" through a client
// over base with each of hooks installed, and fails the test unless it
// gets a response.
func postKeyed(t *testing.T, base http.RoundTripper, hooks ...saferetry.Hooks) {
	t.Helper()
	opts := []saferetry.Option{saferetry.WithBackoff(time.Millisecond, time.Millisecond)}
	for _, h := range hooks {
		opts = append(opts, saferetry.WithHooks(h))
	}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/x", strings.NewReader("{}"))
	req.Header.Set(saferetry.DefaultRequestIDHeader, "caller-key")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
