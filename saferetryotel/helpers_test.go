package saferetryotel_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetryotel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// telemetry is an in-memory OpenTelemetry: the spans that ended and a
// reader of the metrics.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tel.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.spans))
	tel.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() {
		_ = tel.tp.Shutdown(context.Background())
		_ = tel.mp.Shutdown(context.Background())
	})
	return tel
}

// tracing is the option under test, writing to tel, with W3C trace context.
func (tel *telemetry) tracing() saferetry.Option {
	return saferetryotel.WithTracing(saferetryotel.WithTracerProvider(tel.tp), saferetryotel.WithMeterProvider(tel.mp),
		saferetryotel.WithPropagators(propagation.TraceContext{}))
}

// fast are the options every test client gets: waits of a millisecond.
func fast() saferetry.Option { return saferetry.WithBackoff(time.Millisecond, time.Millisecond) }

// ended returns the spans that ended, in the order they started.
func (tel *telemetry) ended() []sdktrace.ReadOnlySpan {
	spans := tel.spans.Ended()
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartTime().Before(spans[j].StartTime()) })
	return spans
}

// attemptSpans are the CLIENT spans, in the order they started.
func (tel *telemetry) attemptSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tel.ended() {
		if s.SpanKind() == trace.SpanKindClient {
			out = append(out, s)
		}
	}
	return out
}

// tree renders the spans as an indented tree, each span's children in the
// order they started, a span's attributes under it after "| ", an error
// status's description as {description}. In every
// string srvURL reads {srv}, and oldnew's pairs are replaced as
// strings.NewReplacer does; server.port reads {port} when it is srvURL's;
// a retry wait within (0, 10ms] reads {wait}. A span whose parent was not
// recorded is a root, marked "(under a span not recorded)" when it has a
// parent.
func tree(spans []sdktrace.ReadOnlySpan, srvURL string, oldnew ...string) string {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext().SpanID()] = true
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if p := s.Parent(); p.IsValid() && ids[p.SpanID()] {
			children[p.SpanID()] = append(children[p.SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	r := renderer{children: children}
	if srvURL != "" {
		oldnew = append([]string{srvURL, "{srv}"}, oldnew...)
		if u, err := url.Parse(srvURL); err == nil {
			r.port = u.Port()
		}
	}
	r.replacer = strings.NewReplacer(oldnew...)
	for _, s := range roots {
		if s.Parent().IsValid() {
			r.lines = append(r.lines, "(under a span not recorded)")
		}
		r.render(s, "")
	}
	return strings.Join(r.lines, "\n")
}

type renderer struct {
	children map[trace.SpanID][]sdktrace.ReadOnlySpan
	replacer *strings.Replacer
	port     string
	lines    []string
}

func (r *renderer) render(s sdktrace.ReadOnlySpan, indent string) {
	status := ""
	if s.Status().Code.String() != "Unset" {
		status = ", " + strings.ToLower(s.Status().Code.String())
		if s.Status().Description != "" {
			status += ": {description}" // the error's text, which is not this package's
		}
	}
	r.lines = append(r.lines, fmt.Sprintf("%s%s (%s%s)", indent, s.Name(), s.SpanKind(), status))
	attrs := slices.Clone(s.Attributes())
	slices.SortFunc(attrs, func(a, b attribute.KeyValue) int { return strings.Compare(string(a.Key), string(b.Key)) })
	for _, kv := range attrs {
		r.lines = append(r.lines, fmt.Sprintf("%s  | %s: %s", indent, kv.Key, r.value(kv)))
	}
	for _, c := range r.children[s.SpanContext().SpanID()] {
		r.render(c, indent+"  ")
	}
}

func (r *renderer) value(kv attribute.KeyValue) string {
	v := kv.Value.String()
	switch {
	case kv.Key == "server.port" && v == r.port:
		return "{port}"
	case kv.Key == "saferetry.retry.wait" && kv.Value.AsFloat64() > 0 && kv.Value.AsFloat64() <= 0.01:
		return "{wait}"
	}
	return r.shown(v)
}

func (r *renderer) shown(s string) string { return r.replacer.Replace(s) }

// metrics collects tel's metrics as "name{k=v,...}" -> value: a counter's
// sum, a histogram's count. A histogram whose sum is not positive fails t.
func (tel *telemetry) metrics(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != saferetryotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, saferetryotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			collect(t, out, m)
		}
	}
	return out
}

func collect(t *testing.T, out map[string]int64, m metricdata.Metrics) {
	t.Helper()
	switch data := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range data.DataPoints {
			out[m.Name+"{"+setString(p.Attributes)+"}"] += p.Value
		}
	case metricdata.Histogram[float64]:
		for _, p := range data.DataPoints {
			if p.Sum <= 0 {
				t.Errorf("%s{%s}: sum %v", m.Name, setString(p.Attributes), p.Sum)
			}
			out[m.Name+"{"+setString(p.Attributes)+"}"] += int64(p.Count)
		}
	default:
		t.Errorf("%s: unexpected data %T", m.Name, m.Data)
	}
}

func setString(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() { // sorted by key
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

// diffMetrics reports every series whose value is not want's.
func diffMetrics(t *testing.T, got, want map[string]int64) {
	t.Helper()
	for _, k := range sortedKeys(want) {
		if got[k] != want[k] {
			t.Errorf("metric %s = %d, want %d", k, got[k], want[k])
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected metric %s = %d", k, got[k])
		}
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// headerRecorder is the base transport of a test client: it keeps the
// headers of every request it sends, and answers by answer when set (and
// not nil), else through http.DefaultTransport.
type headerRecorder struct {
	mu      sync.Mutex
	methods []string
	headers []http.Header
	answer  func(*http.Request) *http.Response
}

func (h *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.methods = append(h.methods, req.Method)
	h.headers = append(h.headers, req.Header.Clone())
	h.mu.Unlock()
	if h.answer != nil {
		if resp := h.answer(req); resp != nil {
			return resp, nil
		}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// seen is each request's method and the value of its header name.
func (h *headerRecorder) seen(name string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.methods))
	for i, m := range h.methods {
		out[i] = m + " " + h.headers[i].Get(name)
	}
	return out
}

// placeholders are strings.NewReplacer's pairs that show each distinct
// value of header name as "{name n}", n from 1 in the order sent.
func (h *headerRecorder) placeholders(name string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var oldnew []string
	for _, header := range h.headers {
		if v := header.Get(name); v != "" && !slices.Contains(oldnew, v) {
			oldnew = append(oldnew, v, fmt.Sprintf("{%s %d}", name, len(oldnew)/2+1))
		}
	}
	return oldnew
}

// traceparents is what each attempt span should have sent: its own
// context, sampled, in W3C form, after the method.
func traceparents(attempts []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(attempts))
	for i, s := range attempts {
		sc := s.SpanContext()
		out[i] = fmt.Sprintf("%s 00-%s-%s-01", s.Name(), sc.TraceID(), sc.SpanID())
	}
	return out
}

func answer(req *http.Request, status int, body string) *http.Response {
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body)), Request: req,
		ProtoMajor: 1, ProtoMinor: 1,
	}
}
