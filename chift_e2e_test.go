package saferetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

const consumer = "00000000-0000-4000-8000-000000000001"

func invoicesURL(srv *saferetrytest.ChiftServer) string {
	return srv.URL + "/consumers/" + consumer + "/invoicing/invoices"
}

// promptTimeout is an attempt timeout that only a held or hung attempt
// reaches, even on a loaded machine under the race detector; a test that
// needs an attempt cut pays it once per cut.
const promptTimeout = time.Second

func chiftClient(t *testing.T, opts ...saferetry.Option) *http.Client {
	t.Helper()
	base := append([]saferetry.Option{saferetry.WithChift(), saferetry.WithBackoff(5*time.Millisecond, 20*time.Millisecond)}, opts...)
	hc, err := saferetry.Wrap(&http.Client{Transport: &http.Transport{}}, base...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

func postInvoice(hc *http.Client, srv *saferetrytest.ChiftServer, number string) (*http.Response, error) {
	body := fmt.Sprintf(`{"currency":"EUR","invoice_type":"customer_invoice","status":"posted","invoice_date":"2026-11-23","tax_amount":21,"untaxed_amount":100,"total":121,"invoice_number":%q}`, number)
	return hc.Post(invoicesURL(srv), "application/json", strings.NewReader(body))
}

func TestChiftFaultsEndToEnd(t *testing.T) {
	tests := []struct {
		fault         saferetrytest.Fault
		wantStatus    int   // 0: an error is expected
		wantErr       error // with wantStatus 0
		wantAttempts  int
		attemptTimout time.Duration
	}{
		{saferetrytest.FaultNone, 200, nil, 1, 0},
		{saferetrytest.FaultDropBeforeProcessing, 200, nil, 2, 0},
		{saferetrytest.FaultBadGateway, 200, nil, 2, 0},
		{saferetrytest.FaultUnavailable, 200, nil, 2, 0},
		{saferetrytest.FaultInternalError, 500, nil, 1, 0},
		{saferetrytest.FaultRateLimited, 200, nil, 2, 0},
		{saferetrytest.FaultDropAfterProcessing, 0, saferetry.ErrRequestAlreadyProcessed, 2, 0},
		// The first attempt times out on the held key, the second hears
		// REQUEST_IN_PROCESS, the third REQUEST_ALREADY_PROCESSED.
		{saferetrytest.FaultSlowCommit, 0, saferetry.ErrRequestAlreadyProcessed, 3, promptTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			srv := saferetrytest.NewChiftServer()
			defer srv.Close()
			srv.SlowDelay = time.Hour // until an attempt has heard REQUEST_IN_PROCESS
			srv.Script(tt.fault)
			var attempts int
			var mu sync.Mutex
			observe := func(a saferetry.Attempt) {
				mu.Lock()
				attempts++
				mu.Unlock()
				if a.Code == "REQUEST_IN_PROCESS" {
					// The observer runs between attempts: waiting here
					// for the commit puts it before the next attempt.
					srv.ReleaseSlowCommits()
					waitUntil(t, "the slow commit", func() bool { return srv.CreatedWithKey(a.Key) == 1 })
				}
			}
			opts := []saferetry.Option{saferetry.WithMaxRetries(6), saferetry.WithObserver(observe)}
			if tt.attemptTimout > 0 {
				opts = append(opts, saferetry.WithAttemptTimeout(tt.attemptTimout))
			}
			hc := chiftClient(t, opts...)
			resp, err := postInvoice(hc, srv, "F-1")
			var key string
			if tt.wantStatus != 0 {
				if err != nil || resp.StatusCode != tt.wantStatus {
					t.Fatalf("got %v, %v; want %d", resp, err, tt.wantStatus)
				}
				key = saferetry.KeyFromResponse(resp)
				resp.Body.Close()
			} else {
				var apiErr *saferetry.APIError
				if !errors.Is(err, tt.wantErr) || !errors.As(err, &apiErr) || apiErr.OriginalStatus != 200 {
					t.Fatalf("err = %v, want %v with original status 200", err, tt.wantErr)
				}
				key = saferetry.KeyFromError(err)
			}
			if tt.wantAttempts != 0 && attempts != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", attempts, tt.wantAttempts)
			}
			wantCreated := 1
			if tt.wantStatus == 500 {
				wantCreated = 0
			}
			if n := srv.CreatedWithKey(key); n != wantCreated || srv.Created() != wantCreated {
				t.Fatalf("key %q created %d times (total %d), want %d", key, n, srv.Created(), wantCreated)
			}
		})
	}
}

// waitUntil polls cond for a state another goroutine brings about; the
// limit only guards against a hang.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
	}
}

func TestChiftRetryAfterIsHonoured(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultRateLimited)
	var waits []time.Duration
	hc := chiftClient(t, saferetry.WithObserver(func(a saferetry.Attempt) { waits = append(waits, a.Wait) }))
	resp, err := postInvoice(hc, srv, "F-2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(waits) != 2 || waits[0] < time.Duration(srv.RetryAfterSeconds)*time.Second {
		t.Fatalf("waits = %v, want the first >= %ds", waits, srv.RetryAfterSeconds)
	}
}

func TestChiftBusinessConflictPassesThrough(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	hc := chiftClient(t)
	for i, want := range []int{200, 409} {
		resp, err := postInvoice(hc, srv, "F-SAME")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		apiErr := saferetry.CheckResponse(resp)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
		if want == 409 {
			var e *saferetry.APIError
			if !errors.As(apiErr, &e) || e.Code != "ERROR_INVOICE_NUMBER_ALREADY_USED" || errors.Is(apiErr, saferetry.ErrRequestAlreadyProcessed) {
				t.Fatalf("CheckResponse = %v", apiErr)
			}
		}
	}
}

// TestChiftConcurrentCreatesWithRandomFaults: every invoice ends created
// exactly once, and each one was either answered 200 or reported as already
// processed: nothing is created twice, nothing is lost.
func TestChiftConcurrentCreatesWithRandomFaults(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.SlowDelay = 30 * time.Millisecond
	faults := []saferetrytest.Fault{
		saferetrytest.FaultNone, saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing,
		saferetrytest.FaultBadGateway, saferetrytest.FaultUnavailable, saferetrytest.FaultSlowCommit,
	}
	var rngMu sync.Mutex
	rng := rand.New(rand.NewPCG(42, 7))
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault {
		rngMu.Lock()
		defer rngMu.Unlock()
		if rng.Float64() < 0.6 {
			return saferetrytest.FaultNone
		}
		return faults[rng.IntN(len(faults))]
	})
	hc := chiftClient(t, saferetry.WithMaxRetries(8), saferetry.WithAttemptTimeout(5*time.Second))

	const n = 100
	keys := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := postInvoice(hc, srv, fmt.Sprintf("F-%03d", i))
			if err != nil {
				keys[i], errs[i] = saferetry.KeyFromError(err), err
				return
			}
			defer resp.Body.Close()
			keys[i] = saferetry.KeyFromResponse(resp)
			var out struct{ ID string }
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.ID == "" {
				errs[i] = fmt.Errorf("status %d, id %q, decode %v", resp.StatusCode, out.ID, err)
			}
		}()
	}
	wg.Wait()
	srv.Close() // a commit still held for a call that gave up lands now
	done, unknownExisting := 0, 0
	for i := range n {
		c := srv.CreatedWithKey(keys[i])
		switch {
		case errs[i] == nil, errors.Is(errs[i], saferetry.ErrRequestAlreadyProcessed):
			done++
			if c != 1 {
				t.Errorf("invoice %d (key %q) reported done, created %d times", i, keys[i], c)
			}
		case errors.Is(errs[i], saferetry.ErrOutcomeUnknown) && keys[i] != "":
			// A loaded machine can time every attempt out: an honest answer.
			unknownExisting += c
			if c > 1 {
				t.Errorf("invoice %d (key %q) created %d times", i, keys[i], c)
			}
		default:
			t.Errorf("invoice %d: %v", i, errs[i])
		}
	}
	if srv.Created() != done+unknownExisting {
		t.Fatalf("created %d invoices; %d reported done, %d of unknown outcome exist", srv.Created(), done, unknownExisting)
	}
}

func TestChiftCancelledCallerStopsRetrying(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultUnavailable })
	// No wait of an hour fits before a deadline 10 s away; the first
	// attempt, which has those 10 s, surely does.
	hc := chiftClient(t, saferetry.WithBackoff(time.Hour, time.Hour), saferetry.WithMaxRetries(saferetry.MaxRetriesLimit))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", invoicesURL(srv), strings.NewReader(`{"total":1}`))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("err = %v; want the 503 returned when no retry fits before the deadline", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || len(srv.Requests()) != 1 {
		t.Fatalf("status %d after %d requests", resp.StatusCode, len(srv.Requests()))
	}
}
