package saferetry_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

func zhClient(t *testing.T, srv *saferetrytest.ZeroHashServer, opts ...saferetry.Option) *saferetry.Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	base := []saferetry.Option{
		saferetry.WithHTTPClient(hc),
		saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret, srv.Passphrase),
		saferetry.WithBackoff(5*time.Millisecond, 20*time.Millisecond),
	}
	c, err := saferetry.NewClient(srv.URL, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func transferRequest(id string) saferetry.TransferRequest {
	return saferetry.TransferRequest{
		ClientTransferID: id, FromParticipantCode: "PLAT01", FromAccountGroup: "PLAT01",
		ToParticipantCode: "CUST01", ToAccountGroup: "PLAT01", Asset: "USD", Amount: "20.10",
	}
}

// methods lists the methods the server received, in order.
func methods(srv *saferetrytest.ZeroHashServer) string {
	var m []string
	for _, r := range srv.Requests() {
		m = append(m, r.Method)
	}
	return strings.Join(m, " ")
}

func TestTransfersCreateAgainstServer(t *testing.T) {
	tests := []struct {
		fault   saferetrytest.Fault
		want    saferetry.CreateOutcome
		methods string
		opts    []saferetry.Option
	}{
		{saferetrytest.FaultNone, saferetry.OutcomeCreated, "POST", nil},
		{saferetrytest.FaultDropAfterProcessing, saferetry.OutcomeRecovered, "POST GET", nil},
		{saferetrytest.FaultResetMidBody, saferetry.OutcomeRecovered, "POST GET", nil},
		{saferetrytest.FaultDropBeforeProcessing, saferetry.OutcomeReposted, "POST GET POST", nil},
		{saferetrytest.FaultBadGateway, saferetry.OutcomeReposted, "POST GET POST", nil},
		{saferetrytest.FaultInternalError, saferetry.OutcomeReposted, "POST GET POST", nil},
		{saferetrytest.FaultUnavailable, saferetry.OutcomeCreated, "POST POST", nil},
		{saferetrytest.FaultRateLimited, saferetry.OutcomeCreated, "POST POST", nil},
		// The attempt times out while the server still holds the id; the
		// lookup cannot see it yet, the repost hears "not unique" (after
		// waiting for the commit, if it comes first), and the lookup then
		// finds it.
		{saferetrytest.FaultSlowCommit, saferetry.OutcomeRecovered, "POST GET POST GET",
			[]saferetry.Option{saferetry.WithAttemptTimeout(promptTimeout)}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			srv := saferetrytest.NewZeroHashServer()
			defer srv.Close()
			// A slow commit holds the id until a lookup has been answered:
			// the held attempt surely times out, the lookup surely misses.
			srv.SlowDelay = time.Hour
			releaseOnLookup := saferetry.WithObserver(func(a saferetry.Attempt) {
				if a.Method == http.MethodGet {
					srv.ReleaseSlowCommits()
				}
			})
			srv.Script(tt.fault)
			c := zhClient(t, srv, append([]saferetry.Option{releaseOnLookup}, tt.opts...)...)
			id := fmt.Sprintf("e2e-%s", tt.fault)
			tr, err := c.Transfers.Create(context.Background(), transferRequest(id))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			if tr.Outcome != tt.want || tr.ClientTransferID != id || tr.ID == 0 || tr.Amount != "20.10" {
				t.Fatalf("got %+v, want outcome %v", tr, tt.want)
			}
			if got := methods(srv); got != tt.methods {
				t.Errorf("server saw %q, want %q", methods(srv), tt.methods)
			}
			if n := srv.CreatedWithClientTransferID(id); n != 1 || srv.Created() != 1 {
				t.Fatalf("%s created %d times", id, n)
			}
		})
	}
}

func TestTransfersRejections(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	t.Run("bad credentials: 403 at once, no lookup", func(t *testing.T) {
		c, err := saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, "c2VjcmV0", srv.Passphrase))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Transfers.Create(context.Background(), transferRequest("rejected-1"))
		var apiErr *saferetry.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || errors.Is(err, saferetry.ErrOutcomeUnknown) {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), srv.APIKey) || strings.Contains(err.Error(), srv.Passphrase) {
			t.Fatalf("error leaks a credential: %v", err)
		}
		if methods(srv) != "POST" {
			t.Fatalf("server saw %q", methods(srv))
		}
	})
	t.Run("a clock 2 minutes off is corrected by SyncZeroHashClock", func(t *testing.T) {
		srv.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
		defer func() { srv.Now = time.Now }()
		c := zhClient(t, srv)
		if _, err := c.Transfers.Create(context.Background(), transferRequest("skewed-1")); err == nil {
			t.Fatal("a signature 2 minutes stale was accepted")
		}
		start := time.Now()
		offset, err := c.SyncZeroHashClock(context.Background())
		// The server's epoch is whole seconds, read at some moment of the
		// call; the local side of the offset is another moment of it.
		took := time.Since(start)
		if err != nil || offset <= 119*time.Second-took || offset > 120*time.Second+took {
			t.Fatalf("offset %v after a %v call, err %v; want 2 minutes", offset, took, err)
		}
		if _, err := c.Transfers.Create(context.Background(), transferRequest("skewed-2")); err != nil {
			t.Fatalf("after sync: %v", err)
		}
	})
}

func TestSignatureFreshOnEveryAttempt(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	// One clock for both sides that jumps 61 s at every signature: a
	// timestamp reused on a retry would be stale by the server's rule.
	var mu sync.Mutex
	now := time.Now()
	srv.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	tick := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(61 * time.Second); return now }
	srv.Script(saferetrytest.FaultUnavailable, saferetrytest.FaultUnavailable)
	c := zhClient(t, srv, saferetry.WithZeroHashClock(tick))
	tr, err := c.Transfers.Create(context.Background(), transferRequest("fresh-sig"))
	if err != nil || tr.Outcome != saferetry.OutcomeCreated {
		t.Fatalf("got %+v, %v", tr, err)
	}
	reqs := srv.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Key != reqs[0].Key || r.Key == "" {
			t.Errorf("attempt %d carried X-Request-Id %q, want %q on every attempt", i+1, r.Key, reqs[0].Key)
		}
	}
}

func TestRequestIDEchoedThroughTheClient(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	c := zhClient(t, srv)
	req, err := c.NewRequest(context.Background(), "GET", "transfers?page=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if saferetry.ServerRequestID(resp) == "" || saferetry.ServerRequestID(resp) != stampedFromResponse(resp) {
		t.Fatalf("echoed %q, sent %q", saferetry.ServerRequestID(resp), stampedFromResponse(resp))
	}
}

func TestTransfersListAndFind(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	c := zhClient(t, srv)
	for i := range 12 {
		if _, err := c.Transfers.Create(context.Background(), transferRequest(fmt.Sprintf("list-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Transfers.List(context.Background(), saferetry.ListTransfersOptions{PageSize: 5, Page: 3, ToParticipantCode: "CUST01"})
	if err != nil || page.Count != 12 || page.TotalPages != 3 || len(page.Transfers) != 2 || page.Page != 3 {
		t.Fatalf("page %+v, err %v", page, err)
	}
	found, err := c.Transfers.FindByClientTransferID(context.Background(), "list-07")
	if err != nil || found.ClientTransferID != "list-07" {
		t.Fatalf("found %+v, %v", found, err)
	}
	byID, err := c.Transfers.Get(context.Background(), found.ID)
	if err != nil || byID.ClientTransferID != "list-07" {
		t.Fatalf("Get: %+v, %v", byID, err)
	}
	if _, err := c.Transfers.FindByClientTransferID(context.Background(), "absent"); !errors.Is(err, saferetry.ErrTransferNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Transfers.List(context.Background(), saferetry.ListTransfersOptions{PageSize: 101}); err == nil {
		t.Fatal("page size 101 accepted")
	}
}

// TestTransfersConcurrentWithRandomFaults: 120 creates at once, with
// seeded random faults of every kind: each ends with exactly one transfer,
// and a create reported done is one that exists. Each attempt's fault
// follows from the id and the attempt number, not from the order in which
// the goroutines reach the server, so every run meets the same faults.
func TestTransfersConcurrentWithRandomFaults(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	srv.SlowDelay = 1500 * time.Millisecond
	faults := []saferetrytest.Fault{
		saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultSlowCommit,
		saferetrytest.FaultResetMidBody, saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
		saferetrytest.FaultUnavailable, saferetrytest.FaultRateLimited,
	}
	srv.SetFaultFunc(func(id string, attempt int) saferetrytest.Fault { return chaosFault(2026, id, attempt, faults) })
	c := zhClient(t, srv, saferetry.WithAttemptTimeout(time.Second), saferetry.WithMaxRetries(5))

	const n = 120
	results := make([]*saferetry.Transfer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			results[i], errs[i] = c.Transfers.Create(ctx, transferRequest(fmt.Sprintf("chaos-%03d", i)))
		}()
	}
	wg.Wait()
	srv.Close() // commits still held for a create that gave up land now
	outcomes := map[saferetry.CreateOutcome]int{}
	for i := range n {
		id := fmt.Sprintf("chaos-%03d", i)
		count := srv.CreatedWithClientTransferID(id)
		switch {
		case errs[i] == nil:
			outcomes[results[i].Outcome]++
			if count != 1 {
				t.Errorf("%s reported %v but exists %d times", id, results[i].Outcome, count)
			}
		case errors.Is(errs[i], saferetry.ErrOutcomeUnknown) && saferetry.KeyFromError(errs[i]) == id:
			if count > 1 {
				t.Errorf("%s exists %d times", id, count)
			}
		default:
			t.Errorf("%s: %v (exists %d times)", id, errs[i], count)
		}
	}
	t.Logf("outcomes: %v", outcomes)
	if outcomes[saferetry.OutcomeCreated] == 0 || outcomes[saferetry.OutcomeRecovered] == 0 || outcomes[saferetry.OutcomeReposted] == 0 {
		t.Errorf("the faults did not exercise recovery and repost: %v", outcomes)
	}
}

// stampedFromError is the value the Transport stamped, as the error tells
// it: the idempotency key, or the request id of a header that is not
// deduplicated on.
func stampedFromError(err error) string {
	return cmp.Or(saferetry.KeyFromError(err), saferetry.RequestIDFromError(err))
}

func stampedFromResponse(resp *http.Response) string {
	return cmp.Or(saferetry.KeyFromResponse(resp), saferetry.RequestIDFromResponse(resp))
}
