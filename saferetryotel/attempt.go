package saferetryotel

import (
	"context"

	saferetry "github.com/saferetry/saferetry-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// attemptStart opens the attempt's CLIENT span, named and described as
// HTTP semantic conventions have a client span, and writes its context
// into the attempt's header.
func (in *instrumentation) attemptStart(ctx context.Context, a saferetry.AttemptStart) context.Context {
	attrs := []attribute.KeyValue{attemptKey.Int(a.Number)}
	name := spanMethod(a.Method)
	attrs = append(attrs, methodAttrs(a.Method)...)
	attrs = append(attrs, semconv.URLFull(a.URL))
	attrs = append(attrs, serverAttrs(a.URL)...)
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

// countAttempt counts the attempt, and the retry it was followed by or
// the retry budget refused.
func (in *instrumentation) countAttempt(ctx context.Context, a saferetry.Attempt) {
	attrs := append([]attribute.KeyValue{metricMethod(a.Method)}, outcomeAttrs(a.StatusCode, a.Err)...)
	in.metrics.attempts.Add(ctx, 1, metric.WithAttributes(attrs...))
	reason := metric.WithAttributes(retryReasonKey.String(a.Reason))
	if a.Retry {
		in.metrics.retries.Add(ctx, 1, reason)
	}
	if a.BudgetExhausted {
		in.metrics.refusals.Add(ctx, 1, reason)
	}
}
