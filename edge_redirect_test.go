package saferetry

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// slLedger counts, per key, the POSTs a server processed.
type slLedger struct {
	mu    sync.Mutex
	byKey map[string]int
	total int
}

func newSLLedger() *slLedger { return &slLedger{byKey: map[string]int{}} }

func (l *slLedger) process(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[key]++
	l.total++
}

// only returns the single key processed, "" if none or several.
func (l *slLedger) only() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byKey) != 1 {
		return ""
	}
	for k := range l.byKey {
		return k
	}
	return ""
}

func (l *slLedger) keys() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.byKey))
	for k, v := range l.byKey {
		out[k] = v
	}
	return out
}

func (l *slLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// slDeadURL is a loopback URL nobody listens on: a dial is refused.
func slDeadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func slServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// slWantUnknown fails unless err matches ErrOutcomeUnknown and carries the
// key the server processed (once).
func slWantUnknown(t *testing.T, l *slLedger, resp *http.Response, err error) {
	t.Helper()
	status := 0
	if resp != nil {
		status = resp.StatusCode
		resp.Body.Close()
	}
	if l.count() != 1 || l.only() == "" {
		t.Fatalf("setup: server processed %d POSTs (%v), want 1", l.count(), l.byKey)
	}
	if err == nil || !errors.Is(err, ErrOutcomeUnknown) || stampedFromError(err) != l.only() {
		t.Fatalf("the POST was processed under key %q, but the caller got status %d, err %v (ErrOutcomeUnknown=%v, KeyFromError=%q)",
			l.only(), status, err, errors.Is(err, ErrOutcomeUnknown), stampedFromError(err))
	}
}

// POST processed, 303 See Other to the created resource, whose GET is
// moved once more (307) to a host that is down. The first hop's GET
// reports under the POST's key (TestConfigSeeOtherAfterProcessedPOST); the
// second hop's GET finds the key through the first GET's response and
// takes it as its own key, without the origin: its dial failure is "never
// sent", and the caller is told the request never reached the server.
func TestEdgeSeeOtherThenTemporaryRedirectKeepsOutcome(t *testing.T) {
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusFound, http.StatusSeeOther} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			l := newSLLedger()
			dead := slDeadURL(t)
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				switch r.URL.Path {
				case "/invoices":
					l.process(r.Header.Get(DefaultRequestIDHeader))
					http.Redirect(w, r, "/invoices/1", http.StatusSeeOther)
				default:
					http.Redirect(w, r, dead+"/v2/invoices/1", code)
				}
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

// The same chain, ending at a live host: README says the default header is
// stamped on POST and PATCH only, yet the GET of the second hop leaves with
// the POST's Idempotency-Key (an IETF-draft server compares the key's
// fingerprint and answers 422 to a GET that reuses a POST's key).
func TestEdgeRedirectedGETCarriesNoKey(t *testing.T) {
	l := newSLLedger()
	var mu sync.Mutex
	var finalKeys []string
	final := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		finalKeys = append(finalKeys, r.Method+" "+r.Header.Get(DefaultRequestIDHeader))
		mu.Unlock()
		io.WriteString(w, `{"id":1}`)
	})
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/invoices":
			l.process(r.Header.Get(DefaultRequestIDHeader))
			http.Redirect(w, r, "/invoices/1", http.StatusSeeOther)
		default:
			http.Redirect(w, r, final.URL+"/v2/invoices/1", http.StatusTemporaryRedirect)
		}
	})
	hc, err := Wrap(&http.Client{}, fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(finalKeys) != 1 || finalKeys[0] != "GET " {
		t.Fatalf("the final GET arrived as %q; want one GET with no Idempotency-Key (the POST's key is %q)", finalKeys, l.only())
	}
}

// A key the caller set on the POST: http.Client copies the caller's
// headers onto the GET that follows a 303, so the GET arrives with the key
// in its header and the Transport takes it as the GET's own key, without
// the origin. When the GET fails before a connection, the caller is told
// "never sent" about a POST the server processed under its own key.
func TestEdgeSeeOtherWithCallerKeyKeepsOutcome(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		opts   []Option
	}{
		{"default header", DefaultRequestIDHeader, nil},
		{"Chift", ChiftRequestIDHeader, []Option{WithChift()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSLLedger()
			dead := slDeadURL(t)
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				l.process(r.Header.Get(tc.header))
				http.Redirect(w, r, dead+"/invoices/1", http.StatusSeeOther)
			})
			hc, err := Wrap(&http.Client{}, append([]Option{fastRetries}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/invoices", strings.NewReader(`{"n":1}`))
			req.Header.Set(tc.header, "invoice-F-2026-0042")
			resp, err := hc.Do(req)
			slWantUnknown(t, l, resp, err)
		})
	}
}

// The caller's CheckRedirect (kept by Wrap) refuses to follow, or
// net/http's default policy stops after 10 redirects: http.Client returns
// its own *url.Error with the CheckRedirect error. The POST was processed
// (it answered 303); the caller's error neither matches ErrOutcomeUnknown
// nor carries the key, which README's switch reads as "never reached the
// server".
func TestEdgeCheckRedirectErrorAfterProcessedPOST(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(*http.Request, []*http.Request) error
	}{
		{"refuses another host", func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != via[0].URL.Host {
				return errors.New("redirect to another host refused")
			}
			return nil
		}},
		{"net/http's default, a redirect loop", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSLLedger()
			other := slServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") })
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				switch {
				case r.Method == http.MethodPost:
					l.process(r.Header.Get(DefaultRequestIDHeader))
					if tc.check != nil {
						http.Redirect(w, r, other.URL+"/invoices/1", http.StatusSeeOther)
					} else {
						http.Redirect(w, r, "/invoices/1", http.StatusSeeOther)
					}
				default: // a misconfigured route that redirects to itself
					http.Redirect(w, r, "/invoices/1", http.StatusFound)
				}
			})
			hc, err := Wrap(&http.Client{CheckRedirect: tc.check}, fastRetries)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
			slWantUnknown(t, l, resp, err)
		})
	}
}

// POST processed, 303 to the created resource, whose GET meets a gateway
// that answers 503 on every attempt (or a 500). The README's own rule for
// an answer silent about the key after an attempt that may have been
// processed does not look at the redirect's origin: the caller gets a
// 503 response with no error, KeyFromResponse(resp) naming the POST's key.
func TestEdgeSeeOtherThenServerError(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			l := newSLLedger()
			srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.Method == http.MethodPost {
					l.process(r.Header.Get(DefaultRequestIDHeader))
					http.Redirect(w, r, "/invoices/1", http.StatusSeeOther)
					return
				}
				http.Error(w, "<html><title>upstream unavailable</title></html>", status)
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
