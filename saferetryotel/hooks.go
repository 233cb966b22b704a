package saferetryotel

import (
	saferetry "github.com/saferetry/saferetry-go"
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
