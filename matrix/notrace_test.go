package matrix

import (
	"context"
	"io"
	"net/http"
)

// traceless is a base RoundTripper of the kind services stack under
// their clients (a tracer, a test double, a proxy client): it calls the
// transport it wraps with a fresh context that keeps the caller's
// cancellation but none of its values, so no httptrace hook the SDK
// installed ever fires.
type traceless struct{ inner *http.Transport }

func (t traceless) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := context.AfterFunc(req.Context(), func() { cancel(context.Cause(req.Context())) })
	release := func() {
		stop()
		cancel(nil)
	}
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: release}
	return resp, nil
}

func (t traceless) CloseIdleConnections() { t.inner.CloseIdleConnections() }

// releaseOnClose keeps the fresh context alive while the body is read.
type releaseOnClose struct {
	io.ReadCloser
	release func()
}

func (b *releaseOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}
