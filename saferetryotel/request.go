package saferetryotel

import (
	"context"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// requestState is an open request span and what its attempts and its
// duration metric need.
type requestState struct {
	span        trace.Span
	start       time.Time
	method, url string
	step, api   string
}

// requestStart opens the logical request's span and counts a lookup.
func (in *instrumentation) requestStart(ctx context.Context, r saferetry.RequestStart) context.Context {
	s := &requestState{start: time.Now(), method: r.Method, url: r.URL, step: r.Step, api: r.API}
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

// requestDone ends the request's span when its answer's headers are handed
// to the caller (or its error), and records its duration.
func (in *instrumentation) requestDone(ctx context.Context, d saferetry.RequestDone) {
	s, ok := ctx.Value(in.key(requestLevel)).(*requestState)
	if !ok {
		return
	}
	s.span.SetAttributes(attemptsKey.Int(d.Attempts), outcomeUnknownKey.Bool(d.OutcomeUnknown), budgetExhaustedKey.Bool(d.BudgetExhausted))
	end(s.span, d.StatusCode, d.Err)
	attrs := append([]attribute.KeyValue{metricMethod(s.method)}, s.createAttrs()...)
	attrs = append(attrs, outcomeAttrs(d.StatusCode, d.Err)...)
	in.metrics.duration.Record(ctx, time.Since(s.start).Seconds(), metric.WithAttributes(attrs...))
}
