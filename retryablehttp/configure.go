package saferetryablehttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
)

// Configure makes rc send every request through a saferetry Transport
// (built from opts, as saferetry.Wrap builds it) and leaves every retry to
// that Transport, so that a logical request, one call of rc.Do, rc.Post,
// rc.Get..., carries one idempotency key on all its attempts and is retried
// only when saferetry's policy says it is safe. Call sites do not change.
// Call Configure before rc is used: it writes rc's fields.
//
// On success Configure sets four fields of rc:
//   - HTTPClient: a copy of rc.HTTPClient made by saferetry.Wrap (nil:
//     cleanhttp.DefaultPooledClient, what rc.Do would have used). Its
//     Timeout moves into the Transport and bounds the whole logical
//     request; the http.Client rc held is not modified.
//   - RetryMax: 0, and CheckRetry: a policy that never retries. rc makes
//     one try per call; the retries, their number (saferetry.WithMaxRetries),
//     their waits (saferetry.WithBackoff), Retry-After and the retry budget
//     are the Transport's.
//   - ErrorHandler: one that closes the body of any response that came with
//     the error and returns the error as http.Client.Do gave it, a *url.Error
//     around the Transport's error, instead of a "giving up after N
//     attempt(s)" error. errors.Is(err, saferetry.ErrOutcomeUnknown),
//     saferetry.KeyFromError(err) and errors.As(err, &apiErr) work as with
//     a client from saferetry.Wrap.
//
// Any response, whatever its status, comes back from rc.Do as the
// Transport returned it, body readable (retryablehttp's policy would have
// retried a 500 and then dropped it). RetryWaitMin, RetryWaitMax and Backoff
// are left as they were and never consulted; Logger, RequestLogHook and
// ResponseLogHook are kept and now run once per logical request, not once
// per attempt (saferetry.WithLogger and saferetry.WithObserver see each
// attempt). A Request's ResponseHandler still runs; an error it returns is
// handed back, not retried.
//
// Configure refuses rc, returning an error and leaving rc as it was, when
// one of these fields holds something other than what
// retryablehttp.NewClient puts there (or its zero value), because
// Configure would replace or ignore it: CheckRetry (accepted: nil,
// retryablehttp.DefaultRetryPolicy), Backoff (nil, DefaultBackoff),
// ErrorHandler (nil), PrepareRetry (nil), RetryMax (0, 4), RetryWaitMin and
// RetryWaitMax (zero, or 1s and 30s). Choose retries and waits with
// saferetry's options instead; the error names each field. It also refuses
// a nil rc, an rc that Configure already configured, an rc.HTTPClient
// whose transport is a *retryablehttp.RoundTripper or a *saferetry.Transport
// (the retries would multiply), and invalid opts, with saferetry.Wrap's
// error.
func Configure(rc *retryablehttp.Client, opts ...saferetry.Option) error {
	if rc == nil {
		return errors.New("saferetry: Configure: nil *retryablehttp.Client")
	}
	if err := errors.Join(refusals(rc)...); err != nil {
		return err
	}
	base := rc.HTTPClient
	if base == nil {
		base = cleanhttp.DefaultPooledClient()
	}
	hc, err := saferetry.Wrap(base, opts...)
	if err != nil {
		return err
	}
	rc.HTTPClient = hc
	rc.RetryMax = 0
	rc.CheckRetry = neverRetry
	rc.ErrorHandler = returnError
	return nil
}

// refusals lists what in rc Configure would silently replace or ignore.
func refusals(rc *retryablehttp.Client) []error {
	if rc.CheckRetry != nil && sameFunc(rc.CheckRetry, neverRetry) {
		return []error{errors.New("saferetry: Configure: this client was configured already; a second Transport would multiply the retries")}
	}
	stock := retryablehttp.NewClient()
	var errs []error
	if rc.CheckRetry != nil && !sameFunc(rc.CheckRetry, retryablehttp.DefaultRetryPolicy) {
		errs = append(errs, errors.New("saferetry: Configure: rc.CheckRetry is a policy of your own, which Configure would replace: the saferetry Transport decides what is retried; set CheckRetry to nil or retryablehttp.DefaultRetryPolicy"))
	}
	if rc.Backoff != nil && !sameFunc(rc.Backoff, retryablehttp.DefaultBackoff) {
		errs = append(errs, errors.New("saferetry: Configure: rc.Backoff is a policy of your own, which would never be called: the saferetry Transport waits between its attempts; set Backoff to nil or retryablehttp.DefaultBackoff and bound the waits with saferetry.WithBackoff"))
	}
	if rc.ErrorHandler != nil {
		errs = append(errs, errors.New("saferetry: Configure: rc.ErrorHandler is set, and Configure would replace it by one that returns the Transport's error as it is; set ErrorHandler to nil"))
	}
	if rc.PrepareRetry != nil {
		errs = append(errs, errors.New("saferetry: Configure: rc.PrepareRetry is set and would never be called, as rc makes one try per call: sign each attempt in the Transport (saferetry.WithZeroHashAuth, saferetry.WithChiftAuth) or in a RoundTripper under it"))
	}
	if rc.RetryMax != 0 && rc.RetryMax != stock.RetryMax {
		errs = append(errs, fmt.Errorf("saferetry: Configure: rc.RetryMax is %d, and Configure sets it to 0: leave retryablehttp's default (%d) or 0, and choose the Transport's retries with saferetry.WithMaxRetries", rc.RetryMax, stock.RetryMax))
	}
	if !(rc.RetryWaitMin == 0 && rc.RetryWaitMax == 0) && !(rc.RetryWaitMin == stock.RetryWaitMin && rc.RetryWaitMax == stock.RetryWaitMax) {
		errs = append(errs, fmt.Errorf("saferetry: Configure: rc.RetryWaitMin and rc.RetryWaitMax are %v and %v, which would never be used: leave retryablehttp's defaults (%v and %v) or zero, and bound the waits with saferetry.WithBackoff",
			rc.RetryWaitMin, rc.RetryWaitMax, stock.RetryWaitMin, stock.RetryWaitMax))
	}
	if rc.HTTPClient != nil {
		if _, ok := rc.HTTPClient.Transport.(*retryablehttp.RoundTripper); ok {
			errs = append(errs, errors.New("saferetry: Configure: rc.HTTPClient sends through a *retryablehttp.RoundTripper, whose retries would multiply the Transport's, each with a new key; give rc an http.Client over a plain transport"))
		}
	}
	return errs
}

// sameFunc reports whether the func values f and g are the same top-level
// function: reflect gives their code pointers, which Go does not let
// compare with ==.
func sameFunc(f, g any) bool {
	return reflect.ValueOf(f).Pointer() == reflect.ValueOf(g).Pointer()
}

// neverRetry is Configure's CheckRetry. The Transport under rc has made
// every retry that was safe, with the request's one key; a try more from
// rc would be a new logical request, with a new key. Returning no error
// also keeps retryablehttp from putting a context error in place of the
// Transport's (DefaultRetryPolicy returns ctx.Err()).
func neverRetry(context.Context, *http.Response, error) (bool, error) {
	return false, nil
}

// drainLimit is how much of an abandoned response body returnError reads
// so that its connection can be reused, as retryablehttp reads 4096 bytes.
const drainLimit = 4096

// returnError is Configure's ErrorHandler. As neverRetry never retries and
// returns no error, rc calls it only when its one try failed: http.Client.Do
// returned an error, or the request's ResponseHandler did. It returns that
// error as it is, never a response with it; a response that came along
// (the ResponseHandler's, or the one http.Client.Do returns with a
// CheckRedirect error) is drained and closed, as retryablehttp asks.
func returnError(resp *http.Response, err error, _ int) (*http.Response, error) {
	if resp != nil && resp.Body != nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
		resp.Body.Close()
	}
	return nil, err
}
