package saferetryotel

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strconv"

	saferetry "github.com/saferetry/saferetry-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// The attributes of this package's own, under "saferetry." (the package
// doc lists them with the spans and metrics that carry them).
const (
	apiKey             = attribute.Key("saferetry.api")
	idempotencyKey     = attribute.Key("saferetry.idempotency_key")
	requestIDKey       = attribute.Key("saferetry.request_id")
	stepKey            = attribute.Key("saferetry.step")
	createOutcomeKey   = attribute.Key("saferetry.create.outcome")
	createPostsKey     = attribute.Key("saferetry.create.posts")
	createLookupsKey   = attribute.Key("saferetry.create.lookups")
	createResumedKey   = attribute.Key("saferetry.create.resumed")
	attemptsKey        = attribute.Key("saferetry.attempts")
	outcomeUnknownKey  = attribute.Key("saferetry.outcome_unknown")
	budgetExhaustedKey = attribute.Key("saferetry.retry_budget_exhausted")
	attemptKey         = attribute.Key("saferetry.attempt")
	retryKey           = attribute.Key("saferetry.retry")
	retryReasonKey     = attribute.Key("saferetry.retry.reason")
	retryWaitKey       = attribute.Key("saferetry.retry.wait")
	sentKey            = attribute.Key("saferetry.sent")
	replayedKey        = attribute.Key("saferetry.replayed")
	chiftErrorCodeKey  = attribute.Key("saferetry.chift.error_code")
)

// knownMethods are the methods semantic conventions name; any other is
// "_OTHER", so that a made-up method cannot grow a metric's series.
var knownMethods = map[string]bool{
	"CONNECT": true, "DELETE": true, "GET": true, "HEAD": true, "OPTIONS": true,
	"PATCH": true, "POST": true, "PUT": true, "QUERY": true, "TRACE": true,
}

// methodAttrs is http.request.method, and http.request.method_original
// for a method semantic conventions do not know.
func methodAttrs(method string) []attribute.KeyValue {
	if knownMethods[method] {
		return []attribute.KeyValue{metricMethod(method)}
	}
	return []attribute.KeyValue{metricMethod(method), semconv.HTTPRequestMethodOriginal(method)}
}

// metricMethod is http.request.method for a metric: "_OTHER" for a
// method semantic conventions do not know, never the original, so a
// made-up method cannot add a series.
func metricMethod(method string) attribute.KeyValue {
	if knownMethods[method] {
		return semconv.HTTPRequestMethodKey.String(method)
	}
	return semconv.HTTPRequestMethodOther
}

// spanMethod is the method as a span name shows it: "HTTP" when semantic
// conventions do not know it.
func spanMethod(method string) string {
	if knownMethods[method] {
		return method
	}
	return "HTTP"
}

// serverAttrs are server.address and server.port of a URL, the port from
// the scheme when the URL names none.
func serverAttrs(rawURL string) []attribute.KeyValue {
	u, err := url.Parse(rawURL)
	if err != nil || u.Hostname() == "" {
		return nil
	}
	attrs := []attribute.KeyValue{semconv.ServerAddress(u.Hostname())}
	port, err := strconv.Atoi(u.Port())
	switch {
	case err == nil:
		attrs = append(attrs, semconv.ServerPort(port))
	case u.Scheme == "https":
		attrs = append(attrs, semconv.ServerPort(443))
	case u.Scheme == "http":
		attrs = append(attrs, semconv.ServerPort(80))
	}
	return attrs
}

// errorType is error.type for how an attempt, a request or a create
// ended, "" when it did not fail: the error's kind (see errorKind), else
// the status code of an answer of 400 or more, as HTTP semantic
// conventions have it for a client.
func errorType(status int, err error) string {
	switch {
	case err != nil:
		return errorKind(err)
	case status >= 400:
		return strconv.Itoa(status)
	}
	return ""
}

// sentinels name the errors a dashboard tells apart, first match first:
// saferetry's as Go spells them, then the causes a dropped or timed-out
// connection shows.
var sentinels = []struct {
	err  error
	name string
}{
	{saferetry.ErrOutcomeUnknown, "saferetry.ErrOutcomeUnknown"},
	{saferetry.ErrRetryBudgetExhausted, "saferetry.ErrRetryBudgetExhausted"},
	{saferetry.ErrAttemptTimeout, "saferetry.ErrAttemptTimeout"},
	{saferetry.ErrRequestAlreadyProcessed, "saferetry.ErrRequestAlreadyProcessed"},
	{saferetry.ErrRequestInProcess, "saferetry.ErrRequestInProcess"},
	{saferetry.ErrRequestIDSpent, "saferetry.ErrRequestIDSpent"},
	{saferetry.ErrDuplicateClientTransferID, "saferetry.ErrDuplicateClientTransferID"},
	{saferetry.ErrKeyExpired, "saferetry.ErrKeyExpired"},
	{saferetry.ErrInvalidKey, "saferetry.ErrInvalidKey"},
	{saferetry.ErrRateLimited, "saferetry.ErrRateLimited"},
	{saferetry.ErrTransferNotCreated, "saferetry.ErrTransferNotCreated"},
	{saferetry.ErrTransferNotFound, "saferetry.ErrTransferNotFound"},
	{saferetry.ErrTransactionNotFound, "saferetry.ErrTransactionNotFound"},
	{context.DeadlineExceeded, "context.DeadlineExceeded"},
	{context.Canceled, "context.Canceled"},
	{io.ErrUnexpectedEOF, "io.ErrUnexpectedEOF"},
	{io.EOF, "io.EOF"},
}

// errorKind names err with few distinct values: the sentinel it matches,
// the status code of an *saferetry.APIError, or else the Go type of its
// cause (semconv.ErrorType, e.g. "*net.OpError"), under the wrappers that
// say nothing of the cause (*url.Error, *saferetry.RequestError).
func errorKind(err error) string {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	var apiErr *saferetry.APIError
	if errors.As(err, &apiErr) {
		return strconv.Itoa(apiErr.StatusCode)
	}
	return semconv.ErrorType(causeOf(err)).Value.AsString()
}

func causeOf(err error) error {
	for {
		switch e := err.(type) {
		case *url.Error:
			err = e.Err
		case *saferetry.RequestError:
			err = e.Err
		default:
			return err
		}
	}
}

// outcomeAttrs are http.response.status_code, when an answer came, and
// error.type, when it failed.
func outcomeAttrs(status int, err error) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	if t := errorType(status, err); t != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(t))
	}
	return attrs
}

// end ends span with the outcome's attributes, and an error status when
// it failed. The description is the error's text, none for a status
// code, as HTTP semantic conventions ask.
func end(span trace.Span, status int, err error) {
	span.SetAttributes(outcomeAttrs(status, err)...)
	switch {
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
	case status >= 400:
		span.SetStatus(codes.Error, "")
	}
	span.End()
}
