package saferetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A gateway's 502 or 504 is, in the Transport's own words, an attempt
// that "may have been processed and brought back no answer from the
// server itself". When a retry follows and also fails, the last answer is
// ErrOutcomeUnknown (the rule for an answer silent about the key after an
// unanswered attempt). When no retry can follow (retries off, the budget
// spent, a Retry-After beyond the cap, a deadline too near), the very same
// 504 is handed back as the final word: a caller retrying under a new key
// creates the invoice twice.
func TestEdgeLoneGatewayAnswerWithNoRetryLeft(t *testing.T) {
	retryAfter := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	for _, tc := range []struct {
		name    string
		opts    []Option
		budget  bool // spend the retry budget first
		header  http.Header
		timeout time.Duration // context deadline
		status  int
	}{
		{name: "504, retries off", opts: []Option{WithMaxRetries(0)}, status: 504},
		{name: "502, retries off", opts: []Option{WithMaxRetries(0)}, status: 502},
		{name: "504, retry budget spent", budget: true, status: 504},
		{name: "504, Retry-After beyond the cap", header: retryAfter("3600"), status: 504},
		{name: "504, deadline before the Retry-After", header: retryAfter("20"), timeout: 5 * time.Second, status: 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reply{status: tc.status, body: "<html><title>Gateway Timeout</title></html>", header: tc.header}
			mt, api := newMockAPI(t, DefaultRequestIDHeader, r)
			tr := newTestTransport(t, mt, tc.opts...)
			if tc.budget {
				setBudget(tr, 0, 0, 0, time.Now)
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			req := newPost(t, "{}").WithContext(ctx)
			resp, err := tr.RoundTrip(req)
			status := 0
			if resp != nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			if api.attempts() != 1 {
				t.Fatalf("setup: %d attempts, want 1", api.attempts())
			}
			if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != api.seenKeys()[0] {
				t.Fatalf("a gateway answered %d (the POST may have been processed upstream); the caller got status %d, err %v; want ErrOutcomeUnknown with key %s",
					tc.status, status, err, api.seenKeys()[0])
			}
		})
	}
	// The contrast: the same 504 followed by one retry that also meets a
	// 504 is ErrOutcomeUnknown.
	t.Run("contrast: 504 then 504", func(t *testing.T) {
		mt, _ := newMockAPI(t, DefaultRequestIDHeader, answer(504, ""), answer(504, ""))
		tr := newTestTransport(t, mt, WithMaxRetries(1))
		_, err := tr.RoundTrip(newPost(t, "{}"))
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v", err)
		}
	})
}

// The first attempt is processed and its answer lost; the retry, same key,
// is answered 307 (the API moved the route to another node or region).
// http.Client follows it as a new request that reuses the key but starts
// with a clean record: the first hop's unanswered attempt is forgotten,
// and when the new location cannot be reached (dial refused: "never
// sent") or answers 503, the caller is told the POST failed.
func TestEdgeTemporaryRedirectAfterUnansweredAttempt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"new location refused", func(t *testing.T) string { return slDeadURL(t) }},
		{"new location answers 503", func(t *testing.T) string {
			return slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				http.Error(w, "<html><title>503</title></html>", http.StatusServiceUnavailable)
			}).URL
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSLLedger()
			target := tc.target(t)
			var mu sync.Mutex
			n := 0
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				n++
				first := n == 1
				mu.Unlock()
				if first {
					l.process(r.Header.Get(DefaultRequestIDHeader))
					hangUp(t, w)
					return
				}
				http.Redirect(w, r, target+r.URL.Path, http.StatusTemporaryRedirect)
			})
			hc, err := Wrap(&http.Client{}, fastRetries)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
			slWantUnknown(t, l, resp, err)
		})
	}
}
