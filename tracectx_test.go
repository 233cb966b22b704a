package saferetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
)

// The call carries its trace in its own context when it can; httptrace
// must find it there exactly as it would through WithClientTrace.
func TestTraceKeyIsHttptraces(t *testing.T) {
	if traceKey == nil {
		t.Fatal("traceKey not learned: every request would allocate a context for its trace")
	}
	c := &call{ctx: context.Background()}
	c.callCtx = callContext{Context: c.ctx, c: c}
	ctx := c.traceContext()
	if ctx != context.Context(&c.callCtx) {
		t.Fatalf("traceContext wrapped a context that holds no trace: %T", ctx)
	}
	if got := httptrace.ContextClientTrace(ctx); got != &c.trace {
		t.Fatalf("httptrace found %p, want the call's trace %p", got, &c.trace)
	}
	if got := ctx.Value(callInfoKey{}); got != c {
		t.Fatalf("callInfoKey answered %v", got)
	}
}

// Both ways of carrying the trace, with and without a trace of the
// caller's own: net/http reports the connection to the call's wire watch
// and, when there is one, to the caller's trace as well.
func TestTraceReachesCallAndCaller(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	tr, err := NewTransport(srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	for _, callerTrace := range []bool{false, true} {
		var callerConns atomic.Int32
		ctx := context.Background()
		if callerTrace {
			ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				GotConn: func(httptrace.GotConnInfo) { callerConns.Add(1) },
			})
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader(`{}`))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c, _ := resp.Request.Context().Value(callInfoKey{}).(*call)
		if c == nil {
			t.Fatal("the response's request does not carry the call")
		}
		if !c.last.askedConn || c.last.conns != 1 {
			t.Errorf("caller trace %v: the call saw askedConn=%v conns=%d, want true and 1", callerTrace, c.last.askedConn, c.last.conns)
		}
		if want := map[bool]int32{false: 0, true: 1}[callerTrace]; callerConns.Load() != want {
			t.Errorf("caller trace %v: the caller's GotConn ran %d times, want %d", callerTrace, callerConns.Load(), want)
		}
		if got := c.ownsTrace; got == callerTrace {
			t.Errorf("caller trace %v: trace carried by the call's own context = %v", callerTrace, got)
		}
	}
}
