package saferetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// tcCounter is a caller's trace that counts what net/http reports.
type tcCounter struct {
	getConn, gotConn, connectStart, wroteReq atomic.Int32
}

func (c *tcCounter) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn:      func(string) { c.getConn.Add(1) },
		GotConn:      func(httptrace.GotConnInfo) { c.gotConn.Add(1) },
		ConnectStart: func(string, string) { c.connectStart.Add(1) },
		WroteRequest: func(httptrace.WroteRequestInfo) { c.wroteReq.Add(1) },
	}
}

// tcTraceWrapper is a base RoundTripper that composes its own trace after
// the SDK's (as otelhttp/otelhttptrace wrappers do).
type tcTraceWrapper struct {
	inner http.RoundTripper
	c     *tcCounter
}

func (w tcTraceWrapper) RoundTrip(req *http.Request) (*http.Response, error) {
	return w.inner.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), w.c.trace())))
}

type tcCtxKey struct{}

// withTraceFrom makes counter's trace ride along the way mode names:
// "caller" (the caller's context), "attempt-start" (the context
// Hooks.AttemptStart returns), "base-after" (a wrapper below the SDK that
// adds it), or "none".
func withTraceFrom(mode string, base http.RoundTripper, counter *tcCounter, opts []Option) (http.RoundTripper, []Option, context.Context) {
	ctx := context.Background()
	switch mode {
	case "caller":
		ctx = httptrace.WithClientTrace(ctx, counter.trace())
	case "attempt-start":
		opts = append(opts, WithHooks(Hooks{AttemptStart: func(ctx context.Context, _ AttemptStart) context.Context {
			return httptrace.WithClientTrace(ctx, counter.trace())
		}}))
	case "base-after":
		base = tcTraceWrapper{inner: base, c: counter}
	}
	return base, opts, ctx
}

// A keyed POST meets a reused keep-alive connection that the server closes
// after processing: net/http resends it on a new connection within the
// attempt. Whatever way a trace of the caller's rides along (none, before
// the SDK, from RequestStart, from AttemptStart, composed after the SDK by
// the base, an empty one), the SDK must see the resend (Attempt.Replayed),
// the caller's own hooks must fire for both connections, and a 500 to the
// resend must come back as ErrOutcomeUnknown with the key.
func TestTraceComposedSeesNetHTTPResend(t *testing.T) {
	modes := []string{"none", "caller", "caller-empty", "caller-valued", "request-start", "attempt-start", "base-after", "attempt-start+caller", "attempt-timeout+caller", "prev-response-ctx"}
	for _, mode := range modes {
		for _, second := range []int{http.StatusCreated, http.StatusInternalServerError} {
			t.Run(fmt.Sprintf("%s/%d", mode, second), func(t *testing.T) {
				var mu sync.Mutex
				posts := 0
				processed := map[string]int{}
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					if r.Method != http.MethodPost {
						io.WriteString(w, "warm")
						return
					}
					key := r.Header.Get(DefaultRequestIDHeader)
					mu.Lock()
					posts++
					n := posts
					processed[key]++
					mu.Unlock()
					if n == 1 {
						hangUp(t, w) // processed, answer lost, on a reused connection
						return
					}
					w.WriteHeader(second)
				}))
				defer srv.Close()
				inner := &http.Transport{MaxConnsPerHost: 1}
				defer inner.CloseIdleConnections()
				counter := &tcCounter{}
				var base http.RoundTripper = inner
				var opts []Option
				var attempts []Attempt
				var amu sync.Mutex
				opts = append(opts, WithObserver(func(a Attempt) { amu.Lock(); attempts = append(attempts, a); amu.Unlock() }))
				hooks := Hooks{}
				switch mode {
				case "request-start":
					hooks.RequestStart = func(ctx context.Context, _ RequestStart) context.Context {
						return httptrace.WithClientTrace(ctx, counter.trace())
					}
				case "attempt-start", "attempt-start+caller":
					hooks.AttemptStart = func(ctx context.Context, _ AttemptStart) context.Context {
						return httptrace.WithClientTrace(ctx, counter.trace())
					}
				case "base-after":
					base = tcTraceWrapper{inner: inner, c: counter}
				case "attempt-timeout+caller":
					opts = append(opts, WithAttemptTimeout(promptTimeout*5))
				}
				if hooks.RequestStart != nil || hooks.AttemptStart != nil {
					opts = append(opts, WithHooks(hooks))
				}
				tr := newTestTransport(t, base, opts...)
				hc := &http.Client{Transport: tr}
				ctx := context.Background()
				callerCounter := &tcCounter{}
				switch mode {
				case "caller", "attempt-start+caller", "attempt-timeout+caller":
					ctx = httptrace.WithClientTrace(ctx, callerCounter.trace())
				case "caller-empty":
					ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{})
				case "caller-valued":
					ctx = context.WithValue(httptrace.WithClientTrace(ctx, callerCounter.trace()), tcCtxKey{}, "v")
				}
				// Warm: teaches the Transport that hooks fire and leaves an
				// idle keep-alive connection.
				warmReq, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				warm, err := hc.Do(warmReq)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, warm.Body)
				warm.Body.Close()
				if mode == "prev-response-ctx" {
					ctx = warm.Request.Context() // the caller goes on under the last response's context
				}
				counter.getConn.Store(0)
				counter.gotConn.Store(0)
				callerCounter.getConn.Store(0)
				callerCounter.gotConn.Store(0)
				amu.Lock()
				attempts = nil
				amu.Unlock()

				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/invoices", strings.NewReader(`{"n":1}`))
				resp, err := hc.Do(req)
				if resp != nil {
					resp.Body.Close()
				}
				mu.Lock()
				defer mu.Unlock()
				if posts != 2 || len(processed) != 1 {
					t.Fatalf("setup: posts=%d keys=%v (net/http did not resend on the new connection)", posts, processed)
				}
				var key string
				for k := range processed {
					key = k
				}
				amu.Lock()
				defer amu.Unlock()
				if len(attempts) == 0 || !attempts[0].Replayed {
					t.Errorf("net/http resent the POST within attempt 1 but Attempt.Replayed=false: %+v", attempts)
				}
				switch second {
				case http.StatusCreated:
					if err != nil || resp.StatusCode != http.StatusCreated {
						t.Errorf("err=%v resp=%v", err, resp)
					}
				case http.StatusInternalServerError:
					if !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != key {
						t.Errorf("processed under %q, resend answered 500: got err %v (ErrOutcomeUnknown=%v, key %q), want ErrOutcomeUnknown with the key",
							key, err, errors.Is(err, ErrOutcomeUnknown), KeyFromError(err))
					}
				}
				switch mode {
				case "caller", "caller-valued", "attempt-start+caller", "attempt-timeout+caller":
					if g := callerCounter.gotConn.Load(); g != 2 {
						t.Errorf("the caller's own GotConn ran %d times for two connections", g)
					}
				}
				switch mode {
				case "request-start", "attempt-start", "base-after", "attempt-start+caller":
					if g := counter.gotConn.Load(); g != 2 {
						t.Errorf("the hook's/wrapper's GotConn ran %d times for two connections", g)
					}
				}
				if mode == "caller-valued" && resp != nil && resp.Request.Context().Value(tcCtxKey{}) != "v" {
					t.Errorf("the caller's context value is lost in resp.Request.Context()")
				}
			})
		}
	}
}

// A trace-learned origin (hooksFire) where the POST's connection is refused:
// the caller's trace must not make the SDK believe a connection was had, and
// the retry must happen; conversely with a connection obtained and lost, it
// must never be "unsent".
func TestTraceComposedUnsentProofWithCallerTrace(t *testing.T) {
	for _, mode := range []string{"none", "caller", "attempt-start", "base-after"} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			processed := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				processed++
				mu.Unlock()
				hangUp(t, w) // processed, then the connection is lost
			}))
			defer srv.Close()
			inner := &http.Transport{DisableKeepAlives: true} // fresh connection: no net/http resend
			defer inner.CloseIdleConnections()
			counter := &tcCounter{}
			var base http.RoundTripper = inner
			var attempts []Attempt
			opts := []Option{WithZeroHashRequestID(), WithObserver(func(a Attempt) { attempts = append(attempts, a) })}
			base, opts, ctx := withTraceFrom(mode, base, counter, opts)
			tr := newTestTransport(t, base, opts...)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/transfers", strings.NewReader(`{"n":1}`))
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if processed != 1 {
				t.Fatalf("zerohash POST processed %d times (attempts %+v)", processed, attempts)
			}
			if !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("processed once, connection lost: err %v, want ErrOutcomeUnknown", err)
			}
			for _, a := range attempts {
				if !a.Sent {
					t.Errorf("attempt %d reported Sent=false after a connection was obtained", a.Number)
				}
			}
		})
	}
}
