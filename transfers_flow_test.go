package saferetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// The tests of this file hold Transfers.Create to what it reports: a
// transfer found is returned only if it provably is this create's, the
// loops above the Transport pace themselves by its budget and by the
// waits zerohash asks for, and an error says "unknown" only when a
// transfer may exist.

// flowServer is a zerohash fake closed when the test ends.
func flowServer(t *testing.T) *saferetrytest.ZeroHashServer {
	t.Helper()
	srv := saferetrytest.NewZeroHashServer()
	t.Cleanup(srv.Close)
	return srv
}

// flowClient talks to url with zerohash's signatures and short backoff.
func flowClient(t *testing.T, url string, creds [3]string, opts ...Option) *Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(hc.CloseIdleConnections)
	base := []Option{WithHTTPClient(hc), WithZeroHashAuth(creds[0], creds[1], creds[2]),
		WithBackoff(time.Millisecond, 5*time.Millisecond)}
	c, err := NewClient(url, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func flowClientOf(t *testing.T, srv *saferetrytest.ZeroHashServer, opts ...Option) *Client {
	t.Helper()
	return flowClient(t, srv.URL, [3]string{srv.APIKey, srv.Secret, srv.Passphrase}, opts...)
}

func flowRequest(id string) TransferRequest {
	return TransferRequest{
		ClientTransferID: id, FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01", Asset: "USD", Amount: "20.10",
	}
}

// countMethod is how many requests with method the server received.
func countMethod(srv *saferetrytest.ZeroHashServer, method string) int {
	n := 0
	for _, r := range srv.Requests() {
		if r.Method == method {
			n++
		}
	}
	return n
}

// waitLog records the waits Create asks for between its requests and
// returns at once: a test sees a 60 s wait without sitting it out.
type waitLog struct {
	mu    sync.Mutex
	waits []time.Duration
}

func recordWaits(c *Client) *waitLog {
	w := &waitLog{}
	c.Transfers.pause = func(ctx context.Context, d time.Duration) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.waits = append(w.waits, d)
		return ctx.Err()
	}
	return w
}

func (w *waitLog) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.waits...)
}

// transferAt is a transfer as zerohash shows it, created at createdAt.
func transferAt(id int64, clientID string, createdAt time.Time) string {
	at := createdAt.UTC().Format("2006-01-02T15:04:05.000Z")
	return fmt.Sprintf(`{"id":%d,"client_transfer_id":%q,"created_at":%q,"updated_at":%q,"status":"approved","from_participant_code":"PLAT01","from_account_group":"PLAT01","from_account_label":null,"to_participant_code":"CUST01","to_account_group":"PLAT01","to_account_label":null,"asset":"USD","amount":"20.10","movement_id":null,"admin_transfer":false,"prefunded":false}`,
		id, clientID, at, at)
}

func foundAt(id int64, clientID string, createdAt time.Time) reply {
	return answer(200, `{"message":[`+transferAt(id, clientID, createdAt)+`],"page":1,"page_size":50,"total_pages":1,"count":1}`)
}

// Kind 1b: a transfer made under the same id ten days ago (zerohash keeps
// ids unique for 72 h only) is not what this create made.
func TestCreateAgedTransferIsNotOurs(t *testing.T) {
	srv := flowServer(t)
	c := flowClientOf(t, srv)
	const id = "aged-1"
	old, err := c.Transfers.Create(context.Background(), flowRequest(id))
	if err != nil {
		t.Fatal(err)
	}
	srv.AgeTransfer(id, 10*24*time.Hour)
	srv.Script(saferetrytest.FaultDropBeforeProcessing)
	tr, err := c.Transfers.Create(context.Background(), flowRequest(id))
	if err == nil {
		t.Fatalf("got transfer %d (%v), created %v; want an error: transfer %d is ten days old", tr.ID, tr.Outcome, tr.CreatedAt, old.ID)
	}
	var mismatch *TransferMismatchError
	if !errors.As(err, &mismatch) || !errors.Is(err, ErrDuplicateClientTransferID) {
		t.Fatalf("err = %v; want a *TransferMismatchError", err)
	}
	if mismatch.ClientTransferID != id || mismatch.TransferID != old.ID || len(mismatch.Differences) != 1 ||
		!strings.HasPrefix(mismatch.Differences[0], "created_at") || !strings.Contains(err.Error(), id) {
		t.Fatalf("%+v; want transfer %d under %s, its created_at the one difference", mismatch, old.ID, id)
	}
	// The POST was dropped unanswered and the transfer found is older than
	// zerohash's 72 h window, so it cannot have kept zerohash from taking
	// the POST: a transfer of this create may exist, not yet visible.
	if !mismatch.MaybeCreated || !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != id {
		t.Fatalf("err = %v (key %q); want ErrOutcomeUnknown with %s as well", err, KeyFromError(err), id)
	}
}

// Kind 1b, the other limits: the first send is FirstSentAt when the
// create resumes; a transfer zerohash keeps the id for (within 72 h)
// settles that this create made none; codes compare without case.
func TestCreateOwnershipOfAFoundTransfer(t *testing.T) {
	const id = "owned-1"
	now := time.Now()
	t.Run("resumed: created after FirstSentAt is ours", func(t *testing.T) {
		srv := flowServer(t)
		c := flowClientOf(t, srv)
		if _, err := c.Transfers.Create(context.Background(), flowRequest(id)); err != nil {
			t.Fatal(err)
		}
		srv.AgeTransfer(id, time.Hour)
		req := flowRequest(id)
		req.FirstSentAt = time.Now().Add(-time.Hour - time.Minute)
		tr, err := c.Transfers.Create(context.Background(), req)
		if err != nil || tr.Outcome != OutcomeRecovered {
			t.Fatalf("got %+v, %v; want the transfer recovered", tr, err)
		}
	})
	t.Run("resumed: created an hour before FirstSentAt is not", func(t *testing.T) {
		srv := flowServer(t)
		c := flowClientOf(t, srv)
		if _, err := c.Transfers.Create(context.Background(), flowRequest(id)); err != nil {
			t.Fatal(err)
		}
		srv.AgeTransfer(id, 2*time.Hour)
		req := flowRequest(id)
		req.FirstSentAt = time.Now().Add(-time.Hour)
		_, err := c.Transfers.Create(context.Background(), req)
		var mismatch *TransferMismatchError
		if !errors.As(err, &mismatch) || mismatch.MaybeCreated || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v; want a definite *TransferMismatchError: zerohash held the id through the window", err)
		}
		if n := countMethod(srv, http.MethodPost); n != 1 {
			t.Fatalf("%d POSTs; want only the first create's", n)
		}
	})
	tests := []struct {
		name      string
		mutate    func(*TransferRequest)
		createdAt time.Time
		wantDiff  string // "": taken as ours
	}{
		{"codes differ in case only", func(r *TransferRequest) { r.Asset, r.FromParticipantCode = "usd", "plat01" }, now, ""},
		{"a label differs", func(r *TransferRequest) { r.ToAccountLabel = "general" }, now, `to_account_label "", this create asks "general"`},
		{"the amount differs", func(r *TransferRequest) { r.Amount = "20.11" }, now, `amount "20.10", this create asks "20.11"`},
		{"created within the skew margin before the first send", func(*TransferRequest) {}, now.Add(-TransferClockSkewMargin / 2), ""},
		{"created before the skew margin", func(*TransferRequest) {}, now.Add(-2 * TransferClockSkewMargin), "created_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &zhMock{t: t, posts: []reply{failure(errConnReset, true)}, gets: []reply{foundAt(7, id, tt.createdAt)}}
			c := newZHClient(t, m, WithMaxRetries(0))
			req := newTransferRequest(id)
			tt.mutate(&req)
			tr, err := c.Transfers.Create(context.Background(), req)
			if tt.wantDiff == "" {
				if err != nil || tr.Outcome != OutcomeRecovered || tr.ID != 7 {
					t.Fatalf("got %+v, %v; want transfer 7 recovered", tr, err)
				}
				return
			}
			var mismatch *TransferMismatchError
			if !errors.As(err, &mismatch) || len(mismatch.Differences) != 1 || !strings.HasPrefix(mismatch.Differences[0], tt.wantDiff) {
				t.Fatalf("err = %v; want a *TransferMismatchError naming %s", err, tt.wantDiff)
			}
			// Created now, within zerohash's 72 h window: it held the id
			// against this create's POST, which therefore made nothing.
			if mismatch.MaybeCreated || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v; want it definite", err)
			}
		})
	}
}

// Kind 1c: the 201 to this create's own POST is this create's transfer,
// whatever the server made of the fields.
func TestCreateAcceptsTheAnswerToItsOwnPost(t *testing.T) {
	t.Run("a server that upper-cases the codes", func(t *testing.T) {
		srv := flowServer(t)
		srv.UpperCaseCodes = true
		c := flowClientOf(t, srv)
		req := flowRequest("normalised-1")
		req.Asset, req.ToParticipantCode = "usd", "cust01"
		tr, err := c.Transfers.Create(context.Background(), req)
		if err != nil || tr.Outcome != OutcomeCreated || tr.Asset != "USD" {
			t.Fatalf("got %+v, %v; want OutcomeCreated with the server's \"USD\"", tr, err)
		}
	})
	t.Run("a 201 that drops a label and rewrites the amount", func(t *testing.T) {
		const id = "normalised-2"
		m := &zhMock{t: t, posts: []reply{answer(201, `{"message":`+transferAt(9, id, time.Now())+`}`)}}
		c := newZHClient(t, m)
		req := newTransferRequest(id)
		req.ToAccountLabel, req.Amount = "general", "20.1000"
		tr, err := c.Transfers.Create(context.Background(), req)
		if err != nil || tr.Outcome != OutcomeCreated || tr.ID != 9 {
			t.Fatalf("got %+v, %v; want transfer 9, OutcomeCreated", tr, err)
		}
	})
}

// outageServer answers 502, a gateway's page, to every request.
func outageServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var requests atomic.Int64
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><title>502 Bad Gateway</title></html>"))
	}))
	t.Cleanup(down.Close)
	return down, &requests
}

// spendBudget gives c's Transport a budget whose clock stands still (no
// per-second refill) and spends its burst: the steady state of an outage.
func spendBudget(c *Client) {
	frozen := time.Now()
	c.transport.budget = newRetryBudget(DefaultRetryRatio, DefaultRetriesPerSec, func() time.Time { return frozen })
	for c.transport.budget.withdraw() {
	}
}

// Kind 2a: with the retry budget's burst spent and no time passing, a
// server that answers 502 to everything sees at most 1.3 requests per
// Create: the lookups and reposts draw from the Transport's budget.
func TestCreateOutageRequestsPerCreate(t *testing.T) {
	down, requests := outageServer(t)
	c := flowClient(t, down.URL, [3]string{"key", testSecret, "pass"})
	spendBudget(c)
	const creates = 400
	for i := range creates {
		_, err := c.Transfers.Create(context.Background(), flowRequest(""))
		if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) == "" {
			t.Fatalf("create %d: err = %v; want ErrOutcomeUnknown with the id (a 502 may follow processing)", i, err)
		}
	}
	perCreate := float64(requests.Load()) / creates
	t.Logf("outage, budget burst spent, no refill: %d requests for %d creates: %.3f per Create", requests.Load(), creates, perCreate)
	if perCreate > 1.3 {
		t.Fatalf("%.3f requests per Create in an outage; want at most 1.3", perCreate)
	}
}

// rateLimitedServer answers every POST 429, with Retry-After when
// retryAfter is positive.
func rateLimitedServer(t *testing.T, retryAfter int) *saferetrytest.ZeroHashServer {
	srv := flowServer(t)
	srv.RetryAfterSeconds = retryAfter
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultRateLimited })
	return srv
}

// checkRateLimited: err is the definite end of a create whose every POST
// was answered 429, asking for wait.
func checkRateLimited(t *testing.T, err error, wait time.Duration) *NotCreatedError {
	t.Helper()
	var notCreated *NotCreatedError
	if !errors.As(err, &notCreated) || !errors.Is(err, ErrRateLimited) || !errors.Is(err, ErrTransferNotCreated) ||
		errors.Is(err, ErrOutcomeUnknown) || notCreated.RetryAfter != wait ||
		!strings.Contains(err.Error(), "rate limited; retry after "+wait.String()) {
		t.Fatalf("err = %v; want a definite *NotCreatedError, \"rate limited; retry after %v\"", err, wait)
	}
	return notCreated
}

// Kind 2b: Retry-After: 60 is above the transport's 30 s cap, so the
// transport hands the 429 back; Create waits the minute before it posts
// again, and a context that cannot hold the wait ends it at once.
func TestCreateHonoursRetryAfterAboveTheCap(t *testing.T) {
	t.Run("the context holds 20 s", func(t *testing.T) {
		srv := rateLimitedServer(t, 60)
		c := flowClientOf(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := c.Transfers.Create(ctx, flowRequest("retry-after-60"))
		if n := countMethod(srv, http.MethodPost); n != 1 {
			t.Errorf("%d POSTs; want 1: the server asked for 60 s and the context holds 20", n)
		}
		checkRateLimited(t, err, time.Minute)
	})
	t.Run("no deadline", func(t *testing.T) {
		srv := rateLimitedServer(t, 60)
		c := flowClientOf(t, srv)
		waits := recordWaits(c)
		_, err := c.Transfers.Create(context.Background(), flowRequest("retry-after-60"))
		got := waits.all()
		if len(got) != maxTransferPosts-1 || countMethod(srv, http.MethodPost) != maxTransferPosts {
			t.Fatalf("waits %v, %d POSTs; want a wait before each of %d reposts", got, countMethod(srv, http.MethodPost), maxTransferPosts-1)
		}
		for _, d := range got {
			if d < time.Minute {
				t.Fatalf("waited %v before a repost; the server asked for 60 s", d)
			}
		}
		if nc := checkRateLimited(t, err, time.Minute); nc.Posts != maxTransferPosts {
			t.Fatalf("Posts = %d", nc.Posts)
		}
	})
}

// Kind 2c: a 429 without Retry-After: zerohash locks the caller out for
// 10 s (docs.zerohash.com/changelog/rate-limits), so Create does not post
// again sooner. The transport's own quick retries of the 429 are its
// policy (retry.go), left as they are.
func TestCreateWaitsOutTheRateLimitLockout(t *testing.T) {
	t.Run("the context holds 5 s", func(t *testing.T) {
		srv := rateLimitedServer(t, 0)
		c := flowClientOf(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Transfers.Create(ctx, flowRequest("lockout"))
		if n := countMethod(srv, http.MethodPost); n != 1+DefaultMaxRetries {
			t.Errorf("%d POSTs within a 5 s context; want only the transport's %d attempts", n, 1+DefaultMaxRetries)
		}
		checkRateLimited(t, err, ZeroHashRateLimitWait)
	})
	t.Run("no deadline", func(t *testing.T) {
		srv := rateLimitedServer(t, 0)
		c := flowClientOf(t, srv, WithMaxRetries(0))
		waits := recordWaits(c)
		_, err := c.Transfers.Create(context.Background(), flowRequest("lockout"))
		got := waits.all()
		if len(got) != maxTransferPosts-1 {
			t.Fatalf("waits %v; want one before each of %d reposts", got, maxTransferPosts-1)
		}
		for _, d := range got {
			if d < ZeroHashRateLimitWait {
				t.Fatalf("waited %v before a repost; zerohash locks out for %v", d, ZeroHashRateLimitWait)
			}
		}
		checkRateLimited(t, err, ZeroHashRateLimitWait)
	})
}

// Kind 3a: every POST answered 429 proves that nothing was created: the
// end is a definite error, not ErrOutcomeUnknown.
func TestCreateAllPostsRateLimitedIsDefinite(t *testing.T) {
	srv := rateLimitedServer(t, 0)
	c := flowClientOf(t, srv, WithMaxRetries(0))
	recordWaits(c)
	_, err := c.Transfers.Create(context.Background(), flowRequest("all-429"))
	nc := checkRateLimited(t, err, ZeroHashRateLimitWait)
	if nc.Posts != maxTransferPosts || !strings.Contains(err.Error(), fmt.Sprintf("gave up after %d posts", maxTransferPosts)) {
		t.Fatalf("err = %v; want it to give up after %d posts", err, maxTransferPosts)
	}
	if srv.Created() != 0 || countMethod(srv, http.MethodGet) != 0 {
		t.Fatalf("created %d, looked up %d times", srv.Created(), countMethod(srv, http.MethodGet))
	}
}

// Kind 3b: a context cancelled before Create sends nothing and says so.
func TestCreateCancelledBeforeSendingIsNotUnknown(t *testing.T) {
	srv := flowServer(t)
	c := flowClientOf(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Transfers.Create(ctx, flowRequest("cancelled"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrTransferNotCreated) {
		t.Fatalf("err = %v; want context.Canceled and ErrTransferNotCreated, not ErrOutcomeUnknown", err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("the server received %d requests", n)
	}
	t.Run("a resumed create stays unknown", func(t *testing.T) {
		req := flowRequest("cancelled")
		req.FirstSentAt = time.Now().Add(-time.Minute)
		_, err := c.Transfers.Create(ctx, req)
		if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != "cancelled" {
			t.Fatalf("err = %v; want ErrOutcomeUnknown: the earlier run's POST may have been processed", err)
		}
	})
}

// lossyTransport stands for a RoundTripper around the Transport that
// keeps only the text of its errors.
type lossyTransport struct{ next http.RoundTripper }

func (l lossyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err != nil {
		return nil, errors.New(err.Error())
	}
	return resp, nil
}

// Kind 4: an error whose type was lost proves nothing: Create looks the id
// up before it posts again. The same failure with its type kept proves the
// POST unsent, and the repost needs no lookup.
func TestCreateUnknownErrorTypeLooksUpBeforeReposting(t *testing.T) {
	const id = "lossy-1"
	tests := []struct {
		name  string
		lossy bool
		gets  []reply
		calls string
	}{
		{"type lost: lookup, then repost", true, []reply{notFound}, "POST | GET client_transfer_id=" + id + " | POST"},
		{"proven unsent: repost", false, nil, "POST | POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &zhMock{t: t, posts: []reply{failure(errConnReset, false), answer(201, `{"message":`+transferAt(8, id, time.Now())+`}`)}, gets: tt.gets}
			c := newZHClient(t, m, WithMaxRetries(0))
			if tt.lossy {
				c.httpClient.Transport = lossyTransport{c.httpClient.Transport}
			}
			if _, err := c.Transfers.Create(context.Background(), newTransferRequest(id)); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(m.calls(), " | "); got != tt.calls {
				t.Fatalf("calls %q; want %q", got, tt.calls)
			}
		})
	}
}

// Kind 5: FirstSentAt says "this resumes a create sent at that time":
// without the id it was sent with, or in the future, it cannot be true.
func TestCreateRefusesInconsistentFirstSentAt(t *testing.T) {
	tests := map[string]func(*TransferRequest){
		"an hour ago, no ClientTransferID": func(r *TransferRequest) {
			r.ClientTransferID, r.FirstSentAt = "", time.Now().Add(-time.Hour)
		},
		"in the future": func(r *TransferRequest) { r.FirstSentAt = time.Now().Add(time.Hour) },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			srv := flowServer(t)
			c := flowClientOf(t, srv)
			req := flowRequest("resume-1")
			mutate(&req)
			_, err := c.Transfers.Create(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), "field FirstSentAt") || !strings.HasPrefix(err.Error(), "saferetry: invalid transfer request") {
				t.Fatalf("err = %v; want a refusal naming FirstSentAt", err)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Fatalf("the server received %d requests", n)
			}
		})
	}
}
