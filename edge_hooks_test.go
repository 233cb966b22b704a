package saferetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// slHidden calls inner under a fresh context that keeps the caller's
// cancellation but none of its values, so no httptrace hook fires (a
// tracer, sidecar or tunnel client does this).
type slHidden struct{ inner http.RoundTripper }

func (h slHidden) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := context.AfterFunc(req.Context(), func() { cancel(context.Cause(req.Context())) })
	release := func() { stop(); cancel(nil) }
	resp, err := h.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &slReleaseOnClose{ReadCloser: resp.Body, release: release}
	return resp, nil
}

type slReleaseOnClose struct {
	io.ReadCloser
	release func()
}

func (b *slReleaseOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// slRouter sends requests for one host through a path that hides the
// trace hooks, and everything else through net/http directly: a base
// "that sometimes hides hooks" (a per-host tunnel, a service-mesh client
// for some upstreams).
type slRouter struct {
	hiddenHost string
	hidden     http.RoundTripper
	direct     http.RoundTripper
}

func (r slRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == r.hiddenHost {
		return r.hidden.RoundTrip(req)
	}
	return r.direct.RoundTrip(req)
}

// hooksSeen is one flag per Transport. A request to a host whose path
// fires the hooks teaches the Transport that "the base fires hooks"; from
// then on POSTs to the host whose path hides them get GetBody, net/http
// replays one after a reused connection fails (the server processed it and
// hung up), and the replay cannot be seen. The replay meets a 500: the
// README's rule turns a 5xx after a resend by net/http into
// ErrOutcomeUnknown, but the resend was invisible, so the caller is handed
// the 500 for a POST the server processed.
func TestEdgeLearnedHooksHideALaterReplay(t *testing.T) {
	for _, learn := range []bool{false, true} {
		name := "hooks never seen (control)"
		if learn {
			name = "hooks learned from another host"
		}
		t.Run(name, func(t *testing.T) {
			l := newSLLedger()
			var mu sync.Mutex
			posts := 0
			hiddenSrv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.Method != http.MethodPost {
					io.WriteString(w, "warm")
					return
				}
				mu.Lock()
				posts++
				n := posts
				mu.Unlock()
				if n == 1 {
					l.process(r.Header.Get(DefaultRequestIDHeader))
					hangUp(t, w) // processed, answer lost
					return
				}
				http.Error(w, "<html><title>500 Internal Server Error</title></html>", http.StatusInternalServerError)
			})
			directSrv := slServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			hu, _ := url.Parse(hiddenSrv.URL)
			inner := &http.Transport{MaxConnsPerHost: 1}
			defer inner.CloseIdleConnections()
			direct := &http.Transport{}
			defer direct.CloseIdleConnections()
			tr := newTestTransport(t, slRouter{hiddenHost: hu.Host, hidden: slHidden{inner}, direct: direct})
			hc := &http.Client{Transport: tr}

			if learn {
				resp, err := hc.Get(directSrv.URL)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			// A keep-alive connection to the hidden host, idle, for the
			// POST to reuse.
			warm, err := hc.Get(hiddenSrv.URL)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, warm.Body)
			warm.Body.Close()

			resp, err := hc.Post(hiddenSrv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
			slWantUnknown(t, l, resp, err)
		})
	}
}

// slFailover sends to a primary endpoint with net/http (which fires
// GetConn, then fails to dial) and, when the primary is refused, to a
// secondary endpoint through a path that hides the hooks. The request is
// written by the second path; the "unsent" proof (GetConn, no GotConn,
// an error of a pre-connection kind) then rests on the error alone, and a
// cancellation or an attempt timeout counts as pre-connection.
type slFailover struct {
	primary, secondary string // host:port
	direct             *http.Transport
}

func (f *slFailover) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	clone := func(host string) *http.Request {
		r := req.Clone(req.Context())
		r.URL.Host, r.Host = host, ""
		r.Body, r.GetBody, r.ContentLength = nil, nil, 0
		if len(body) > 0 {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(string(body))), int64(len(body))
		}
		return r
	}
	resp, err := f.direct.RoundTrip(clone(f.primary))
	if err == nil {
		return resp, nil
	}
	return slHidden{f.direct}.RoundTrip(clone(f.secondary))
}

// The caller cancels while the secondary holds the POST it processed: the
// error is a plain context.Canceled, not ErrOutcomeUnknown.
func TestEdgeFailoverCancelAfterProcessing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		opts   []Option
	}{
		{"zerohash", ZeroHashRequestIDHeader, []Option{WithZeroHashRequestID()}},
		{"default header", DefaultRequestIDHeader, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newSLLedger()
			held := make(chan struct{}, 4)
			release := make(chan struct{})
			secondary := slServer(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				l.process(r.Header.Get(tc.header))
				held <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			defer close(release)
			su, _ := url.Parse(secondary.URL)
			pu, _ := url.Parse(slDeadURL(t))
			direct := &http.Transport{}
			defer direct.CloseIdleConnections()
			tr := newTestTransport(t, &slFailover{primary: pu.Host, secondary: su.Host, direct: direct}, tc.opts...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+pu.Host+"/transfers", strings.NewReader(`{"amount":"20.10"}`))
			done := make(chan struct {
				resp *http.Response
				err  error
			}, 1)
			go func() {
				resp, err := tr.RoundTrip(req)
				done <- struct {
					resp *http.Response
					err  error
				}{resp, err}
			}()
			receive(t, held, "the secondary holding the POST")
			cancel()
			got := receive(t, done, "the call")
			slWantUnknown(t, l, got.resp, got.err)
		})
	}
}

// The same base under the zerohash preset with an attempt timeout: the
// timed-out attempt reads as "never sent", so the POST, which the server
// does not deduplicate, is sent again and processed twice.
func TestEdgeFailoverAttemptTimeoutResends(t *testing.T) {
	l := newSLLedger()
	release := make(chan struct{})
	secondary := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get(ZeroHashRequestIDHeader))
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	su, _ := url.Parse(secondary.URL)
	pu, _ := url.Parse(slDeadURL(t))
	direct := &http.Transport{}
	defer direct.CloseIdleConnections()
	tr := newTestTransport(t, &slFailover{primary: pu.Host, secondary: su.Host, direct: direct},
		WithZeroHashRequestID(), WithAttemptTimeout(promptTimeout), WithMaxRetries(1))
	req, _ := http.NewRequest(http.MethodPost, "http://"+pu.Host+"/transfers", strings.NewReader(`{"amount":"20.10"}`))
	resp, err := tr.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, n := range l.byKey {
		if n > 1 {
			t.Fatalf("the server processed the POST %d times under key %s (err %v); zerohash does not deduplicate", n, key, err)
		}
	}
	if l.total == 1 && !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("processed once, err %v, want ErrOutcomeUnknown", err)
	}
}

// A base that calls net/http under a context of its own (slHidden, the
// kind README names) answers with resp.Request set to its own copy of the
// request, which carries neither the call nor, for a header other than the
// three presets', a header keyOfRequest looks for. KeyFromResponse(resp) is then
// "", and Client.Do, which needs it to report a 2xx whose body was cut
// off, returns a plain decoding error for an invoice that was created.
func TestEdgeKeyOfResponseThroughContextSwappingBase(t *testing.T) {
	l := newSLLedger()
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get("X-Op-Id"))
		conn, bufrw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(bufrw, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"id\":\"inv_1\",")
		bufrw.Flush()
	})
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	client, err := NewClient(srv.URL, WithRequestIDHeader("X-Op-Id"), WithServerDeduplication(),
		WithHTTPClient(&http.Client{Transport: slHidden{inner}}), fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ ID string }
	resp, err := client.DoJSON(context.Background(), http.MethodPost, "invoices", map[string]int{"n": 1}, &out)
	if l.count() != 1 {
		t.Fatalf("setup: processed %d", l.count())
	}
	if got := stampedFromResponse(resp); got != l.only() {
		t.Errorf("stampedFromResponse(resp) = %q, want %q", got, l.only())
	}
	if !errors.Is(err, ErrOutcomeUnknown) || stampedFromError(err) != l.only() {
		t.Fatalf("the invoice was created under %q; DoJSON returned %v (ErrOutcomeUnknown=%v, KeyFromError=%q)",
			l.only(), err, errors.Is(err, ErrOutcomeUnknown), stampedFromError(err))
	}
}

// The same base and header: the POST is processed and answered 303; the
// GET that follows finds no key through the 303's Request (the base's
// copy), so its refused dial is reported without the key (it matches
// ErrOutcomeUnknown only because the hook-less base fails closed), where
// TestConfigSeeOtherAfterProcessedPOST (net/http as the base) carries the
// POST's key.
func TestEdgeSeeOtherThroughContextSwappingBase(t *testing.T) {
	l := newSLLedger()
	dead := slDeadURL(t)
	srv := slServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		l.process(r.Header.Get("X-Op-Id"))
		http.Redirect(w, r, dead+"/invoices/1", http.StatusSeeOther)
	})
	inner := &http.Transport{}
	defer inner.CloseIdleConnections()
	hc, err := Wrap(&http.Client{Transport: slHidden{inner}}, WithRequestIDHeader("X-Op-Id"), WithServerDeduplication(), fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(srv.URL+"/invoices", "application/json", strings.NewReader(`{"n":1}`))
	slWantUnknown(t, l, resp, err)
}
