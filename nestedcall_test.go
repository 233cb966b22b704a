package saferetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
)

// auditingBase sends a request of its own (an audit call) through the same
// client, under the attempt's context, before it passes the attempt on.
type auditingBase struct {
	inner http.RoundTripper
	hc    *http.Client
	url   string
}

func (a *auditingBase) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/audit" {
		side, _ := http.NewRequestWithContext(req.Context(), http.MethodGet, a.url+"/audit", nil)
		if resp, err := a.hc.Do(side); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	return a.inner.RoundTrip(req)
}

// A request sent under an attempt's context, by a base that makes calls
// of its own through the Transport, is not counted as a resend of that
// attempt (which would turn the attempt's 201 into ErrOutcomeUnknown); a
// trace of the caller's still sees both.
func TestNestedCallIsNotTheAttemptsResend(t *testing.T) {
	for _, callerTrace := range []bool{false, true} {
		var creates, audits atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/transfers" {
				creates.Add(1)
				w.WriteHeader(http.StatusCreated)
				return
			}
			audits.Add(1)
		}))
		base := &auditingBase{inner: srv.Client().Transport, url: srv.URL}
		tr, err := saferetry.NewTransport(base, saferetry.WithZeroHashRequestID())
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: tr}
		base.hc = hc
		var callerConns atomic.Int64
		ctx := context.Background()
		if callerTrace {
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { callerConns.Add(1) }})
		}
		const posts = 3
		for i := range posts {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/transfers", strings.NewReader(`{"a":1}`))
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("caller trace %v, post %d: %v", callerTrace, i, err)
				continue
			}
			resp.Body.Close()
		}
		if creates.Load() != posts || audits.Load() != posts {
			t.Errorf("caller trace %v: creates %d, audits %d, want %d each", callerTrace, creates.Load(), audits.Load(), posts)
		}
		if want := map[bool]int64{false: 0, true: 2 * posts}[callerTrace]; callerConns.Load() != want {
			t.Errorf("caller trace %v: the caller's GotConn ran %d times, want %d", callerTrace, callerConns.Load(), want)
		}
		srv.Close()
	}
}
