package saferetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// trace is what one attempt did on the wire, as net/http reports it.
type trace struct {
	conns    int  // connections obtained; more than one means net/http replayed the request
	wrote    bool // request headers were written: the server may have the request
	replayed bool
}

// attemptTransport runs one attempt of a call over the base transport. It
// watches the wire through httptrace, so the policy knows whether the
// request may have left, and bounds the attempt with the attempt timeout.
// It does not implement CloseIdleConnections on purpose: go-retryablehttp
// calls that after a failure, and the base transport's pool is shared.
type attemptTransport struct{ c *call }

func (a attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := a.c
	c.attempt++
	req, err := c.authenticate(req)
	if err != nil {
		return nil, err
	}
	w := &wireWatch{}
	ctx := httptrace.WithClientTrace(req.Context(), w.clientTrace())
	timeout := c.t.cfg.attemptTimeout
	if timeout <= 0 {
		resp, err := c.t.base.RoundTrip(req.WithContext(ctx))
		c.observe(w.result())
		return resp, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(timeout, func() { cancel(ErrAttemptTimeout) })
	resp, err := c.t.base.RoundTrip(req.WithContext(ctx))
	c.observe(w.result())
	if !timer.Stop() && req.Context().Err() == nil {
		// The attempt timed out, even if headers arrived at the last moment.
		if resp != nil {
			drainAndClose(resp.Body)
		}
		cancel(ErrAttemptTimeout)
		return nil, ErrAttemptTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// authenticate gives one attempt its credentials, fresh ones every time,
// and only when it goes to the API's own host.
func (c *call) authenticate(req *http.Request) (*http.Request, error) {
	if s := c.t.cfg.signer; s != nil && s.applies(req.URL) {
		return s.sign(req)
	}
	if a := c.t.auth; a != nil && a.applies(req.URL) {
		token, err := a.token()
		if err != nil {
			return nil, err
		}
		c.token = token
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// observe records what the latest attempt did on the wire.
func (c *call) observe(t trace) {
	c.last = t
	c.maybeSent = c.maybeSent || t.wrote
	// A replay means an earlier send of this attempt may be in process.
	c.uncertain = c.uncertain || t.replayed
}

// wireWatch collects httptrace events; net/http may call them from its
// own goroutines, hence the lock.
type wireWatch struct {
	mu    sync.Mutex
	conns int
	wrote bool
}

func (w *wireWatch) clientTrace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) {
			w.mu.Lock()
			w.conns++
			w.mu.Unlock()
		},
		WroteHeaders: func() {
			w.mu.Lock()
			w.wrote = true
			w.mu.Unlock()
		},
	}
}

func (w *wireWatch) result() trace {
	w.mu.Lock()
	defer w.mu.Unlock()
	return trace{conns: w.conns, wrote: w.wrote, replayed: w.conns > 1}
}

// cancelOnClose releases the attempt's context once the caller is done
// with the body; until then the body streams under the caller's context
// alone, so the attempt timeout cannot cut it off.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

func logAttempt(ctx context.Context, l *slog.Logger, a Attempt) {
	level := slog.LevelDebug
	if a.Err != nil || a.StatusCode >= 400 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", a.Method), slog.String("url", a.URL),
		slog.String("key", a.Key), slog.Int("attempt", a.Number),
		slog.Int("status", a.StatusCode), slog.Bool("sent", a.Sent),
		slog.Bool("retry", a.Retry), slog.Duration("wait", a.Wait),
	}
	if a.Code != "" {
		attrs = append(attrs, slog.String("code", a.Code))
	}
	if a.Err != nil {
		attrs = append(attrs, slog.String("error", a.Err.Error()))
	}
	if a.Replayed {
		attrs = append(attrs, slog.Bool("replayed", true))
	}
	l.LogAttrs(ctx, level, "saferetry attempt", attrs...)
}
