package saferetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ledger is a server that processes every POST it receives (it does not
// deduplicate on any header) and records what it processed, so a test can
// tell "processed once" from "processed twice" or "never".
type ledger struct {
	t         *testing.T
	header    string // the key header to record
	mu        sync.Mutex
	processed map[string]int // by key
	bodies    []string
	// then decides what happens after processing request n (1-based):
	// "answer", "drop" (hang up without answering) or "hold" (wait until
	// the test ends, then answer).
	then    func(n int) string
	release chan struct{}
	held    chan struct{} // receives once per held request, after processing
}

func newLedger(t *testing.T, header string, then func(n int) string) (*ledger, *httptest.Server) {
	l := &ledger{t: t, header: header, processed: map[string]int{}, then: then,
		release: make(chan struct{}), held: make(chan struct{}, 100)}
	srv := httptest.NewUnstartedServer(l)
	return l, srv
}

func (l *ledger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	l.mu.Lock()
	l.processed[r.Header.Get(l.header)]++
	l.bodies = append(l.bodies, string(body))
	n := len(l.bodies)
	l.mu.Unlock()
	switch l.then(n) {
	case "drop":
		panic(http.ErrAbortHandler)
	case "hold":
		l.held <- struct{}{}
		<-l.release
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"id":"e-1"}`)
}

// stop releases held requests; deferred before the server's Close.
func (l *ledger) stop() { close(l.release) }

func (l *ledger) count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.processed[key]
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.bodies)
}

func always(what string) func(int) string { return func(int) string { return what } }

// wantOutcomeUnknown fails unless err matches ErrOutcomeUnknown and
// carries the key the server saw.
func wantOutcomeUnknown(t *testing.T, err error, l *ledger) {
	t.Helper()
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
	key := stampedFromError(err)
	if key == "" || l.count(key) != 1 {
		t.Fatalf("KeyFromError = %q, processed %d times under it; want the key the server processed once", key, l.count(key))
	}
}

// Kind 1: net/http's client replaces a RoundTripper's error by a string
// when its own Timeout fires. Wrap moves the Timeout into the Transport, so
// the typed error and the key survive, every time. A request the Timeout
// stops before it had a connection is proven unsent; one that got further
// may have been sent. Which of the two each of the 100 is depends on the
// machine's speed, so the test checks what must hold for both.
func TestClientTimeoutKeepsOutcomeAndKey(t *testing.T) {
	l, srv := newLedger(t, DefaultRequestIDHeader, always("hold"))
	srv.Start()
	defer srv.Close()
	defer l.stop()
	hc, err := Wrap(&http.Client{Timeout: 200 * time.Millisecond}, WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	if hc.Timeout != 0 {
		t.Fatalf("wrapped client Timeout = %v, want 0 (moved into the Transport)", hc.Timeout)
	}
	const runs = 100
	var wg sync.WaitGroup
	errs := make([]error, runs)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Post(srv.URL, "application/json", strings.NewReader(`{}`))
			if resp != nil {
				resp.Body.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	maybeSent := 0
	for i, err := range errs {
		key := stampedFromError(err)
		switch {
		case key == "":
			t.Fatalf("run %d: err = %v carries no key", i, err)
		case errors.Is(err, ErrOutcomeUnknown):
			maybeSent++
		case l.count(key) != 0:
			t.Fatalf("run %d: err = %v, but the server processed key %s: want ErrOutcomeUnknown", i, err, key)
		}
		var te *TimeoutError
		if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || te.Limit != 200*time.Millisecond {
			t.Fatalf("run %d: err = %v, want the client's Timeout as a TimeoutError matching context.DeadlineExceeded", i, err)
		}
		var ne interface{ Timeout() bool }
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("run %d: err = %v is not a timeout net.Error", i, err)
		}
	}
	// Every request whose key the server processed got that key back.
	for _, err := range errs {
		if key := stampedFromError(err); l.count(key) > 1 {
			t.Fatalf("key %s processed %d times", key, l.count(key))
		}
	}
	if maybeSent == 0 {
		t.Fatal("the Timeout stopped every request before it had a connection: nothing reached the server to test")
	}
}

// The Timeout still bounds the reading of the body, as http.Client's does.
func TestClientTimeoutBoundsTheBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	hc, err := Wrap(&http.Client{Timeout: promptTimeout})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reading the body: %v, want the Timeout's deadline", err)
	}
}

// A client with a Timeout built around a bare Transport would have its
// timer hide the outcome: refused before anything is sent.
func TestClientTimeoutAroundBareTransportRefused(t *testing.T) {
	l, srv := newLedger(t, DefaultRequestIDHeader, always("answer"))
	srv.Start()
	defer srv.Close()
	tr := newTestTransport(t, nil)
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	body := &requestBody{Reader: strings.NewReader("{}")}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
	_, err := hc.Do(req)
	if err == nil || !strings.Contains(err.Error(), "saferetry.Wrap") {
		t.Fatalf("err = %v, want a refusal that names saferetry.Wrap", err)
	}
	if l.total() != 0 {
		t.Fatalf("server processed %d requests, want 0", l.total())
	}
	if body.closed.Load() != 1 {
		t.Fatalf("body closed %d times, want 1", body.closed.Load())
	}
}

// A context deadline and the attempt timeout keep the outcome too.
func TestDeadlinesKeepOutcomeAndKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
		ctx  func() (context.Context, context.CancelFunc)
	}{
		// The request must reach the server before the deadline or the
		// timeout ends it.
		{"context deadline", nil, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), promptTimeout)
		}},
		{"attempt timeout", []Option{WithAttemptTimeout(promptTimeout), WithMaxRetries(0)}, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, srv := newLedger(t, "X-Op", always("hold"))
			srv.Start()
			defer srv.Close()
			defer l.stop()
			// A header the server does not deduplicate on: never retried
			// once it may have been sent.
			hc, err := Wrap(nil, append([]Option{WithRequestIDHeader("X-Op")}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("{}"))
			_, err = hc.Do(req)
			receive(t, l.held, "the server holding the request")
			wantOutcomeUnknown(t, err, l)
		})
	}
}

// hideTrace is a base RoundTripper that hides net/http's trace hooks from
// the Transport above it, as a wrapper that swaps the context does.
type hideTrace struct{ base http.RoundTripper }

func (h hideTrace) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer context.AfterFunc(req.Context(), cancel)()
	return h.base.RoundTrip(req.WithContext(ctx))
}

// Kind 2a: a base that reports nothing proves nothing: a failure is "may
// have been sent", never retried for a server that does not deduplicate.
func TestHookLessBaseFailsClosed(t *testing.T) {
	l, srv := newLedger(t, "X-Op", always("drop"))
	srv.Start()
	defer srv.Close()
	tr := newTestTransport(t, hideTrace{http.DefaultTransport.(*http.Transport).Clone()}, WithRequestIDHeader("X-Op"))
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
	_, err := tr.RoundTrip(req)
	wantOutcomeUnknown(t, err, l)
	if l.total() != 1 {
		t.Fatalf("server processed %d requests, want 1", l.total())
	}
}

// A dial failure with live hooks is proof: retried, and not "unknown".
func TestDialFailureIsUnsent(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	tr := newTestTransport(t, nil, WithRequestIDHeader("X-Op"), WithMaxRetries(2))
	var attempts []Attempt
	tr.cfg.observer = func(a Attempt) { attempts = append(attempts, a) }
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	_, err := tr.RoundTrip(req)
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want a failure that is not ErrOutcomeUnknown", err)
	}
	if len(attempts) != 3 || attempts[0].Sent {
		t.Fatalf("attempts = %+v, want 3, none sent", attempts)
	}
}

// Kind 2b: HTTP/2 reports WroteHeaders late; a cancel after the server has
// the request must read "may have been sent".
func TestHTTP2CancelAfterProcessingIsOutcomeUnknown(t *testing.T) {
	l, srv := newLedger(t, ZeroHashRequestIDHeader, always("hold"))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	defer l.stop()
	tr := newTestTransport(t, srv.Client().Transport, WithZeroHashRequestID())
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, nil) // no body
		done := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			done <- err
		}()
		<-l.held
		cancel()
		wantOutcomeUnknown(t, <-done, l)
	}
}

// Kind 3a: a request that must not be resent reaches the base with no
// means to rewind it (no GetBody, never a nil body), and a replay that
// happens anyway ends as ErrOutcomeUnknown. A base whose trace hooks never
// fired gets no means to resend anything: its resends could not be seen.
func TestNoReplayableRequestForForbiddenResend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []Option
		body     bool
		hookless bool
		replay   bool
	}{
		{"zerohash POST with a body", []Option{WithZeroHashRequestID()}, true, false, false},
		{"zerohash POST without a body", []Option{WithZeroHashRequestID()}, false, false, false},
		{"custom header POST", []Option{WithRequestIDHeader("X-Op")}, true, false, false},
		{"unkeyed POST", []Option{WithStampedMethods("PUT")}, false, false, false},
		{"default header POST", nil, true, false, true},
		{"deduplicated custom header", []Option{WithRequestIDHeader("X-Op"), WithServerDeduplication()}, false, false, true},
		{"default header POST, hook-less base", nil, true, true, false},
		{"default header POST without a body, hook-less base", nil, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen *http.Request
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				seen = req
				if !tc.hookless {
					wroteHeaders(req)
				}
				return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
			})
			tr := newTestTransport(t, base, tc.opts...)
			var body io.Reader
			if tc.body {
				body = strings.NewReader("{}")
			}
			for range 2 { // the first request shows whether the hooks fire
				req, _ := http.NewRequest(http.MethodPost, "http://api.test/x", body)
				if _, err := tr.RoundTrip(req); err != nil {
					t.Fatal(err)
				}
			}
			replayable := seen.GetBody != nil || seen.Body == nil || seen.Body == http.NoBody
			if replayable != tc.replay {
				t.Fatalf("base got GetBody %v, Body %T: replayable = %v, want %v", seen.GetBody != nil, seen.Body, replayable, tc.replay)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// A base that resends on its own (two connections in one attempt) a
// request the policy forbids resending: the 200 it got is not trusted.
func TestBaseReplayOfForbiddenRequestIsOutcomeUnknown(t *testing.T) {
	var sent atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		tr := httptrace.ContextClientTrace(req.Context())
		for range 2 {
			if tr.GetConn != nil {
				tr.GetConn("api.test:80")
			}
			if tr.GotConn != nil {
				tr.GotConn(httptrace.GotConnInfo{})
			}
			sent.Add(1)
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
	})
	tr := newTestTransport(t, base, WithZeroHashRequestID())
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/x", strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if resp != nil || !errors.Is(err, ErrOutcomeUnknown) || stampedFromError(err) == "" {
		t.Fatalf("got %v, %v; want ErrOutcomeUnknown with the key", resp, err)
	}
}

// requestBody is a request body without GetBody that counts its Close
// calls, concurrently safe (net/http closes from its own goroutines).
type requestBody struct {
	io.Reader
	closed atomic.Int32
}

func (b *requestBody) Close() error {
	b.closed.Add(1)
	return nil
}

// chiftAuthAPI is a Chift-like API behind a token endpoint: /token answers
// tokenStatus; the API answers 401 to its first request, then 201, and
// records the bytes of every body it received.
type chiftAuthAPI struct {
	tokenStatus int
	mu          sync.Mutex
	bodies      []int
}

func (a *chiftAuthAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		w.WriteHeader(a.tokenStatus)
		io.WriteString(w, `{"access_token":"tok","token_type":"bearer","expires_in":1800}`)
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	a.mu.Lock()
	a.bodies = append(a.bodies, int(n))
	first := len(a.bodies) == 1
	a.mu.Unlock()
	if first {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// Kind 3b: a one-shot body (streamed, over the buffer limit) is never sent
// twice, not even by a re-authentication; the 401 comes back; the body is
// closed exactly once on every path.
func TestOneShotBodyUnderChiftAuth(t *testing.T) {
	creds := ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	const size = 64 << 10
	t.Run("401 is handed back", func(t *testing.T) {
		api := &chiftAuthAPI{tokenStatus: 200}
		srv := httptest.NewServer(api)
		defer srv.Close()
		tr := newTestTransport(t, nil, WithChiftAuth(creds), WithAPIBaseURL(srv.URL), WithMaxBufferedBody(1024))
		body := &requestBody{Reader: strings.NewReader(strings.Repeat("x", size))}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/c1/invoicing/invoices", body)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		api.mu.Lock()
		defer api.mu.Unlock()
		if resp.StatusCode != http.StatusUnauthorized || len(api.bodies) != 1 || api.bodies[0] != size {
			t.Fatalf("status %d, bodies received %v; want the 401 back and one whole body", resp.StatusCode, api.bodies)
		}
		if body.closed.Load() != 1 {
			t.Fatalf("body closed %d times, want 1", body.closed.Load())
		}
	})
	t.Run("token refused: nothing sent, body closed", func(t *testing.T) {
		api := &chiftAuthAPI{tokenStatus: 403}
		srv := httptest.NewServer(api)
		defer srv.Close()
		tr := newTestTransport(t, nil, WithChiftAuth(creds), WithAPIBaseURL(srv.URL), WithMaxBufferedBody(1024))
		body := &requestBody{Reader: strings.NewReader(strings.Repeat("x", size))}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/c1/invoicing/invoices", body)
		_, err := tr.RoundTrip(req)
		if err == nil || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v, want the token refusal, not ErrOutcomeUnknown", err)
		}
		if len(api.bodies) != 0 || body.closed.Load() != 1 {
			t.Fatalf("bodies sent %v, closed %d times; want none sent, closed once", api.bodies, body.closed.Load())
		}
	})
	t.Run("buffered body: 401 re-authenticates once", func(t *testing.T) {
		api := &chiftAuthAPI{tokenStatus: 200}
		srv := httptest.NewServer(api)
		defer srv.Close()
		tr := newTestTransport(t, nil, WithChiftAuth(creds), WithAPIBaseURL(srv.URL))
		body := &requestBody{Reader: strings.NewReader(strings.Repeat("x", size))}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/c1/invoicing/invoices", body)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || len(api.bodies) != 2 || api.bodies[1] != size || body.closed.Load() != 1 {
			t.Fatalf("status %d, bodies %v, closed %d; want 201 after a whole resend, closed once", resp.StatusCode, api.bodies, body.closed.Load())
		}
	})
}

// An answer that says nothing about the key (a 5xx, 401, 408, 429), after
// an attempt that may have been processed without an answer, is not handed
// back as a failure: the request may exist. ErrOutcomeUnknown, the key,
// and the last answer inside.
func TestSilentAnswerAfterUnansweredAttempt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replies []reply
		unknown bool
	}{
		{"lost answer, then 500", []reply{failure(errConnReset, true), answer(500, "oops")}, true},
		{"lost answer, then 503 to the end", []reply{failure(errConnReset, true), answer(503, ""), answer(503, ""), answer(503, "last")}, true},
		{"lost answer, then 401", []reply{failure(errConnReset, true), answer(401, "")}, true},
		{"a gateway's 502, then 500", []reply{answer(502, ""), answer(500, "")}, true},
		{"lost answer, then a 400: the server's word on the key", []reply{failure(errConnReset, true), answer(400, `{"message":"bad"}`)}, false},
		{"503s only: the last one back", []reply{answer(503, ""), answer(503, ""), answer(503, ""), answer(503, "last")}, false},
		{"dial failure, then 500", []reply{failure(errConnReset, false), answer(500, "")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader, tc.replies...)
			tr := newTestTransport(t, mt)
			resp, err := tr.RoundTrip(newPost(t, "{}"))
			if !tc.unknown {
				if err != nil {
					t.Fatalf("err = %v, want the last response", err)
				}
				resp.Body.Close()
				return
			}
			var apiErr *APIError
			last := tc.replies[len(tc.replies)-1]
			if resp != nil || !errors.Is(err, ErrOutcomeUnknown) || stampedFromError(err) != api.seenKeys()[0] ||
				!errors.As(err, &apiErr) || apiErr.StatusCode != last.status {
				t.Fatalf("got %v, %v; want ErrOutcomeUnknown with key %s and the last %d inside", resp, err, api.seenKeys()[0], last.status)
			}
		})
	}
}

// The moved client Timeout also bounds the buffering of a streamed body
// whose writer stalls: the call ends with the Timeout, nothing sent, the
// body closed once.
func TestClientTimeoutBoundsBodyBuffering(t *testing.T) {
	l, srv := newLedger(t, DefaultRequestIDHeader, always("answer"))
	srv.Start()
	defer srv.Close()
	hc, err := Wrap(&http.Client{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe() // never written: the body stalls
	defer pw.Close()
	body := &requestBody{Reader: pr}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
	_, err = hc.Do(req)
	var te *TimeoutError
	if !errors.As(err, &te) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v; want the client's Timeout, not ErrOutcomeUnknown (nothing was sent)", err)
	}
	if l.total() != 0 || body.closed.Load() != 1 {
		t.Fatalf("server processed %d, body closed %d times; want 0 and 1", l.total(), body.closed.Load())
	}
}
