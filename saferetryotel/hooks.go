package saferetryotel

import (
	"context"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter: this
// package's import path.
const ScopeName = "github.com/saferetry/saferetry-go/saferetryotel"

// Hooks returns saferetry.Hooks that trace every Create, logical request
// and attempt and record the metrics the package doc lists, with the
// providers and propagator opts set (the OpenTelemetry globals by
// default, as they are when Hooks is called). Install them with
// saferetry.WithHooks, or use WithTracing.
func Hooks(opts ...Option) saferetry.Hooks {
	cfg := newConfig(opts)
	in := &instrumentation{
		tracer:     cfg.tracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		propagator: cfg.propagator,
		metrics:    newInstruments(cfg.meterProvider.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))),
	}
	return saferetry.Hooks{
		CreateStart:  in.createStart,
		CreateDone:   in.createDone,
		RequestStart: in.requestStart,
		RequestDone:  in.requestDone,
		AttemptStart: in.attemptStart,
		AttemptDone:  in.attemptDone,
	}
}

// WithTracing is saferetry.WithHooks(Hooks(opts...)): spans and metrics
// for the Client or http.Client saferetry builds with it.
func WithTracing(opts ...Option) saferetry.Option {
	return saferetry.WithHooks(Hooks(opts...))
}

// instrumentation is one Hooks value's tracer, propagator and metrics.
type instrumentation struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	metrics    instruments
}

// A Start hook leaves its span in the context, for its Done hook and the
// hooks beneath it, under a key of its own instrumentation: another
// tracer's hooks, or these installed twice, wrap the context between a
// Start and its Done, and SpanFromContext would find their span.
type stateKey struct {
	in    *instrumentation
	level int
}

const (
	createLevel = iota
	requestLevel
	attemptLevel
)

func (in *instrumentation) key(level int) stateKey { return stateKey{in, level} }

// createState is an open create span and the API it is for.
type createState struct {
	span trace.Span
	api  string
}

// requestState is an open request span and what its attempts and its
// duration metric need.
type requestState struct {
	span        trace.Span
	start       time.Time
	method, url string
	step, api   string
}

func (in *instrumentation) createStart(ctx context.Context, c saferetry.CreateStart) context.Context {
	ctx, span := in.tracer.Start(ctx, "saferetry "+c.API+" create", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(apiKey.String(c.API), idempotencyKey.String(c.Key), createResumedKey.Bool(c.Resumed)))
	return context.WithValue(ctx, in.key(createLevel), &createState{span: span, api: c.API})
}

func (in *instrumentation) createDone(ctx context.Context, c saferetry.CreateDone) {
	s, ok := ctx.Value(in.key(createLevel)).(*createState)
	if !ok {
		return
	}
	s.span.SetAttributes(createOutcomeKey.String(c.Outcome), createPostsKey.Int(c.Posts), createLookupsKey.Int(c.Lookups))
	end(s.span, 0, c.Err)
	in.metrics.creates.Add(ctx, 1, metric.WithAttributes(apiKey.String(c.API), createOutcomeKey.String(c.Outcome)))
}

func (in *instrumentation) requestStart(ctx context.Context, r saferetry.RequestStart) context.Context {
	s := &requestState{start: time.Now(), method: r.Method, url: r.URL, step: r.Step}
	if c, ok := ctx.Value(in.key(createLevel)).(*createState); ok {
		s.api = c.api
	}
	attrs := append(methodAttrs(r.Method), semconv.URLFull(r.URL))
	switch {
	case r.Key != "":
		attrs = append(attrs, idempotencyKey.String(r.Key))
	case r.RequestID != "":
		attrs = append(attrs, requestIDKey.String(r.RequestID))
	}
	attrs = append(attrs, s.createAttrs()...)
	ctx, s.span = in.tracer.Start(ctx, "saferetry "+spanMethod(r.Method), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrs...))
	if r.Step == saferetry.StepLookup || r.Step == saferetry.StepPoll {
		in.metrics.lookups.Add(ctx, 1, metric.WithAttributes(s.createAttrs()...))
	}
	return context.WithValue(ctx, in.key(requestLevel), s)
}

// createAttrs are the request's step and API, when a Create sent it.
func (s *requestState) createAttrs() []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if s.api != "" {
		attrs = append(attrs, apiKey.String(s.api))
	}
	if s.step != "" {
		attrs = append(attrs, stepKey.String(s.step))
	}
	return attrs
}

func (in *instrumentation) requestDone(ctx context.Context, d saferetry.RequestDone) {
	s, ok := ctx.Value(in.key(requestLevel)).(*requestState)
	if !ok {
		return
	}
	s.span.SetAttributes(attemptsKey.Int(d.Attempts), outcomeUnknownKey.Bool(d.OutcomeUnknown), budgetExhaustedKey.Bool(d.BudgetExhausted))
	end(s.span, d.StatusCode, d.Err)
	attrs := append(methodAttrs(s.method), s.createAttrs()...)
	attrs = append(attrs, outcomeAttrs(d.StatusCode, d.Err)...)
	in.metrics.duration.Record(ctx, time.Since(s.start).Seconds(), metric.WithAttributes(attrs...))
}

func (in *instrumentation) attemptStart(ctx context.Context, a saferetry.AttemptStart) context.Context {
	attrs := []attribute.KeyValue{attemptKey.Int(a.Number)}
	name := "HTTP"
	if r, ok := ctx.Value(in.key(requestLevel)).(*requestState); ok {
		name = spanMethod(r.method)
		attrs = append(attrs, methodAttrs(r.method)...)
		attrs = append(attrs, semconv.URLFull(r.url))
		attrs = append(attrs, serverAttrs(r.url)...)
	}
	if a.Number > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(a.Number-1))
	}
	ctx, span := in.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	// The server sees this attempt's span as its parent.
	in.propagator.Inject(ctx, propagation.HeaderCarrier(a.Header))
	return context.WithValue(ctx, in.key(attemptLevel), span)
}

func (in *instrumentation) attemptDone(ctx context.Context, a saferetry.Attempt) {
	span, ok := ctx.Value(in.key(attemptLevel)).(trace.Span)
	if !ok {
		return
	}
	span.SetAttributes(retryKey.Bool(a.Retry), sentKey.Bool(a.Sent), replayedKey.Bool(a.Replayed))
	span.SetAttributes(retryAttrs(a)...)
	if a.Code != "" {
		span.SetAttributes(chiftErrorCodeKey.String(a.Code))
	}
	end(span, a.StatusCode, a.Err)
	in.countAttempt(ctx, a)
}

// retryAttrs say why another attempt was due, its wait, and whether the
// retry budget refused it.
func retryAttrs(a saferetry.Attempt) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if a.Reason != "" {
		attrs = append(attrs, retryReasonKey.String(a.Reason))
	}
	if a.Retry {
		attrs = append(attrs, retryWaitKey.Float64(a.Wait.Seconds()))
	}
	if a.BudgetExhausted {
		attrs = append(attrs, budgetExhaustedKey.Bool(true))
	}
	return attrs
}

func (in *instrumentation) countAttempt(ctx context.Context, a saferetry.Attempt) {
	attrs := append(methodAttrs(a.Method), outcomeAttrs(a.StatusCode, a.Err)...)
	in.metrics.attempts.Add(ctx, 1, metric.WithAttributes(attrs...))
	reason := metric.WithAttributes(retryReasonKey.String(a.Reason))
	if a.Retry {
		in.metrics.retries.Add(ctx, 1, reason)
	}
	if a.BudgetExhausted {
		in.metrics.refusals.Add(ctx, 1, reason)
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
