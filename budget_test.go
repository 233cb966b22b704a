package saferetry

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jarcoal/httpmock"
)

// setBudget replaces a transport's budget with one holding the given
// number of retries, its clock under the test's control.
func setBudget(tr *Transport, retries int, ratio, perSec float64, now func() time.Time) *retryBudget {
	b := newRetryBudget(ratio, perSec, now)
	b.tokens.Store(int64(retries) * milli)
	tr.budget = b
	return b
}

func alwaysDown(status int) (*httpmock.MockTransport, *atomic.Int64) {
	var calls atomic.Int64
	mt := httpmock.NewMockTransport()
	mt.RegisterResponder("POST", testURL, func(req *http.Request) (*http.Response, error) {
		calls.Add(1)
		wroteHeaders(req)
		if status == 0 {
			return nil, errConnReset
		}
		return httpmock.NewStringResponse(status, "down"), nil
	})
	return mt, &calls
}

func TestRetryBudgetExhaustion(t *testing.T) {
	t.Run("a status: the last response is returned", func(t *testing.T) {
		mt, calls := alwaysDown(503)
		var last Attempt
		tr := newTestTransport(t, mt, WithMaxRetries(5), WithObserver(func(a Attempt) { last = a }))
		setBudget(tr, 2, 0, 0, time.Now)
		resp, err := tr.RoundTrip(newPost(t, "{}"))
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("got %v, %v", resp, err)
		}
		resp.Body.Close()
		if calls.Load() != 3 || !last.BudgetExhausted || last.Retry {
			t.Fatalf("%d attempts, last %+v; want 3, the last marked budget exhausted", calls.Load(), last)
		}
		resp, _ = tr.RoundTrip(newPost(t, "{}"))
		resp.Body.Close()
		if calls.Load() != 4 {
			t.Fatalf("the next request made %d attempts, want 1", calls.Load()-3)
		}
	})
	t.Run("errors: a typed error", func(t *testing.T) {
		mt, calls := alwaysDown(0)
		tr := newTestTransport(t, mt, WithMaxRetries(5))
		setBudget(tr, 1, 0, 0, time.Now)
		_, err := tr.RoundTrip(newPost(t, "{}"))
		if !errors.Is(err, ErrRetryBudgetExhausted) || !errors.Is(err, errConnReset) || !strings.Contains(err.Error(), "retry budget exhausted") {
			t.Fatalf("err = %v", err)
		}
		if calls.Load() != 2 {
			t.Fatalf("%d attempts, want 2", calls.Load())
		}
	})
}

func TestRetryBudgetRefill(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	t.Run("deposits from requests", func(t *testing.T) {
		b := newRetryBudget(0.5, 0, clock)
		b.tokens.Store(0)
		if b.withdraw() {
			t.Fatal("withdrew from an empty budget")
		}
		b.deposit()
		if b.withdraw() {
			t.Fatal("half a token paid for a retry")
		}
		b.deposit()
		if !b.withdraw() || b.withdraw() {
			t.Fatal("two requests at ratio 0.5 must pay for exactly one retry")
		}
	})
	t.Run("per second", func(t *testing.T) {
		b := newRetryBudget(0, 2, clock)
		b.tokens.Store(0)
		mu.Lock()
		now = now.Add(1500 * time.Millisecond)
		mu.Unlock()
		got := 0
		for b.withdraw() {
			got++
		}
		if got != 3 {
			t.Fatalf("1.5 s at 2 per second gave %d retries, want 3", got)
		}
	})
	t.Run("never above the cap", func(t *testing.T) {
		b := newRetryBudget(1, 0, clock)
		for range 1000 {
			b.deposit()
		}
		if b.tokens.Load() != defaultRetryBurst*milli {
			t.Fatalf("tokens = %d, want the cap %d", b.tokens.Load(), defaultRetryBurst*milli)
		}
	})
}

func TestRetryBudgetConcurrent(t *testing.T) {
	b := newRetryBudget(0, 0, time.Now)
	b.tokens.Store(100 * milli)
	var granted atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if b.withdraw() {
					granted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if granted.Load() != 100 {
		t.Fatalf("granted %d retries from a budget of 100", granted.Load())
	}
}

// TestRetryBudgetBoundsAnOutage: against a server that answers 503 to
// everything, 1,000 requests from 8 goroutines cost at most
// 1,000 × 1.2 + the burst of 100 attempts, where the retries alone would
// allow 4,000.
func TestRetryBudgetBoundsAnOutage(t *testing.T) {
	mt, calls := alwaysDown(503)
	tr := newTestTransport(t, mt, WithMaxRetries(3), WithBackoff(time.Millisecond, time.Millisecond), WithRetryBudget(0.2, 0))
	const n = 1000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				resp, err := tr.RoundTrip(newPost(t, "{}"))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	limit := int64(n*1.2 + defaultRetryBurst)
	if calls.Load() > limit || calls.Load() < n {
		t.Fatalf("%d attempts for %d requests, want at most %d", calls.Load(), n, limit)
	}
	t.Logf("%d attempts for %d requests: %.3f per request", calls.Load(), n, float64(calls.Load())/n)
}

func TestRetryBudgetOptions(t *testing.T) {
	for _, opt := range []Option{WithRetryBudget(-0.1, 1), WithRetryBudget(0.2, -1), WithRetryBudget(11, 1)} {
		if _, err := NewTransport(nil, opt); err == nil || !strings.Contains(err.Error(), "WithRetryBudget") {
			t.Errorf("err = %v", err)
		}
	}
	tr, err := NewTransport(nil, WithoutRetryBudget())
	if err != nil || tr.budget != nil {
		t.Fatalf("WithoutRetryBudget: %v, budget %v", err, tr.budget)
	}
}
