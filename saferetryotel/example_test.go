package saferetryotel_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetryotel"
	"github.com/saferetry/saferetry-go/saferetrytest"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A Chift invoice whose answer is lost after Chift created it, traced.
// The create's span holds the POST's request span (two attempts: the
// answer lost, then 409 REQUEST_ALREADY_PROCESSED) and the lookup in
// Chift's log that finds the invoice's id.
func ExampleWithTracing() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultDropAfterProcessing) // the next create is processed, its answer lost

	// A program exports its spans (OTLP, stdouttrace); the example keeps them.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(),
		saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond), // short waits for the example
		saferetryotel.WithTracing(saferetryotel.WithTracerProvider(tp)))
	if err != nil {
		log.Fatal(err)
	}
	const consumerID = "00000000-0000-4000-8000-000000000001"
	created, err := client.Chift.Create(context.Background(), saferetry.ChiftCreate{
		Path:       "consumers/" + consumerID + "/invoicing/invoices",
		Body:       map[string]any{"invoice_number": "F-2026-0042"},
		ConsumerID: consumerID, ConnectionID: srv.ConnectionID, RequestID: "invoice-F-2026-0042",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("recovered:", created.Recovered)
	for _, s := range spans.Ended() { // a span ends after its children
		fmt.Printf("%s (%s)\n", s.Name(), s.SpanKind())
	}
	// Output:
	// recovered: true
	// POST (client)
	// POST (client)
	// saferetry POST (internal)
	// GET (client)
	// saferetry GET (internal)
	// saferetry chift create (internal)
}

// An http.Client from saferetry.Wrap, measured: a server answers 503 once,
// then 200. Hooks returns the saferetry.Hooks, for saferetry.WithHooks.
func ExampleHooks() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	// A program reads its metrics with an exporter; the example, by hand.
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	hc, err := saferetry.Wrap(http.DefaultClient, saferetry.WithBackoff(time.Millisecond, time.Millisecond),
		saferetry.WithHooks(saferetryotel.Hooks(saferetryotel.WithMeterProvider(mp))))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := hc.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	var lines []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
			for _, p := range sum.DataPoints {
				lines = append(lines, fmt.Sprintf("%s %s: %d", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value))
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// saferetry.attempts error.type=503,http.request.method=GET,http.response.status_code=503: 1
	// saferetry.attempts http.request.method=GET,http.response.status_code=200: 1
	// saferetry.retries saferetry.retry.reason=status_503: 1
}
