package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
)

// library is one way of sending the same request.
type library struct {
	name   string
	client *http.Client
}

// waits overrides a library's backoff bounds; the zero value keeps the
// library's defaults. The retry count and policy are never changed.
type waits struct{ min, max time.Duration }

func newRaw(base http.RoundTripper) *http.Client {
	return &http.Client{Transport: base}
}

// newRetryable is go-retryablehttp as its README shows it under an
// http.Client: StandardClient, defaults, no logger.
func newRetryable(base http.RoundTripper, w waits) *http.Client {
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.HTTPClient = &http.Client{Transport: base}
	if w.min > 0 {
		rc.RetryWaitMin, rc.RetryWaitMax = w.min, w.max
	}
	return rc.StandardClient()
}

// newFailsafe is failsafe-go's HTTP retry policy (retries errors, 429 and
// most 5xx, 2 retries by default) as a RoundTripper.
//
// failsafe-go leaves the body of a response it retries open, so every
// retry on a status strands a connection: in the outage that is two new
// connections per logical request, until the file descriptors run out and
// the run crawls. The policy closes it before the retry, as a careful user
// would; on the happy path the hook never runs.
func newFailsafe(base http.RoundTripper, w waits) *http.Client {
	b := failsafehttp.NewRetryPolicyBuilder().OnRetryScheduled(closeRetried)
	if w.min > 0 {
		b = b.WithBackoff(w.min, w.max)
	}
	return &http.Client{Transport: failsafehttp.NewRoundTripper(base, b.Build())}
}

func newSafeRetry(base http.RoundTripper, w waits, opts ...saferetry.Option) *http.Client {
	if w.min > 0 {
		opts = append(opts, saferetry.WithBackoff(w.min, w.max))
	}
	c, err := saferetry.Wrap(&http.Client{Transport: base}, opts...)
	if err != nil {
		panic(err) // the options are fixed in this program: an error is a bug here
	}
	return c
}

// payload is a 1 KiB JSON document, the size of a typical invoice create.
var payload = func() []byte {
	const head, tail = `{"customer":"cus_0042","currency":"EUR","memo":"`, `"}`
	return []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
}()

// post sends one logical POST and returns its status, having drained and
// closed the body so the connection goes back to the pool. seq < 0 sends
// no bookkeeping header.
func post(ctx context.Context, c *http.Client, url string, seq int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if seq >= 0 {
		req.Header.Set(seqHeader, strconv.Itoa(seq))
	}
	resp, err := c.Do(req)
	if err != nil {
		closeExceeded(err)
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closeRetried drains and closes the response failsafe-go is about to
// retry. Closing it cancels nothing the retry needs: the requests here
// carry context.Background(), for which failsafe-go's cancel funcs are
// no-ops.
func closeRetried(e failsafe.ExecutionScheduledEvent[*http.Response]) {
	if resp := e.LastResult(); resp != nil && resp.Body != nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// closeExceeded closes the last response failsafe-go keeps in its
// ExceededError when the retries run out on a status; a caller who did not
// would leak the connection.
func closeExceeded(err error) {
	var ex retrypolicy.ExceededError
	if errors.As(err, &ex) {
		if resp, ok := ex.LastResult.(*http.Response); ok && resp != nil && resp.Body != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}
