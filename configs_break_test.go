package saferetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"golang.org/x/oauth2"
)

const fastRetries = time.Millisecond

// rigCatch runs f and returns what it panicked with, if anything.
func rigCatch(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// A base RoundTripper that returns neither a response nor an error (a
// buggy middleware that swallows the answer; net/http's own http.Client
// turns this into an error, "returned a nil *Response with a nil error").
// The server processed the POST. Wanted: an error matching
// ErrOutcomeUnknown with the key. The SDK must not crash the caller.
func TestConfigBaseNilResponseNilError(t *testing.T) {
	l := newRigLedger()
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusCreated)
	})
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	base := rigRoundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := inner.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return nil, nil
	})
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	var postErr error
	if p := rigCatch(func() {
		resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
		if resp != nil {
			resp.Body.Close()
		}
		postErr = err
	}); p != nil {
		t.Fatalf("the call panicked (%v) after the server processed the POST %d time(s); the caller is told nothing", p, l.total())
	}
	if !errors.Is(postErr, saferetry.ErrOutcomeUnknown) || stampedFromError(postErr) != l.onlyKey() {
		t.Fatalf("err = %v (key %q), want ErrOutcomeUnknown with key %q", postErr, stampedFromError(postErr), l.onlyKey())
	}
}

// A base that answers with a nil Body (test doubles and some middlewares
// do; net/http's http.Client fills in an empty body for them). The POST
// was processed and answered 201; the caller reading or closing the body
// must not crash.
func TestConfigBaseResponseWithNilBody(t *testing.T) {
	calls := 0
	base := rigRoundTripFunc(func(req *http.Request) (*http.Response, error) {
		calls++
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusCreated, Header: http.Header{}, Request: req}, nil
	})
	hc, err := saferetry.Wrap(&http.Client{Transport: base})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post("http://api.test/invoices", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := rigCatch(func() {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}); p != nil {
		t.Fatalf("reading/closing the body of a 201 panicked: %v (the POST was processed %d time(s))", p, calls)
	}
}

// POST-redirect-GET: the server processes the POST and answers 303 See
// Other (or 301/302) pointing at the created resource; http.Client
// (whose CheckRedirect Wrap keeps) follows it with a GET. When that GET
// fails, the caller's error must still say that the POST may have been
// processed, with the POST's key: the README tells a caller whose error
// does not match ErrOutcomeUnknown that the request "never reached the
// server".
func TestConfigSeeOtherAfterProcessedPOST(t *testing.T) {
	for _, tc := range []struct {
		name     string
		location func(t *testing.T) string
	}{
		{"GET refused", func(t *testing.T) string { return rigDeadURL(t) + "/invoices/1" }},
		{"GET connection lost", func(t *testing.T) string {
			other := newRigServer(t, func(w http.ResponseWriter, r *http.Request) { rigHangUp(t, w) })
			return other.URL + "/invoices/1"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRigLedger()
			location := tc.location(t)
			srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				l.process(r.Header.Get("Idempotency-Key"))
				http.Redirect(w, r, location, http.StatusSeeOther)
			})
			hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithBackoff(fastRetries, fastRetries))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
			if resp != nil {
				resp.Body.Close()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
				t.Fatalf("the POST was processed %d time(s) under key %q, but the caller got %v: ErrOutcomeUnknown=%v, KeyFromError=%q",
					l.total(), l.onlyKey(), err, errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err))
			}
		})
	}
}

// A base that fails over: it tries the primary endpoint with net/http
// (which fires GetConn, then fails to dial) and then sends through a
// client that reports no httptrace events. The README reads "GetConn
// fired, GotConn did not" as proof that nothing was written, but the
// request was written, by the second path. Under the zerohash preset (the
// server does not deduplicate) the SDK then resends a POST the server has
// processed.
func TestConfigFailoverBaseReplaysAfterRefusedPrimary(t *testing.T) {
	t.Run("net/http refused, then the other path sends", func(t *testing.T) { rigFailoverCase(t, false) })
}

func rigFailoverCase(t *testing.T, hooklessFirst bool) {
	l := newRigLedger()
	secondary := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get("X-Request-Id"))
		rigHangUp(t, w) // processed, answer lost
	})
	primary, _ := url.Parse(rigDeadURL(t))
	second, _ := url.Parse(secondary.URL)
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	var base http.RoundTripper = &rigFailover{primary: primary.Host, secondary: second.Host, transport: inner}
	if hooklessFirst {
		base = &rigFallback{hookless: second.Host, fallback: primary.Host, transport: inner}
	}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post("http://"+primary.Host+"/transfers", "application/json", strings.NewReader(`{"amount":"20.10"}`))
	if resp != nil {
		resp.Body.Close()
	}
	if n := l.total(); n != 1 || !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
		t.Fatalf("server processed the POST %d time(s) (per key %v); caller got %v (ErrOutcomeUnknown=%v, key %q); want 1 processing and ErrOutcomeUnknown with the key",
			n, l.keys(), err, errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err))
	}
}

// chiftRevoking is a Chift-like API: the first POST is processed and its
// answer lost; the token is then revoked (the retry hears 401) and /token
// refuses new tokens (403: credentials rotated, account suspended).
type chiftRevoking struct {
	t      *testing.T
	ledger *rigLedger
	mu     sync.Mutex
	tokens int
	posts  int
}

func (s *chiftRevoking) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.URL.Path == "/token":
		s.tokens++
		if s.tokens == 1 {
			fmt.Fprint(w, `{"access_token":"t1","token_type":"bearer","expires_in":1800}`)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"status":"error","message":"account suspended"}`)
	case r.Method == http.MethodPost:
		s.posts++
		if s.posts == 1 {
			s.ledger.process(r.Header.Get(saferetry.ChiftRequestIDHeader))
			rigHangUp(s.t, w)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"status":"error","message":"token revoked"}`)
	default:
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"status":"error","message":"token revoked"}`)
	}
}

// WithChiftAuth: the first attempt is processed and its answer lost; the
// retry's token has been revoked (401) and the new-token request is
// refused with a 4xx. The call ends with the /token *APIError alone: no
// ErrOutcomeUnknown, no key, although the first attempt may have created
// the invoice (and did). Chift.Create returns the same error without
// asking the monitoring log.
func TestConfigChiftTokenRefusedAfterUnknownOutcome(t *testing.T) {
	creds := saferetry.ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	t.Run("transport", func(t *testing.T) {
		l := newRigLedger()
		srv := newRigServer(t, (&chiftRevoking{t: t, ledger: l}).ServeHTTP)
		client, err := saferetry.NewClient(srv.URL, saferetry.WithChiftAuth(creds), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.HTTPClient().Post(srv.URL+"/consumers/c1/invoicing/invoices", "application/json", strings.NewReader(`{"n":1}`))
		if resp != nil {
			resp.Body.Close()
		}
		if l.total() != 1 {
			t.Fatalf("server processed %d, want 1 (setup)", l.total())
		}
		if !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
			var apiErr *saferetry.APIError
			t.Fatalf("the invoice was created under %q, but the caller got %v (ErrOutcomeUnknown=%v, KeyFromError=%q, *APIError=%v)",
				l.onlyKey(), err, errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err), errors.As(err, &apiErr))
		}
	})
	t.Run("Chift.Create", func(t *testing.T) {
		l := newRigLedger()
		srv := newRigServer(t, (&chiftRevoking{t: t, ledger: l}).ServeHTTP)
		client, err := saferetry.NewClient(srv.URL, saferetry.WithChiftAuth(creds), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		created, err := client.Chift.Create(ctx, saferetry.ChiftCreate{
			Path: "consumers/c1/invoicing/invoices", Body: map[string]int{"n": 1},
			ConsumerID: "c1", ConnectionID: "k1", RequestID: "invoice-F-2026-0042",
		})
		if l.keys()["invoice-F-2026-0042"] != 1 {
			t.Fatalf("server processed %v, want the invoice once (setup)", l.keys())
		}
		if err == nil {
			t.Fatalf("created = %+v, no error", created)
		}
		if !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != "invoice-F-2026-0042" {
			t.Fatalf("the invoice was created, but Create returned %v (ErrOutcomeUnknown=%v, KeyFromError=%q)",
				err, errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err))
		}
	})
}

// WithRequestIDHeader("Idempotency-Key") after a preset whose server does
// not deduplicate on that header. WithRequestIDHeader with any other name
// under a preset is refused as a contradiction; with the default name it
// is accepted silently and switches server deduplication on, so a POST
// that may have been processed is retried. The server (zerohash, Chift)
// ignores Idempotency-Key: processed twice, caller told 201.
func TestConfigPresetThenDefaultHeaderName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		preset saferetry.Option
	}{
		{"zerohash", saferetry.WithZeroHashRequestID()},
		{"Chift", saferetry.WithChift()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRigLedger()
			var mu sync.Mutex
			arrivals := 0
			srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				arrivals++
				n := arrivals
				mu.Unlock()
				l.process(r.Header.Get("Idempotency-Key")) // the server does not deduplicate on it
				if n == 1 {
					rigHangUp(t, w)
					return
				}
				w.WriteHeader(http.StatusCreated)
			})
			hc, err := saferetry.Wrap(&http.Client{}, tc.preset, saferetry.WithRequestIDHeader("Idempotency-Key"), saferetry.WithBackoff(fastRetries, fastRetries))
			if err != nil {
				return // refused as a contradiction: fine
			}
			resp, err := hc.Post(srv.URL+"/transfers", "application/json", strings.NewReader(`{"amount":"20.10"}`))
			status := 0
			if resp != nil {
				status = resp.StatusCode
				resp.Body.Close()
			}
			if l.total() != 1 {
				t.Fatalf("options accepted; the server processed the POST %d times (per key %v); the caller got status %d, err %v",
					l.total(), l.keys(), status, err)
			}
		})
	}
}

// A streamed body (no GetBody) whose writer stalls; the caller cancels.
// Signing under zerohash releases the caller at once (readBody), the
// token wait too; buffering the body for retries does not: RoundTrip
// stays blocked until the writer finishes, whatever the context says.
func TestConfigCancelWhileBufferingBody(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	started := make(chan struct{})
	var once sync.Once
	body := rigReadNotify{r: pr, first: func() { once.Do(func() { close(started) }) }}
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	})
	hc, err := saferetry.Wrap(&http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/uploads", body)
	done := make(chan error, 1)
	go func() {
		resp, err := hc.Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second): // only a guard: a working cancel returns at once
		pw.CloseWithError(errors.New("released by the test"))
		err := <-done
		t.Fatalf("the caller cancelled, but the call returned only when the test released the body 30 s later (err %v)", err)
	}
}

type rigReadNotify struct {
	r     io.ReadCloser
	first func()
}

func (b rigReadNotify) Read(p []byte) (int, error) {
	b.first()
	return b.r.Read(p)
}

func (b rigReadNotify) Close() error { return b.r.Close() }

// DoJSON of a create whose 201 arrives but whose body is cut off (the
// connection drops mid-body) or outlives the client's Timeout (moved into
// the Transport by NewClient). The invoice exists; DoJSON's error must say
// the outcome is unknown and carry the key (Chift.Create recovers this
// case from the monitoring log; DoJSON, the README's generic create path,
// returns a bare decoding error).
func TestConfigDoJSONBodyLostAfterCreate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []saferetry.Option
		cut  bool
	}{
		{"body cut off", nil, true},
		// The answer's head must beat the Timeout: promptTimeout, not less.
		{"client Timeout during the body", []saferetry.Option{saferetry.WithHTTPClient(&http.Client{Timeout: promptTimeout})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRigLedger()
			release := make(chan struct{})
			srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				l.process(r.Header.Get("Idempotency-Key"))
				conn, bufrw, err := w.(http.Hijacker).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				fmt.Fprint(bufrw, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"id\":\"inv_1\",")
				bufrw.Flush()
				if !tc.cut {
					<-release
				}
			})
			defer close(release)
			client, err := saferetry.NewClient(srv.URL, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			var out struct{ ID string }
			_, err = client.DoJSON(context.Background(), http.MethodPost, "invoices", map[string]int{"n": 1}, &out)
			if l.total() != 1 {
				t.Fatalf("processed %d, want 1 (setup)", l.total())
			}
			if !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
				t.Fatalf("the invoice was created under %q; DoJSON returned %v (ErrOutcomeUnknown=%v, KeyFromError=%q)",
					l.onlyKey(), err, errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err))
			}
		})
	}
}

// A base that returns a response and an error together (the
// RoundTripper contract forbids it; net/http's client logs and ignores the
// response). The SDK returns the error; the response body it dropped must
// still be closed, or its connection leaks.
func TestConfigBaseResponseAndErrorBodyClosed(t *testing.T) {
	body := &rigBody{Reader: strings.NewReader("late")}
	base := rigRoundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Body != nil {
			io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		return &http.Response{StatusCode: http.StatusCreated, Header: http.Header{}, Body: body, Request: req}, errors.New("stream reset after the answer")
	})
	tr, err := saferetry.NewTransport(base, saferetry.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/invoices", strings.NewReader(`{}`))
	_, err = tr.RoundTrip(req)
	if !errors.Is(err, saferetry.ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
	if body.closes() != 1 {
		t.Fatalf("the dropped response's body was closed %d times, want 1", body.closes())
	}
}

// The first attempt is processed and its answer lost; the retries (same
// key, default header) meet 503s from a proxy in front until they run out.
// The caller gets the last 503 as a plain response and a nil error:
// nothing says that an attempt may have been processed. A caller reading
// "503" as "not done" and sending the create again (a new request, so a
// new key) creates it twice.
func TestConfigStatusAfterUnknownAttempt(t *testing.T) {
	l := newRigLedger()
	var mu sync.Mutex
	arrivals := 0
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		arrivals++
		n := arrivals
		mu.Unlock()
		if n == 1 {
			l.process(r.Header.Get("Idempotency-Key"))
			rigHangUp(t, w)
			return
		}
		http.Error(w, "<html><title>503 Service Unavailable</title></html>", http.StatusServiceUnavailable)
	})
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
	status := 0
	if resp != nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	mu.Lock()
	attempts := arrivals
	mu.Unlock()
	if !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
		t.Fatalf("attempt 1 was processed under %q (%d attempts in all); the caller got status %d and err %v",
			l.onlyKey(), attempts, status, err)
	}
}

// ---- Attempts that held: each passes today. ----

// rigOrigin processes every POST (no deduplication), counting per
// header, and either answers 201 or loses the answer.
func rigOrigin(t *testing.T, l *rigLedger, header string, drop bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(header))
		if drop {
			if r.ProtoMajor == 2 {
				panic(http.ErrAbortHandler) // RST_STREAM after processing
			}
			rigHangUp(t, w)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}
}

func rigWantUnknown(t *testing.T, l *rigLedger, err error) {
	t.Helper()
	if l.total() != 1 || !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != l.onlyKey() {
		t.Fatalf("processed %d (per key %v); err %v (ErrOutcomeUnknown=%v, key %q)", l.total(), l.keys(), err,
			errors.Is(err, saferetry.ErrOutcomeUnknown), stampedFromError(err))
	}
}

// A plain HTTP forward proxy (http.Transport.Proxy): the proxy forwards
// the POST, the origin processes it, the proxy drops the client. And the
// proxy down: refused, retried, nothing reaches the origin.
func TestConfigHoldsForwardProxy(t *testing.T) {
	t.Run("drop after forwarding", func(t *testing.T) {
		l := newRigLedger()
		origin := newRigServer(t, rigOrigin(t, l, "X-Request-Id", false))
		fwd := &http.Transport{}
		defer fwd.CloseIdleConnections()
		proxy := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
			out := r.Clone(context.Background())
			out.RequestURI = ""
			resp, err := fwd.RoundTrip(out)
			if err == nil {
				resp.Body.Close()
			}
			rigHangUp(t, w)
		})
		pu, _ := url.Parse(proxy.URL)
		hc, err := saferetry.Wrap(&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Post(origin.URL+"/transfers", "application/json", strings.NewReader(`{}`))
		if resp != nil {
			resp.Body.Close()
		}
		rigWantUnknown(t, l, err)
	})
	t.Run("proxy down", func(t *testing.T) {
		l := newRigLedger()
		origin := newRigServer(t, rigOrigin(t, l, "X-Request-Id", false))
		pu, _ := url.Parse(rigDeadURL(t))
		hc, err := saferetry.Wrap(&http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		_, err = hc.Post(origin.URL+"/transfers", "application/json", strings.NewReader(`{}`))
		if l.total() != 0 || err == nil || errors.Is(err, saferetry.ErrOutcomeUnknown) {
			t.Fatalf("processed %d; err %v", l.total(), err)
		}
	})
}

// An HTTPS origin through a CONNECT proxy, HTTP/1.1 and HTTP/2 inside the
// tunnel: processed, then the answer lost; and a proxy that refuses the
// CONNECT (nothing reaches the origin).
func TestConfigHoldsConnectProxy(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, refuse := range []bool{false, true} {
			t.Run(fmt.Sprintf("h2=%v refuse=%v", h2, refuse), func(t *testing.T) {
				l := newRigLedger()
				origin := httptest.NewUnstartedServer(rigOrigin(t, l, "X-Request-Id", true))
				origin.EnableHTTP2 = h2
				origin.StartTLS()
				defer origin.Close()
				proxy := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
					if r.Method != http.MethodConnect || refuse {
						http.Error(w, "forbidden", http.StatusForbidden)
						return
					}
					upstream, err := net.Dial("tcp", r.Host)
					if err != nil {
						http.Error(w, err.Error(), http.StatusBadGateway)
						return
					}
					conn, bufrw, err := w.(http.Hijacker).Hijack()
					if err != nil {
						upstream.Close()
						return
					}
					io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
					go func() { io.Copy(upstream, bufrw); upstream.Close() }()
					io.Copy(conn, upstream)
					conn.Close()
				})
				pu, _ := url.Parse(proxy.URL)
				base := origin.Client().Transport.(*http.Transport).Clone()
				base.Proxy = http.ProxyURL(pu)
				base.ForceAttemptHTTP2 = h2
				defer base.CloseIdleConnections()
				hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := hc.Post(origin.URL+"/transfers", "application/json", strings.NewReader(`{}`))
				if resp != nil {
					resp.Body.Close()
				}
				if refuse {
					// net/http returns a proxy's refusal as a bare string:
					// no proof that nothing left, so "may have been sent".
					if l.total() != 0 || !errors.Is(err, saferetry.ErrOutcomeUnknown) {
						t.Fatalf("processed %d; err %v; want none processed and ErrOutcomeUnknown (fail closed)", l.total(), err)
					}
					return
				}
				rigWantUnknown(t, l, err)
			})
		}
	}
}

// A 307 of a POST that carries the caller's key, to another host that
// processes it and loses the answer: the redirected request keeps the key
// and its retries carry it; a deduplicating server creates it once.
func TestConfigHoldsTemporaryRedirectKeepsCallerKey(t *testing.T) {
	var mu sync.Mutex
	stored := map[string]bool{}
	l := newRigLedger()
	target := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		seen := stored[key]
		stored[key] = true
		mu.Unlock()
		if seen {
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(http.StatusCreated)
			return
		}
		l.process(key)
		rigHangUp(t, w)
	})
	front := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/invoices", strings.NewReader(`{}`))
	req.Header.Set("Idempotency-Key", "invoice-F-7")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || l.total() != 1 || l.keys()["invoice-F-7"] != 1 {
		t.Fatalf("status %d, processed %v", resp.StatusCode, l.keys())
	}
}

// Expect: 100-continue with a one-shot body under WithChiftAuth: the
// server answers 401 before reading it. Nothing processed, the 401 handed
// back, the body closed once and never sent twice.
func TestConfigHoldsExpectContinueOneShotUnderChiftAuth(t *testing.T) {
	creds := saferetry.ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	l := newRigLedger()
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, `{"access_token":"t1","expires_in":1800}`)
			return
		}
		if r.Header.Get("Authorization") == "Bearer t1" && l.total() == 0 && r.Header.Get("Expect") != "" {
			w.WriteHeader(http.StatusUnauthorized) // before reading the body
			return
		}
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(saferetry.ChiftRequestIDHeader))
		w.WriteHeader(http.StatusCreated)
	})
	base := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	defer base.CloseIdleConnections()
	client, err := saferetry.NewClient(srv.URL, saferetry.WithChiftAuth(creds), saferetry.WithMaxBufferedBody(8),
		saferetry.WithHTTPClient(&http.Client{Transport: base}), saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	body := &rigBody{Reader: strings.NewReader(strings.Repeat("x", 64)), notify: make(chan struct{})}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/invoices", body)
	req.Header.Set("Expect", "100-continue")
	resp, err := client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// net/http's write loop closes the unsent body once the answer is in,
	// possibly after RoundTrip returned.
	select {
	case <-body.notify:
	case <-time.After(30 * time.Second): // only a guard
	}
	if resp.StatusCode != http.StatusUnauthorized || l.total() != 0 || body.closes() != 1 {
		t.Fatalf("status %d, processed %d, body closed %d", resp.StatusCode, l.total(), body.closes())
	}
}

// DisableKeepAlives, zerohash signing of a one-shot (over the buffer)
// body, answer lost after processing.
func TestConfigHoldsNoKeepAlivesOneShotSigned(t *testing.T) {
	l := newRigLedger()
	srv := newRigServer(t, rigOrigin(t, l, "X-Request-Id", true))
	base := &http.Transport{DisableKeepAlives: true}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithZeroHashAuth("k", "2mC4ZvVd4goRkuJm+rjr9byUiaUW1b6tVN4xy9QXNSE=", "p"),
		saferetry.WithAPIBaseURL(srv.URL), saferetry.WithMaxBufferedBody(8), saferetry.WithBackoff(fastRetries, fastRetries))
	if err != nil {
		t.Fatal(err)
	}
	body := &rigBody{Reader: strings.NewReader(strings.Repeat("x", 64))}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/transfers", body)
	_, err = hc.Do(req)
	rigWantUnknown(t, l, err)
	if body.closes() != 1 {
		t.Fatalf("body closed %d times", body.closes())
	}
}

// MaxConnsPerHost=1, 6 concurrent zerohash POSTs, a short attempt
// timeout: the first holds the only connection while the others wait in
// net/http's queue and time out there. Nothing is processed twice; a POST
// the server never saw may say "not sent"; every one it processed says
// ErrOutcomeUnknown (or succeeded). The first has no attempt timeout, so
// that it reaches the server and holds the connection however slow the
// machine.
func TestConfigHoldsOneConnectionManyCallers(t *testing.T) {
	l := newRigLedger()
	release := make(chan struct{})
	var once sync.Once
	first := make(chan struct{})
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := l.process(r.Header.Get("X-Request-Id"))
		if n == 1 {
			once.Do(func() { close(first) })
			<-release
		}
		w.WriteHeader(http.StatusCreated)
	})
	base := &http.Transport{MaxConnsPerHost: 1}
	defer base.CloseIdleConnections()
	holder, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithZeroHashRequestID())
	if err != nil {
		t.Fatal(err)
	}
	hc, err := saferetry.Wrap(&http.Client{Transport: base}, saferetry.WithZeroHashRequestID(),
		saferetry.WithAttemptTimeout(50*time.Millisecond), saferetry.WithBackoff(fastRetries, fastRetries), saferetry.WithMaxRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		key string
		err error
	}
	results := make(chan result, 6)
	call := func(hc *http.Client) {
		resp, err := hc.Post(srv.URL+"/transfers", "application/json", strings.NewReader(`{}`))
		key := stampedFromError(err)
		if resp != nil {
			key = stampedFromResponse(resp)
			resp.Body.Close()
		}
		results <- result{key, err}
	}
	go call(holder)
	<-first
	for range 5 {
		go call(hc)
	}
	got := make([]result, 0, 6)
	for range 5 {
		got = append(got, <-results)
	}
	close(release)
	got = append(got, <-results)
	keys := l.keys()
	for _, r := range got {
		if keys[r.key] > 1 {
			t.Errorf("key %s processed %d times", r.key, keys[r.key])
		}
		if r.err != nil && keys[r.key] > 0 && !errors.Is(r.err, saferetry.ErrOutcomeUnknown) {
			t.Errorf("key %s processed but err %v", r.key, r.err)
		}
	}
}

// The same *http.Request sent twice with the caller's key (GetBody set):
// the second call resends the same bytes under the same key.
func TestConfigHoldsSameRequestTwice(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string][]string{}
	srv := newRigServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		key := r.Header.Get("Idempotency-Key")
		bodies[key] = append(bodies[key], string(b))
		n := len(bodies[key])
		mu.Unlock()
		if n == 1 {
			rigHangUp(t, w)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/invoices", strings.NewReader(`{"n":1}`))
	req.Header.Set("Idempotency-Key", "invoice-F-9")
	if _, err := hc.Do(req); !errors.Is(err, saferetry.ErrOutcomeUnknown) || stampedFromError(err) != "invoice-F-9" {
		t.Fatalf("first: %v", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(bodies) != 1 || strings.Join(bodies["invoice-F-9"], "|") != `{"n":1}|{"n":1}` {
		t.Fatalf("bodies %v", bodies)
	}
}

// oauth2.Transport above the SDK (it clones the request and passes the
// error through) and below it (a failing token source: the base reports
// no wire events, so the SDK fails closed).
func TestConfigHoldsOAuth2Transport(t *testing.T) {
	t.Run("above", func(t *testing.T) {
		l := newRigLedger()
		srv := newRigServer(t, rigOrigin(t, l, "X-Request-Id", true))
		tr, err := saferetry.NewTransport(nil, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}), Base: tr}}
		_, err = hc.Post(srv.URL+"/transfers", "application/json", strings.NewReader(`{}`))
		rigWantUnknown(t, l, err)
	})
	t.Run("below, token source fails", func(t *testing.T) {
		l := newRigLedger()
		srv := newRigServer(t, rigOrigin(t, l, "X-Request-Id", false))
		failing := oauth2.ReuseTokenSource(nil, rigTokenSource{})
		tr, err := saferetry.NewTransport(&oauth2.Transport{Source: failing}, saferetry.WithZeroHashRequestID(), saferetry.WithBackoff(fastRetries, fastRetries))
		if err != nil {
			t.Fatal(err)
		}
		_, err = (&http.Client{Transport: tr}).Post(srv.URL+"/transfers", "application/json", strings.NewReader(`{}`))
		if l.total() != 0 || err == nil {
			t.Fatalf("processed %d, err %v", l.total(), err)
		}
		// Nothing left, yet the base reported no wire events: fail closed.
		t.Logf("err %v (ErrOutcomeUnknown=%v)", err, errors.Is(err, saferetry.ErrOutcomeUnknown))
	})
}

type rigTokenSource struct{}

func (rigTokenSource) Token() (*oauth2.Token, error) {
	return nil, errors.New("token endpoint down")
}
