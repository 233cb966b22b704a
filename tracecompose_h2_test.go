package saferetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Over net/http's bundled HTTP/2 (one multiplexed connection reused), with
// the trace riding in the call's own context or composed with a caller's:
// each attempt must count exactly one connection (a double count reads as
// "net/http resent it" and fails a zerohash POST with errBaseReplayed), and
// the response must carry the key.
func TestTraceComposedHTTP2OneConnPerAttempt(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.ProtoMajor != 2 {
			t.Errorf("proto %s", r.Proto)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	for _, mode := range []string{"none", "caller", "attempt-start", "base-after"} {
		for _, preset := range []string{"default", "zerohash"} {
			t.Run(mode+"/"+preset, func(t *testing.T) {
				counter := &tcCounter{}
				var base http.RoundTripper = srv.Client().Transport
				var mu sync.Mutex
				var attempts []Attempt
				opts := []Option{WithObserver(func(a Attempt) { mu.Lock(); attempts = append(attempts, a); mu.Unlock() })}
				if preset == "zerohash" {
					opts = append(opts, WithZeroHashRequestID())
				}
				base, opts, ctx := withTraceFrom(mode, base, counter, opts)
				tr := newTestTransport(t, base, opts...)
				var wg sync.WaitGroup
				for range 20 {
					wg.Go(func() {
						req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/x", strings.NewReader(`{"a":1}`))
						resp, err := tr.RoundTrip(req)
						if err != nil {
							t.Errorf("POST over h2: %v", err)
							return
						}
						if resp.ProtoMajor != 2 {
							t.Errorf("proto %s", resp.Proto)
						}
						if KeyFromResponse(resp) == "" && RequestIDFromResponse(resp) == "" {
							t.Errorf("no key from the response")
						}
						resp.Body.Close()
					})
				}
				wg.Wait()
				mu.Lock()
				defer mu.Unlock()
				for _, a := range attempts {
					if a.Replayed || a.Number != 1 || a.Err != nil {
						t.Errorf("attempt %+v", a)
					}
				}
				if mode != "none" && counter.gotConn.Load() != 20 {
					t.Errorf("caller GotConn %d, want 20", counter.gotConn.Load())
				}
			})
		}
	}
}
