package saferetry

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
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
	t.Run("resumed: created an hour before FirstSentAt is not shown to be ours", func(t *testing.T) {
		srv := flowServer(t)
		c := flowClientOf(t, srv)
		if _, err := c.Transfers.Create(context.Background(), flowRequest(id)); err != nil {
			t.Fatal(err)
		}
		srv.AgeTransfer(id, 2*time.Hour)
		req := flowRequest(id)
		req.FirstSentAt = time.Now().Add(-time.Hour)
		_, err := c.Transfers.Create(context.Background(), req)
		// The same fields, only the time check failing: a FirstSentAt
		// taken on another clock would look just like this, so the answer
		// is "unknown", never "someone else's, use a new id".
		var mismatch *TransferMismatchError
		if !errors.As(err, &mismatch) || !mismatch.MaybeCreated || !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != id {
			t.Fatalf("err = %v; want ErrOutcomeUnknown holding the *TransferMismatchError, with the id", err)
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
			// Other fields, created within zerohash's 72 h window: it held
			// the id against this create's POST, which therefore made
			// nothing. The same fields but too early: unknown.
			sameFields := tt.wantDiff == "created_at"
			if mismatch.MaybeCreated != sameFields || errors.Is(err, ErrOutcomeUnknown) != sameFields {
				t.Fatalf("err = %v; want it definite only when the fields differ", err)
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
// server that answers 502 to everything sees 1.2 requests per Create, as
// under Chift: the lookups and reposts draw from the Transport's budget
// and earn it nothing.
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
	// Each create earns the budget 0.2 retries and its lookup and repost
	// earn nothing: 1.2 requests per create, plus the one retry the spent
	// budget may have had left.
	if limit := (1.2*creates + 1) / creates; perCreate > limit {
		t.Fatalf("%.3f requests per Create in an outage; want at most %.4f", perCreate, limit)
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
// 10 s (docs.zerohash.com/changelog/rate-limits), so neither Create nor the
// transport below it posts again sooner.
func TestCreateWaitsOutTheRateLimitLockout(t *testing.T) {
	t.Run("the context holds 5 s", func(t *testing.T) {
		srv := rateLimitedServer(t, 0)
		c := flowClientOf(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Transfers.Create(ctx, flowRequest("lockout"))
		if n := countMethod(srv, http.MethodPost); n != 1 {
			t.Errorf("%d POSTs within a 5 s context; want 1: the 10 s lock-out does not fit", n)
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

// Kind 5 beside Create: a query that cannot match anything is refused
// before it is sent.
func TestTransfersRefuseImpossibleQueries(t *testing.T) {
	srv := flowServer(t)
	c := flowClientOf(t, srv)
	now := time.Now()
	_, err := c.Transfers.List(context.Background(), ListTransfersOptions{RequestedAfter: now, RequestedBefore: now.Add(-time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "RequestedAfter") {
		t.Errorf("List: err = %v; want a refusal naming RequestedAfter and RequestedBefore", err)
	}
	for _, id := range []int64{0, -1} {
		if _, err := c.Transfers.Get(context.Background(), id); err == nil || !strings.Contains(err.Error(), "transfer id") {
			t.Errorf("Get(%d): err = %v; want a refusal of the id", id, err)
		}
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("the server received %d requests", n)
	}
}

// The chaos scenarios of Transfers.Create: many creates at once against
// the fake, each scenario checking what every create reported against the
// server's own counts, and reporting requests per logical create.
// SAFERETRY_FLOW_OPS sets the creates per scenario (default 200).

// flowFault draws the fault of one attempt from the id and the attempt
// number, so a run is the same whatever order the creates reach the server
// in; rate is the share of attempts that get one.
func flowFault(id string, attempt int, rate float64, kinds []saferetrytest.Fault) saferetrytest.Fault {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", id, attempt)
	x := h.Sum64()
	if float64(x%10000)/10000 >= rate {
		return saferetrytest.FaultNone
	}
	return kinds[(x/10000)%uint64(len(kinds))]
}

var flowFaults = []saferetrytest.Fault{
	saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultResetMidBody,
	saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway, saferetrytest.FaultGatewayTimeout,
	saferetrytest.FaultUnavailable, saferetrytest.FaultRateLimited,
}

// flowResult is what one create reported.
type flowResult struct {
	id  string
	tr  *Transfer
	err error
}

// runFlow runs fn for ops ids on 32 goroutines.
func runFlow(ops int, prefix string, fn func(id string) flowResult) []flowResult {
	results := make([]flowResult, ops)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = fn(fmt.Sprintf("%s-%05d", prefix, i))
			}
		}()
	}
	for i := range ops {
		work <- i
	}
	close(work)
	wg.Wait()
	return results
}

// flowTally counts what the creates of one scenario reported.
type flowTally struct {
	ops, done, unknown, definite int
	violations                   []string
}

// check holds one create's report against made, the transfers the server
// made under its id during the scenario: a create reported done made
// exactly one, and returned it; a definite failure made none; an unknown
// one at most one.
func (f *flowTally) check(r flowResult, made int, ids map[int64]bool) {
	f.ops++
	switch {
	case r.err == nil:
		f.done++
		if made != 1 || !ids[r.tr.ID] {
			f.violations = append(f.violations, fmt.Sprintf("%s reported %v (transfer %d) but the scenario made %d", r.id, r.tr.Outcome, r.tr.ID, made))
		}
	case errors.Is(r.err, ErrOutcomeUnknown):
		f.unknown++
		if made > 1 || KeyFromError(r.err) != r.id {
			f.violations = append(f.violations, fmt.Sprintf("%s unknown with key %q, made %d", r.id, KeyFromError(r.err), made))
		}
	default:
		f.definite++
		if made != 0 {
			f.violations = append(f.violations, fmt.Sprintf("%s failed definitely (%v) but the scenario made %d", r.id, r.err, made))
		}
	}
}

func (f *flowTally) report(t *testing.T, name string, requests int) {
	t.Helper()
	line := fmt.Sprintf("chaos zerohash %s: ops=%d done=%d unknown=%d definite=%d requests_per_create=%.2f",
		name, f.ops, f.done, f.unknown, f.definite, float64(requests)/float64(f.ops))
	fmt.Println(line)
	t.Log(line)
	for i, v := range f.violations {
		if i == 10 {
			t.Errorf("and %d more", len(f.violations)-i)
			break
		}
		t.Error(v)
	}
}

// madeBy reads what a closed server made under each id beyond before.
func madeBy(srv *saferetrytest.ZeroHashServer, results []flowResult, before map[string]int) map[string]int {
	made := map[string]int{}
	for _, r := range results {
		made[r.id] = srv.CreatedWithClientTransferID(r.id) - before[r.id]
	}
	return made
}

func TestChaosZeroHashScenarios(t *testing.T) {
	ops := 200
	if v := os.Getenv("SAFERETRY_FLOW_OPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SAFERETRY_FLOW_OPS=%q: want a positive integer", v)
		}
		ops = n
	}
	t.Run("aged transfers", func(t *testing.T) { chaosAged(t, ops) })
	t.Run("normalising server", func(t *testing.T) { chaosNormalising(t, ops) })
	t.Run("rate-limit storm", func(t *testing.T) { chaosRateLimitStorm(t, min(ops, 64)) })
	t.Run("rate limited throughout", func(t *testing.T) { chaosRateLimitedThroughout(t, ops) })
	t.Run("outage", func(t *testing.T) { chaosOutage(t, ops, false) })
	t.Run("outage, burst spent", func(t *testing.T) { chaosOutage(t, ops, true) })
}

// newIDs lists the transfers made during a scenario, by zerohash id.
func newIDs(c *Client, t *testing.T, results []flowResult, before map[int64]bool) map[int64]bool {
	t.Helper()
	ids := map[int64]bool{}
	for _, r := range results {
		if r.err == nil && !before[r.tr.ID] {
			ids[r.tr.ID] = true
		}
	}
	return ids
}

// chaosAged: every id already holds a transfer, ten days old (zerohash
// takes the id as new again) for even ids, an hour old (zerohash refuses
// it) for odd ones; the creates meet faults on 40 % of their attempts.
// None may return the old transfer.
func chaosAged(t *testing.T, ops int) {
	srv := saferetrytest.NewZeroHashServer()
	c := flowClientOf(t, srv)
	old := map[int64]bool{}
	var mu sync.Mutex
	setup := runFlow(ops, "aged", func(id string) flowResult {
		tr, err := c.Transfers.Create(context.Background(), flowRequest(id))
		if err == nil {
			mu.Lock()
			old[tr.ID] = true
			mu.Unlock()
		}
		return flowResult{id: id, tr: tr, err: err}
	})
	before := map[string]int{}
	for i, r := range setup {
		if r.err != nil {
			t.Fatalf("setup %s: %v", r.id, r.err)
		}
		srv.AgeTransfer(r.id, map[bool]time.Duration{true: 10 * 24 * time.Hour, false: time.Hour}[i%2 == 0])
		before[r.id] = 1
	}
	setupRequests := len(srv.Requests())
	srv.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault { return flowFault(id, attempt, 0.4, flowFaults) })
	results := runFlow(ops, "aged", func(id string) flowResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr, err := c.Transfers.Create(ctx, flowRequest(id))
		return flowResult{id: id, tr: tr, err: err}
	})
	srv.Close()
	made := madeBy(srv, results, before)
	ids := newIDs(c, t, results, old)
	tally := &flowTally{}
	for i, r := range results {
		tally.check(r, made[r.id], ids)
		if r.err == nil && old[r.tr.ID] {
			t.Errorf("%s returned the transfer %d made before this create", r.id, r.tr.ID)
		}
		if i%2 == 1 && !errors.Is(r.err, ErrDuplicateClientTransferID) {
			t.Errorf("%s: zerohash holds the id (an hour old): got %v, want ErrDuplicateClientTransferID", r.id, r.err)
		}
	}
	tally.report(t, "aged", len(srv.Requests())-setupRequests)
}

// chaosNormalising: the server upper-cases codes; the creates send them
// lower-case and meet faults on 40 % of their attempts.
func chaosNormalising(t *testing.T, ops int) {
	srv := saferetrytest.NewZeroHashServer()
	srv.UpperCaseCodes = true
	srv.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault { return flowFault(id, attempt, 0.4, flowFaults) })
	c := flowClientOf(t, srv)
	results := runFlow(ops, "normalised", func(id string) flowResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req := flowRequest(id)
		req.Asset, req.FromParticipantCode, req.ToAccountGroup = "usd", "plat01", "plat01"
		tr, err := c.Transfers.Create(ctx, req)
		return flowResult{id: id, tr: tr, err: err}
	})
	srv.Close()
	made := madeBy(srv, results, nil)
	ids := newIDs(c, t, results, nil)
	tally := &flowTally{}
	for _, r := range results {
		tally.check(r, made[r.id], ids)
		if errors.Is(r.err, ErrDuplicateClientTransferID) {
			t.Errorf("%s: %v", r.id, r.err)
		}
	}
	tally.report(t, "normalising", len(srv.Requests()))
}

// chaosRateLimitStorm: the first three POSTs of every id are answered 429
// with Retry-After: 1; the transport retries once (after the second), so
// a create waits at its own level before its second POST. Every 429
// proves nothing was processed: each create is created, or, once the
// retry budget is spent, definitely not created; none is unknown, none
// needs a lookup, and no repost comes sooner than the second asked for.
func chaosRateLimitStorm(t *testing.T, ops int) {
	srv := saferetrytest.NewZeroHashServer()
	srv.RetryAfterSeconds = 1
	srv.SetFaultFunc(func(_ string, attempt int) saferetrytest.Fault {
		if attempt <= 3 {
			return saferetrytest.FaultRateLimited
		}
		return saferetrytest.FaultNone
	})
	c := flowClientOf(t, srv, WithMaxRetries(1))
	waits := recordWaits(c)
	results := runFlow(ops, "storm", func(id string) flowResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr, err := c.Transfers.Create(ctx, flowRequest(id))
		return flowResult{id: id, tr: tr, err: err}
	})
	srv.Close()
	made := madeBy(srv, results, nil)
	ids := newIDs(c, t, results, nil)
	tally := &flowTally{}
	for _, r := range results {
		tally.check(r, made[r.id], ids)
		created := r.err == nil && r.tr.Outcome == OutcomeCreated
		if !created && !(errors.Is(r.err, ErrRateLimited) && !errors.Is(r.err, ErrOutcomeUnknown)) {
			t.Errorf("%s: %+v, %v; want OutcomeCreated or a definite ErrRateLimited", r.id, r.tr, r.err)
		}
	}
	if n := countMethod(srv, http.MethodGet); n != 0 {
		t.Errorf("%d lookups: a 429 proves nothing was processed", n)
	}
	for _, d := range waits.all() {
		if d < time.Second {
			t.Errorf("a repost after %v; the server asked for 1 s", d)
		}
	}
	tally.report(t, "rate-limit storm", len(srv.Requests()))
}

// chaosRateLimitedThroughout: every POST is answered 429 with Retry-After:
// 60, more than the creates' 5 s contexts hold: each ends at once,
// definitely not created, after one POST.
func chaosRateLimitedThroughout(t *testing.T, ops int) {
	srv := saferetrytest.NewZeroHashServer()
	srv.RetryAfterSeconds = 60
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultRateLimited })
	c := flowClientOf(t, srv)
	results := runFlow(ops, "limited", func(id string) flowResult {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tr, err := c.Transfers.Create(ctx, flowRequest(id))
		return flowResult{id: id, tr: tr, err: err}
	})
	srv.Close()
	made := madeBy(srv, results, nil)
	tally := &flowTally{}
	for _, r := range results {
		tally.check(r, made[r.id], nil)
		if !errors.Is(r.err, ErrRateLimited) || errors.Is(r.err, ErrOutcomeUnknown) {
			t.Errorf("%s: %v; want ErrRateLimited, definite", r.id, r.err)
		}
	}
	if n := len(srv.Requests()); n != ops {
		t.Errorf("%d requests for %d creates; want one POST each", n, ops)
	}
	tally.report(t, "rate limited throughout", len(srv.Requests()))
}

// chaosOutage: 502 to every request, the Transport's budget as it comes
// (refilled with time), its burst of 100 included or first spent: every
// create ends unknown, and the server sees little more than one request
// per create.
func chaosOutage(t *testing.T, ops int, burstSpent bool) {
	srv := saferetrytest.NewZeroHashServer()
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultBadGateway })
	for range ops * 4 {
		srv.ScriptLookup(saferetrytest.FaultBadGateway)
	}
	c := flowClientOf(t, srv)
	name := "outage (burst of 100 included)"
	if burstSpent {
		for c.transport.budget.withdraw() {
		}
		name = "outage (burst spent)"
	}
	results := runFlow(ops, "outage", func(id string) flowResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr, err := c.Transfers.Create(ctx, flowRequest(id))
		return flowResult{id: id, tr: tr, err: err}
	})
	srv.Close()
	made := madeBy(srv, results, nil)
	tally := &flowTally{}
	for _, r := range results {
		tally.check(r, made[r.id], nil)
	}
	if tally.unknown != ops {
		t.Errorf("%d of %d creates unknown; a 502 may follow processing", tally.unknown, ops)
	}
	tally.report(t, name, len(srv.Requests()))
}

// A repeat of this create under the same id and fields without
// FirstSentAt (a job redelivered): the transfer found may be the earlier
// call's, so the answer is unknown, never "someone else's, use a new id".
func TestCreateRepeatWithoutFirstSentAtIsNotCalledAnothers(t *testing.T) {
	srv := flowServer(t)
	c := flowClientOf(t, srv)
	if _, err := c.Transfers.Create(context.Background(), flowRequest("redelivered-1")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Transfers.Create(context.Background(), flowRequest("redelivered-1"))
	var mismatch *TransferMismatchError
	if !errors.As(err, &mismatch) || !mismatch.MaybeCreated || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want ErrOutcomeUnknown holding the *TransferMismatchError", err)
	}
	if n := srv.CreatedWithClientTransferID("redelivered-1"); n != 1 {
		t.Fatalf("%d transfers", n)
	}
}

// A create whose lookup the spent budget refuses says so in CreateDone,
// for the create-level refusals metric; the transport's own refusal of a
// retry within the POST is the attempt's, not the create's.
func TestCreateDoneTellsABudgetRefusal(t *testing.T) {
	down, _ := outageServer(t)
	c := flowClient(t, down.URL, [3]string{"key", testSecret, "pass"})
	var dones []CreateDone
	c.transport.cfg.hooks = Hooks{CreateDone: func(_ context.Context, d CreateDone) { dones = append(dones, d) }}
	if _, err := c.Transfers.Create(context.Background(), flowRequest("")); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("with the budget: %v", err)
	}
	spendBudget(c)
	_, err := c.Transfers.Create(context.Background(), flowRequest(""))
	if !errors.Is(err, ErrRetryBudgetExhausted) {
		t.Fatalf("budget spent: %v, want ErrRetryBudgetExhausted", err)
	}
	if len(dones) != 2 || dones[0].BudgetExhausted || !dones[1].BudgetExhausted || dones[1].Outcome != "unknown" || dones[1].Lookups != 0 {
		t.Fatalf("CreateDone %+v; want the second alone refused by the budget, outcome unknown, no lookup sent", dones)
	}
}
