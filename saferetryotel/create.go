package saferetryotel

import (
	"context"

	saferetry "github.com/saferetry/saferetry-go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// createState is an open create span and the API it is for.
type createState struct {
	span trace.Span
	api  string
}

// createRefusalReason is the saferetry.retry.reason of a refusal of a
// Create's own repost or lookup.
const createRefusalReason = "create"

// createStart opens the create's span; its requests' spans are its
// children.
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
	if c.BudgetExhausted {
		// A repost or a lookup of the create that the budget refused; the
		// transport's own refusals are counted by attemptDone.
		s.span.SetAttributes(budgetExhaustedKey.Bool(true))
		in.metrics.refusals.Add(ctx, 1, metric.WithAttributes(retryReasonKey.String(createRefusalReason)))
	}
	end(s.span, 0, c.Err)
	in.metrics.creates.Add(ctx, 1, metric.WithAttributes(apiKey.String(c.API), createOutcomeKey.String(c.Outcome)))
}
