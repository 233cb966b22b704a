package saferetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Attempts that held: each passes today.

// Retry-After beyond the cap, after an attempt whose answer was lost.
func TestEdgeHoldsRetryAfterBeyondCapAfterUnanswered(t *testing.T) {
	for _, status := range []int{503, 429, 500} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			last := reply{status: status, body: "busy", header: http.Header{"Retry-After": {"3600"}}}
			mt, api := newMockAPI(t, DefaultRequestIDHeader, failure(errConnReset, true), last)
			tr := newTestTransport(t, mt)
			resp, err := tr.RoundTrip(newPost(t, "{}"))
			if resp != nil || !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) != api.seenKeys()[0] {
				t.Fatalf("got %v, %v", resp, err)
			}
		})
	}
}

// The retry budget runs out after an attempt whose answer was lost: on the
// error itself, and on a 503 that follows it.
func TestEdgeHoldsBudgetOutAfterUnanswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		budget  int
		replies []reply
	}{
		{"budget spent at the lost answer", 0, []reply{failure(errConnReset, true)}},
		{"budget spent at the 503 after it", 1, []reply{failure(errConnReset, true), answer(503, "")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader, tc.replies...)
			tr := newTestTransport(t, mt)
			setBudget(tr, tc.budget, 0, 0, time.Now)
			resp, err := tr.RoundTrip(newPost(t, "{}"))
			if resp != nil || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrRetryBudgetExhausted) || KeyFromError(err) != api.seenKeys()[0] {
				t.Fatalf("got %v, %v", resp, err)
			}
		})
	}
}

// WithChiftAuth: the first POST is processed and its answer lost; the retry
// hears 401 (token expired), a new token is fetched, and the resend hears
// 401 again or 409 REQUEST_ALREADY_PROCESSED.
func TestEdgeHoldsChift401AfterUnanswered(t *testing.T) {
	creds := ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	for _, third := range []string{"401", "already processed"} {
		t.Run(third, func(t *testing.T) {
			l := newSLLedger()
			var mu sync.Mutex
			posts, tokens := 0, 0
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				defer mu.Unlock()
				if r.URL.Path == "/token" {
					tokens++
					fmt.Fprintf(w, `{"access_token":"t%d","expires_in":1800}`, tokens)
					return
				}
				posts++
				switch {
				case posts == 1:
					l.process(r.Header.Get(ChiftRequestIDHeader))
					hangUp(t, w)
				case posts == 2 || third == "401":
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"status":"error","message":"token expired"}`)
				default:
					w.WriteHeader(http.StatusConflict)
					io.WriteString(w, alreadyProcessedBody)
				}
			})
			tr := newTestTransport(t, nil, WithChiftAuth(creds), WithAPIBaseURL(srv.URL))
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/c1/invoicing/invoices", strings.NewReader(`{"n":1}`))
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			want := ErrOutcomeUnknown
			if third != "401" {
				want = ErrRequestAlreadyProcessed
			}
			if !errors.Is(err, want) || KeyFromError(err) != l.only() || posts != 3 || tokens != 2 {
				t.Fatalf("posts %d, tokens %d, err %v; want %v with key %s", posts, tokens, err, want, l.only())
			}
		})
	}
}

// slGetBodies is a caller's GetBody whose bodies record closes and reads
// after close, and which fails from its failAt-th call on.
type slGetBodies struct {
	mu      sync.Mutex
	calls   int
	failAt  int
	bodies  []*slBody
	payload string
}

type slBody struct {
	r         io.Reader
	mu        sync.Mutex
	closes    int
	readAfter bool
}

func (b *slBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closes > 0 {
		b.readAfter = true
		b.mu.Unlock()
		return 0, errors.New("read after close")
	}
	b.mu.Unlock()
	return b.r.Read(p)
}

func (b *slBody) Close() error {
	b.mu.Lock()
	b.closes++
	b.mu.Unlock()
	return nil
}

func (g *slGetBodies) get() (io.ReadCloser, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	if g.failAt > 0 && g.calls >= g.failAt {
		return nil, errors.New("the file behind the body is gone")
	}
	b := &slBody{r: strings.NewReader(g.payload)}
	g.bodies = append(g.bodies, b)
	return b, nil
}

// check fails t unless every body handed out was closed once and never
// read after its close.
func (g *slGetBodies) check(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, b := range g.bodies {
		b.mu.Lock()
		closes, after := b.closes, b.readAfter
		b.mu.Unlock()
		if closes != 1 || after {
			t.Errorf("GetBody body %d of %d: closed %d times, read after close %v", i+1, len(g.bodies), closes, after)
		}
	}
}

// The caller's GetBody fails on its second call, after an attempt whose
// answer was lost: ErrOutcomeUnknown with the key, every body closed once.
func TestEdgeHoldsGetBodyFailsOnSecondCall(t *testing.T) {
	l := newSLLedger()
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(DefaultRequestIDHeader))
		hangUp(t, w)
	})
	tr := newTestTransport(t, nil)
	g := &slGetBodies{failAt: 2, payload: "{}"}
	orig := &closeCounter{Reader: strings.NewReader("{}")}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, orig)
	req.GetBody, req.ContentLength = g.get, 2
	resp, err := tr.RoundTrip(req)
	slWantUnknown(t, l, resp, err)
	if orig.closeCount() != 1 {
		t.Fatalf("original body closed %d times", orig.closeCount())
	}
	g.check(t)
}

// net/http rewinds the caller's GetBody to replay the POST on a new
// connection (reused connection hung up after processing); with -race:
// every body closed once, none read after its close.
func TestEdgeHoldsReplayedGetBodiesClosedOnce(t *testing.T) {
	ds := newDraftServer(t)
	ds.hangUpOn[2] = true
	srv := httptest.NewServer(ds)
	defer srv.Close()
	base := &http.Transport{MaxConnsPerHost: 1}
	defer base.CloseIdleConnections()
	tr := newTestTransport(t, base, WithMaxRetries(5))
	client := &http.Client{Transport: tr}
	warm, err := client.Post(srv.URL, "application/json", strings.NewReader(`"warm-up"`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, warm.Body)
	warm.Body.Close()
	g := &slGetBodies{payload: `"invoice"`}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`"invoice"`))
	req.GetBody = g.get
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp.Body.Close() // twice: nothing closed twice below
	if len(g.bodies) < 2 {
		t.Fatalf("GetBody called %d times; the replay did not happen", len(g.bodies))
	}
	g.check(t)
}

// The context is cancelled exactly between two attempts (from the
// observer, before the wait): ErrOutcomeUnknown with the key after a lost
// answer; a plain error after a refused dial.
func TestEdgeHoldsCancelBetweenAttempts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		first   reply
		unknown bool
	}{
		{"after a lost answer", failure(errConnReset, true), true},
		{"after a refused dial", failure(errConnReset, false), false},
		{"after a 502", answer(502, ""), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader, tc.first)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tr := newTestTransport(t, mt, WithObserver(func(a Attempt) {
				if a.Retry {
					cancel()
				}
			}))
			_, err := tr.RoundTrip(newPost(t, "{}").WithContext(ctx))
			if errors.Is(err, ErrOutcomeUnknown) != tc.unknown || KeyFromError(err) != api.seenKeys()[0] || !errors.Is(err, context.Canceled) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

// A lower-case method: not stamped (methods are case-sensitive), so a
// caller's key is what it travels with; a lost answer is retried with
// that key and the same bytes.
func TestEdgeHoldsLowerCaseMethod(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	n := 0
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		n++
		first := n == 1
		seen = append(seen, r.Method+" "+r.Header.Get(DefaultRequestIDHeader)+" "+string(b))
		mu.Unlock()
		if first {
			hangUp(t, w)
			return
		}
		w.WriteHeader(201)
	})
	tr := newTestTransport(t, nil)
	req, _ := http.NewRequest("post", srv.URL, strings.NewReader("{}"))
	req.Header.Set(DefaultRequestIDHeader, "F-1")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	got := strings.Join(seen, "|")
	n, seen = 0, nil
	mu.Unlock()
	if got != "post F-1 {}|post F-1 {}" {
		t.Fatalf("seen %q", got)
	}
	// Without a key: stamped like POST (methods are case-insensitive),
	// so resent under the same generated key.
	req, _ = http.NewRequest("post", srv.URL, strings.NewReader("{}"))
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	got = strings.Join(seen, "|")
	mu.Unlock()
	if key := KeyFromResponse(resp); key == "" || got != "post "+key+" {}|post "+key+" {}" {
		t.Fatalf("key %q, seen %q; want two sends under one generated key", key, got)
	}
}

// HTTP/2 with prior knowledge (Transport.Protocols with UnencryptedHTTP2
// only) under the zerohash preset: the server processes the POST and
// resets the stream. One processing, ErrOutcomeUnknown with the key; and
// with a body and without.
func TestEdgeHoldsH2CProtocolsReset(t *testing.T) {
	for _, body := range []bool{true, false} {
		t.Run(fmt.Sprintf("body=%v", body), func(t *testing.T) {
			l := newSLLedger()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.ProtoMajor != 2 {
					t.Errorf("proto %s", r.Proto)
				}
				l.process(r.Header.Get(ZeroHashRequestIDHeader))
				panic(http.ErrAbortHandler)
			}))
			var sp http.Protocols
			sp.SetHTTP1(true)
			sp.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = &sp
			srv.Start()
			defer srv.Close()
			var cp http.Protocols
			cp.SetUnencryptedHTTP2(true)
			base := &http.Transport{Protocols: &cp}
			defer base.CloseIdleConnections()
			tr := newTestTransport(t, base, WithZeroHashRequestID())
			for range 3 { // the later ones after the hooks were seen
				var rd io.Reader
				if body {
					rd = strings.NewReader(`{"amount":"1"}`)
				}
				before := l.count()
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/transfers", rd)
				_, err := tr.RoundTrip(req)
				if l.count() != before+1 || !errors.Is(err, ErrOutcomeUnknown) || stampedFromError(err) == "" {
					t.Fatalf("processed %d (was %d), err %v", l.count(), before, err)
				}
			}
		})
	}
}

// A POST that a 307 moves, processed at the new location, whose answer
// says 303 to a host that is down: the GET reports under the POST's key.
func TestEdgeHoldsTemporaryThenSeeOther(t *testing.T) {
	l := newSLLedger()
	dead := slDeadURL(t)
	target := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(DefaultRequestIDHeader))
		http.Redirect(w, r, dead+"/invoices/1", http.StatusSeeOther)
	})
	front := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target.URL+"/invoices", http.StatusTemporaryRedirect)
	})
	hc, err := Wrap(&http.Client{}, fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(front.URL+"/invoices", "application/json", strings.NewReader(`{}`))
	slWantUnknown(t, l, resp, err)
}

// Many concurrent first requests on a fresh Transport over net/http,
// while it learns that the hooks fire: none processed twice, every lost
// answer ErrOutcomeUnknown with its key, bodies closed once.
func TestEdgeHoldsConcurrentLearning(t *testing.T) {
	l := newSLLedger()
	var n atomic.Int32
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(ZeroHashRequestIDHeader))
		if n.Add(1)%2 == 0 {
			hangUp(t, w)
			return
		}
		w.WriteHeader(201)
	})
	base := &http.Transport{MaxConnsPerHost: 2}
	defer base.CloseIdleConnections()
	tr := newTestTransport(t, base, WithZeroHashRequestID())
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	bodies := make([]*requestBody, 32)
	for i := range 32 {
		bodies[i] = &requestBody{Reader: strings.NewReader("{}")}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, srv.URL, bodies[i])
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	keys := l.keys()
	for err := range errs {
		if err != nil && (!errors.Is(err, ErrOutcomeUnknown) || keys[stampedFromError(err)] != 1) {
			t.Errorf("err %v", err)
		}
	}
	for k, c := range keys {
		if c != 1 {
			t.Errorf("key %s processed %d times", k, c)
		}
	}
	for i, b := range bodies {
		if b.closed.Load() != 1 {
			t.Errorf("body %d closed %d times", i, b.closed.Load())
		}
	}
}
