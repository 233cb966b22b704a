package saferetryotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// instruments are the metrics the package doc lists.
type instruments struct {
	attempts, retries, refusals, creates, lookups metric.Int64Counter
	duration                                      metric.Float64Histogram
}

// durationBuckets are HTTP semantic conventions' advice for
// http.client.request.duration, plus 30 s and 60 s: a logical request
// holds its retries and their waits.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}

// newInstruments makes the instruments on meter. One the meter refuses is
// reported to otel.Handle and replaced by a no-op: metrics must never stop
// a request.
func newInstruments(meter metric.Meter) instruments {
	return instruments{
		attempts: counter(meter, "saferetry.attempts", "{attempt}", "Attempts made (every try of a logical request, its retries included; one that failed before reaching the base transport too)."),
		retries:  counter(meter, "saferetry.retries", "{retry}", "Attempts that ended with another attempt due, by the reason it was due."),
		refusals: counter(meter, "saferetry.retry_budget.refusals", "{refusal}", "Retries that were due and that the retry budget refused."),
		creates:  counter(meter, "saferetry.creates", "{create}", "Chift.Create and Transfers.Create calls that returned, by outcome."),
		lookups:  counter(meter, "saferetry.lookups", "{lookup}", "Requests a create sent to learn the outcome of a post: the first lookup and later polls."),
		duration: histogram(meter, "saferetry.request.duration", "s", "Duration of logical requests, from the first attempt to the answer handed to the caller, waits between attempts included."),
	}
}

func counter(meter metric.Meter, name, unit, description string) metric.Int64Counter {
	c, err := meter.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(description))
	if err != nil {
		otel.Handle(err)
		return noop.Int64Counter{}
	}
	return c
}

func histogram(meter metric.Meter, name, unit, description string) metric.Float64Histogram {
	h, err := meter.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(description),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		otel.Handle(err)
		return noop.Float64Histogram{}
	}
	return h
}
