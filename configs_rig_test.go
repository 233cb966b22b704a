package saferetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// rigLedger counts, per key, how many times the server processed a
// write: the only truth that matters for exactly-once.
type rigLedger struct {
	mu    sync.Mutex
	byKey map[string]int
	order []string
}

func newRigLedger() *rigLedger { return &rigLedger{byKey: map[string]int{}} }

func (l *rigLedger) process(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[key]++
	l.order = append(l.order, key)
	return len(l.order)
}

func (l *rigLedger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.order)
}

func (l *rigLedger) keys() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.byKey))
	for k, v := range l.byKey {
		out[k] = v
	}
	return out
}

// onlyKey returns the single key the ledger saw, or "" when it saw none
// or several.
func (l *rigLedger) onlyKey() string {
	keys := l.keys()
	if len(keys) != 1 {
		return ""
	}
	for k := range keys {
		return k
	}
	return ""
}

// rigHangUp closes the client's connection without an answer, after
// the handler processed the request: the answer is lost.
func rigHangUp(t *testing.T, w http.ResponseWriter) {
	t.Helper()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// rigDeadURL is the URL of a loopback port nobody listens on: a dial
// there is refused at once.
func rigDeadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

type rigRoundTripFunc func(*http.Request) (*http.Response, error)

func (f rigRoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rigBody records how many times the caller's body was closed.
type rigBody struct {
	io.Reader
	mu     sync.Mutex
	closed int
	notify chan struct{} // if set, closed at the first Close
}

func (b *rigBody) Close() error {
	b.mu.Lock()
	b.closed++
	if b.closed == 1 && b.notify != nil {
		close(b.notify)
	}
	b.mu.Unlock()
	return nil
}

func (b *rigBody) closes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// rigFailover is a base RoundTripper of a common kind: send to the
// primary endpoint; when it cannot be reached, send to the secondary one
// through another client (here net/http under a context of its own, as a
// tunnel, sidecar or tracer client would: it reports no httptrace events).
type rigFailover struct {
	primary, secondary string // host:port
	transport          *http.Transport
}

func (f *rigFailover) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	try := func(host string, ctx context.Context) (*http.Response, error) {
		r := req.Clone(ctx)
		r.URL.Host, r.Host = host, ""
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		return f.transport.RoundTrip(r)
	}
	resp, err := try(f.primary, req.Context())
	if err == nil {
		return resp, nil
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		return nil, err
	}
	// The primary is down: the secondary, over its own client context.
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(req.Context(), cancel)
	resp, err = try(f.secondary, ctx)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	resp.Body = &rigReleaseOnClose{ReadCloser: resp.Body, release: func() { stop(); cancel() }}
	return resp, nil
}

type rigReleaseOnClose struct {
	io.ReadCloser
	release func()
}

func (b *rigReleaseOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func newRigServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// rigFallback is the other order: a first path that reports no
// httptrace events (an HTTP/3 or tunnel client, say) and, when it fails,
// net/http to a fallback endpoint, whose error is returned when it fails
// too.
type rigFallback struct {
	hookless, fallback string // host:port
	transport          *http.Transport
}

func (f *rigFallback) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	try := func(host string, ctx context.Context) (*http.Response, error) {
		r := req.Clone(ctx)
		r.URL.Host, r.Host = host, ""
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		return f.transport.RoundTrip(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(req.Context(), cancel)
	resp, err := try(f.hookless, ctx)
	if err == nil {
		resp.Body = &rigReleaseOnClose{ReadCloser: resp.Body, release: func() { stop(); cancel() }}
		return resp, nil
	}
	stop()
	cancel()
	return try(f.fallback, req.Context())
}
