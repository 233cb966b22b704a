// Command chift-invoice is the core module's examples/chift-invoice with
// tracing: -spans prints every span to stdout as it ends (each invoice's
// create, its requests, their attempts), with OpenTelemetry's stdout
// exporter, among the program's own lines. Without -spans it is the core
// example, flag for flag and line for line; both run internal/chiftinvoice.
//
//	go -C saferetryotel run ./examples/chift-invoice -spans
//	go -C saferetryotel run ./examples/chift-invoice -spans -n 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/internal/chiftinvoice"
	"github.com/saferetry/saferetry-go/saferetryotel"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chift-invoice:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var cfg chiftinvoice.Config
	cfg.RegisterFlags(flag.CommandLine)
	spans := flag.Bool("spans", false, "print each span to stdout as it ends (OpenTelemetry's stdouttrace)")
	flag.Parse()
	var opts []saferetry.Option
	if *spans {
		tp, err := stdoutTracerProvider()
		if err != nil {
			return err
		}
		// Shutdown flushes and stops the exporter, before the program exits.
		defer func() { err = errors.Join(err, tp.Shutdown(context.Background())) }()
		opts = append(opts, saferetryotel.WithTracing(saferetryotel.WithTracerProvider(tp),
			saferetryotel.WithPropagators(propagation.TraceContext{}))) // each attempt sends a traceparent
	}
	return chiftinvoice.Run(cfg, opts...)
}

// stdoutTracerProvider prints spans as indented JSON. Its processor is
// synchronous, so a span is printed as it ends, next to the attempt lines;
// a service would batch them (sdktrace.WithBatcher) to an OTLP exporter.
func stdoutTracerProvider() (*sdktrace.TracerProvider, error) {
	exporter, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter)), nil
}
