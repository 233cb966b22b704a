package saferetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// trace is what one attempt did on the wire, as net/http reports it.
type trace struct {
	handed    bool  // the base transport got the request
	askedConn bool  // net/http asked for a connection: its trace hooks are live
	conns     int32 // connections obtained; more than one means net/http replayed the request
}

// replayed: the base sent the request more than once within the attempt.
func (t trace) replayed() bool { return t.conns > 1 }

// send runs one attempt over the base transport, with fresh credentials
// and, when set, the attempt timeout. What it did on the wire is in
// c.last afterwards.
func (c *call) send(req *http.Request) (*http.Response, error) {
	c.attempt++
	c.watch.reset()
	c.last = trace{} // nothing sent yet: the last attempt's record must not stand in
	// A one-shot body is spent by any attempt that tries to send it (a
	// signature reads it whole); one that never reached the base
	// transport is closed by closeUnsentBody.
	c.bodySpent = c.bodySpent || c.body.oneShot
	if err := c.ctx.Err(); err != nil {
		c.dropBody(req)
		return nil, context.Cause(c.ctx)
	}
	authed, err := c.authenticate(req)
	if err != nil {
		c.dropBody(req)
		return nil, err
	}
	req = authed
	c.bodyHanded = c.bodyHanded || c.body.oneShot
	timeout := c.t.cfg.attemptTimeout
	if timeout <= 0 {
		return c.roundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(timeout, func() { cancel(ErrAttemptTimeout) })
	resp, err := c.roundTrip(req.WithContext(ctx))
	if !timer.Stop() && c.ctx.Err() == nil {
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

// errNoAnswer: the base transport returned neither a response nor an
// error, which breaks the RoundTripper contract; the request may have
// been sent.
var errNoAnswer = errors.New("saferetry: the base transport returned neither a response nor an error")

// roundTrip hands req to the base transport, records what it did on the
// wire, and holds the base to the RoundTripper contract: a response or an
// error, never both nor neither (a response that comes with an error is
// closed and dropped), a response with a body and with its request.
func (c *call) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.t.base.RoundTrip(req)
	c.observe(c.watch.result())
	switch {
	case err != nil:
		if resp != nil {
			drainAndClose(resp.Body)
		}
		return nil, err
	case resp == nil:
		return nil, errNoAnswer
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	return withRequest(resp, req), nil
}

// dropBody closes the body of an attempt that will not be sent; a
// one-shot body is left to closeUnsentBody.
func (c *call) dropBody(req *http.Request) {
	if !c.body.oneShot {
		closeBody(req)
	}
}

// withRequest makes sure resp names the request it answers, carrying the
// call, which is how KeyFromResponse finds the key; net/http sets it, other
// transports may not, or may set one whose context they replaced.
func withRequest(resp *http.Response, req *http.Request) *http.Response {
	if resp.Request == nil || resp.Request.Context().Value(callInfoKey{}) == nil {
		resp.Request = req // a base that swapped the context would hide the key
	}
	return resp
}

// authenticate gives one attempt its credentials, fresh ones every time,
// and only when it goes to the API's own host.
func (c *call) authenticate(req *http.Request) (*http.Request, error) {
	if s := c.t.cfg.signer; s != nil && s.applies(req.URL) {
		return s.sign(req)
	}
	if a := c.t.auth; a != nil && a.applies(req.URL) {
		token, err := a.token(req.Context())
		if err != nil {
			return nil, err
		}
		c.token = token
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// observe records what the latest attempt, which the base transport got,
// did on the wire.
func (c *call) observe(t trace) {
	c.last = t
	if t.askedConn && !c.t.hooksFire(c.hooksKey) {
		c.t.hooksSeen.Store(c.hooksKey, true)
	}
}

// wireWatch collects the httptrace events of the current attempt; net/http
// may call them from its own goroutines, hence the atomics.
type wireWatch struct {
	askedConn atomic.Bool
	conns     atomic.Int32
}

// hook points trace at w; the trace lives as long as the call.
func (w *wireWatch) hook(trace *httptrace.ClientTrace) {
	trace.GetConn = func(string) { w.askedConn.Store(true) }
	trace.GotConn = func(httptrace.GotConnInfo) { w.conns.Add(1) }
}

func (w *wireWatch) reset() {
	w.askedConn.Store(false)
	w.conns.Store(0)
}

// result is what the attempt did. conns is read first: net/http asks
// for a connection before it gets one, so a connection counted was asked
// for.
func (w *wireWatch) result() trace {
	conns := w.conns.Load()
	return trace{handed: true, askedConn: w.askedConn.Load(), conns: conns}
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
		slog.Int("attempt", a.Number),
		slog.Int("status", a.StatusCode), slog.Bool("sent", a.Sent),
		slog.Bool("retry", a.Retry), slog.Duration("wait", a.Wait),
	}
	attrs = appendIDAttrs(attrs, a.Key, a.RequestID)
	if a.Code != "" {
		attrs = append(attrs, slog.String("code", a.Code))
	}
	if a.Err != nil {
		attrs = append(attrs, slog.String("error", a.Err.Error()))
	}
	if a.Replayed {
		attrs = append(attrs, slog.Bool("replayed", true))
	}
	if a.Reason != "" {
		attrs = append(attrs, slog.String("reason", a.Reason))
	}
	if a.BudgetExhausted {
		attrs = append(attrs, slog.Bool("budget_exhausted", true))
	}
	l.LogAttrs(ctx, level, "saferetry attempt", attrs...)
}

// appendIDAttrs adds the key and the request id to a log record's
// attributes, each only when set.
func appendIDAttrs(attrs []slog.Attr, key, requestID string) []slog.Attr {
	if key != "" {
		attrs = append(attrs, slog.String("key", key))
	}
	if requestID != "" {
		attrs = append(attrs, slog.String("request_id", requestID))
	}
	return attrs
}

// logFailure writes the record of a logical request that ended in an
// error: its retries are over, or it was never sent.
func (c *call) logFailure(l *slog.Logger, err error) {
	key, requestID := c.reportedIDs()
	attrs := []slog.Attr{
		slog.String("method", c.req.Method), slog.String("url", redactURL(c.req)),
		slog.Int("attempts", int(c.attempt)), slog.Bool("outcome_unknown", errors.Is(err, ErrOutcomeUnknown)),
	}
	attrs = appendIDAttrs(attrs, key, requestID)
	if c.budgetOut {
		attrs = append(attrs, slog.Bool("budget_exhausted", true))
	}
	attrs = append(attrs, slog.String("error", err.Error()))
	l.LogAttrs(c.ctx, slog.LevelWarn, "saferetry request failed", attrs...)
}

// logCreate writes the record of a Create's end: Debug when created,
// Info when recovered or reposted (a lost answer or a failed POST was
// overcome), Warn when it failed definitely, Error when its outcome is
// unknown (someone must reconcile under the key).
func logCreate(ctx context.Context, l *slog.Logger, d CreateDone) {
	level := slog.LevelDebug
	switch d.Outcome {
	case "recovered", "reposted":
		level = slog.LevelInfo
	case "failed":
		level = slog.LevelWarn
	case "unknown":
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("api", d.API), slog.String("key", d.Key), slog.String("outcome", d.Outcome),
		slog.Int("posts", d.Posts), slog.Int("lookups", d.Lookups),
	}
	if d.BudgetExhausted {
		attrs = append(attrs, slog.Bool("budget_exhausted", true))
	}
	if d.Err != nil {
		attrs = append(attrs, slog.String("error", d.Err.Error()))
	}
	l.LogAttrs(ctx, level, "saferetry create", attrs...)
}
