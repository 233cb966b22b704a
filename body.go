package saferetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// noReplayBody is an empty body that is not http.NoBody: net/http can
// neither rewind it nor treat the request as bodiless, so it never resends
// the request on its own. On HTTP/1.1 it leaves as an empty chunked body.
type noReplayBody struct{}

func (noReplayBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noReplayBody) Close() error             { return nil }

// closeOnce passes on the first Close only: a one-shot body may be closed
// by a signer that read it and again by the base transport.
type closeOnce struct {
	c    io.Closer
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.c.Close() })
	return c.err
}

// bodySource yields the request body for every attempt.
type bodySource struct {
	get     func() (io.ReadCloser, error) // nil: no body
	length  int64
	callers bool          // get is the caller's GetBody: its bodies may hold resources
	oneShot bool          // too large to buffer: one attempt only
	once    io.ReadCloser // the body of that one attempt
	// first is the first attempt's body over the buffered bytes, made
	// with them; nil with GetBody.
	first io.ReadCloser
}

// newBodySource makes the body of req repeatable: through GetBody when the
// request has it, else by buffering up to limit bytes. A larger body is
// sent once, as it streams, and never retried. req.Body is closed exactly
// once, here or by the base transport.
func newBodySource(ctx context.Context, req *http.Request, limit int64) (bodySource, error) {
	if req.Body == nil && req.ContentLength > 0 {
		// net/http refuses it; sent, it would be an empty write.
		return bodySource{}, &bodyLengthError{declared: req.ContentLength, hint: " (the request has no body)"}
	}
	if req.Body == nil || req.Body == http.NoBody {
		return bodySource{}, nil
	}
	if req.GetBody != nil {
		// Every attempt's body comes from GetBody, the first one's too:
		// req.Body may have been read by an earlier RoundTrip of the same
		// request (TestConfigHoldsSameRequestTwice).
		req.Body.Close()
		return bodySource{get: req.GetBody, length: req.ContentLength, callers: true}, nil
	}
	buf, err := readWithin(ctx, req.Body, limit+1)
	if err != nil {
		req.Body.Close() // also stops a read the context cut short
		return bodySource{}, fmt.Errorf("reading request body: %w", err)
	}
	if n := int64(len(buf)); req.ContentLength > 0 && ((n < req.ContentLength && n <= limit) || n > req.ContentLength) {
		// net/http refuses such a request as it writes it; sent with the
		// length of what was read, it would carry another payload.
		req.Body.Close()
		return bodySource{}, &bodyLengthError{declared: req.ContentLength, read: n, atLeast: n > limit, hint: " (was it read in part, or sent, before, or is ContentLength wrong?)"}
	}
	if int64(len(buf)) > limit {
		once := &replayBody{Reader: io.MultiReader(bytes.NewReader(buf), req.Body), closer: &closeOnce{c: req.Body}}
		return bodySource{oneShot: true, once: once, length: req.ContentLength}, nil
	}
	req.Body.Close()
	// io.NopCloser over a *bytes.Reader: net/http knows it is in memory
	// and writes it with the headers (a type of our own would make it
	// flush the headers first, one more write per request).
	get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	first, _ := get()
	return bodySource{get: get, length: int64(len(buf)), first: first}, nil
}

// ErrBodyLength matches the error of a request whose body does not hold
// the number of bytes its ContentLength declares, found before anything
// is sent: a body without GetBody, which the Transport buffers (a reader
// read in part before, a request sent again after its body was read, a
// ContentLength set by hand), a nil body with a ContentLength, or, under
// WithZeroHashAuth, any attempt's body, which is read whole to be signed.
// Otherwise a body from GetBody goes out as GetBody gives it, and net/http
// fails one of another length while writing it.
var ErrBodyLength = errors.New("saferetry: request body length differs from ContentLength")

type bodyLengthError struct {
	declared, read int64
	atLeast        bool   // read stopped at the buffering limit: the body is longer still
	hint           string // what may have caused it, for the message
}

func (e *bodyLengthError) Error() string {
	more := ""
	if e.atLeast {
		more = " at least"
	}
	return fmt.Sprintf("%v: ContentLength is %d bytes, the body holds%s %d%s", ErrBodyLength, e.declared, more, e.read, e.hint)
}

func (e *bodyLengthError) Unwrap() error { return ErrBodyLength }

// heldBodies keeps the bodies the caller's GetBody handed out for one
// call. net/http's HTTP/2 transport rewinds a body through GetBody to
// resend a request and, when that resend is then given up (the connection
// is unusable, the context ends), never closes the new body. At the end of
// the call every body nobody started reading is closed; the others belong
// to a RoundTrip, which closes them. Each is closed once at most.
type heldBodies struct {
	mu     sync.Mutex
	bodies []*heldBody
}

type heldBody struct {
	io.ReadCloser
	read  atomic.Bool
	close closeOnce
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.ReadCloser.Read(p)
}

func (b *heldBody) Close() error { return b.close.Close() }

// heldRef is a call's heldBodies, made the first time net/http asks for
// a body to resend: most calls never do, and carry one pointer instead.
type heldRef struct{ p atomic.Pointer[heldBodies] }

func (r *heldRef) get(getBody func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	h := r.p.Load()
	if h == nil {
		r.p.CompareAndSwap(nil, &heldBodies{})
		h = r.p.Load()
	}
	return h.get(getBody)
}

func (r *heldRef) closeUnread() {
	if h := r.p.Load(); h != nil {
		h.closeUnread()
	}
}

// get calls the caller's GetBody and keeps what it returns.
func (h *heldBodies) get(getBody func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	rc, err := getBody()
	if err != nil || rc == nil || rc == http.NoBody {
		return rc, err
	}
	b := &heldBody{ReadCloser: rc}
	b.close.c = rc
	h.mu.Lock()
	h.bodies = append(h.bodies, b)
	h.mu.Unlock()
	return b, nil
}

// closeUnread closes the bodies that were handed out and never read.
func (h *heldBodies) closeUnread() {
	h.mu.Lock()
	bodies := h.bodies
	h.bodies = nil
	h.mu.Unlock()
	for _, b := range bodies {
		if !b.read.Load() {
			b.Close()
		}
	}
}

// readWithin reads up to limit bytes of r (all of it when limit < 0). A
// streamed body may stall as long as its writer likes, so under a context
// that can end it is read on another goroutine, and a caller whose context
// ends is released at once with the context's error. The caller then
// closes r, which stops the read, as net/http does when it cancels a
// request.
func readWithin(ctx context.Context, r io.Reader, limit int64) ([]byte, error) {
	var src io.Reader = r
	if limit >= 0 {
		src = io.LimitReader(r, limit)
	}
	if ctx.Done() == nil {
		return io.ReadAll(src)
	}
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, err := io.ReadAll(src)
		done <- result{body, err}
	}()
	select {
	case res := <-done:
		return res.body, res.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
