package saferetry

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Benchmarks of the transport's own cost, with no network: compare
// commits with benchstat. bench/ measures it against net/http and other
// libraries over loopback.

// okTransport answers every request at once, consuming the body as
// net/http would.
type okTransport struct{}

func (okTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

var benchBody = bytes.Repeat([]byte("x"), 1024)

func benchRequest() *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://api.test/v1/invoices", bytes.NewReader(benchBody))
	req.Header.Set("Content-Type", "application/json")
	return req
}

func runRoundTrips(b *testing.B, rt http.RoundTripper) {
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(benchRequest())
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

// BenchmarkRoundTripBase is the baseline: the base transport alone.
func BenchmarkRoundTripBase(b *testing.B) { runRoundTrips(b, okTransport{}) }

// BenchmarkRoundTripTransport is one logical POST through Transport: key,
// clone, policy, one attempt.
func BenchmarkRoundTripTransport(b *testing.B) {
	tr, err := NewTransport(okTransport{})
	if err != nil {
		b.Fatal(err)
	}
	runRoundTrips(b, tr)
}

func BenchmarkRoundTripTransportParallel(b *testing.B) {
	tr, err := NewTransport(okTransport{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := tr.RoundTrip(benchRequest())
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
		}
	})
}

// BenchmarkStampKey is key generation and validation.
func BenchmarkStampKey(b *testing.B) {
	tr, _ := NewTransport(okTransport{})
	req := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.key(req, hop{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClassifyInProcess is the costliest classification: a 409 whose
// body is read and parsed.
func BenchmarkClassifyInProcess(b *testing.B) {
	tr, _ := NewTransport(okTransport{}, WithChift())
	c := &call{t: tr, req: benchRequest(), key: "k"}
	b.ReportAllocs()
	for b.Loop() {
		resp := &http.Response{StatusCode: 409, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(inProcessBody))}
		if retry, _ := c.classify(resp, nil); !retry {
			b.Fatal("not retried")
		}
	}
}

func BenchmarkClassifyUnavailable(b *testing.B) {
	tr, _ := NewTransport(okTransport{})
	c := &call{t: tr, req: benchRequest(), key: "k"}
	resp := &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody}
	b.ReportAllocs()
	for b.Loop() {
		if retry, _ := c.classify(resp, nil); !retry {
			b.Fatal("not retried")
		}
	}
}

func BenchmarkBackoff(b *testing.B) {
	bo := backoff.ExponentialBackOff{
		InitialInterval: DefaultBackoffInitial, RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier: backoff.DefaultMultiplier, MaxInterval: DefaultBackoffMax, Stop: backoff.Stop, Clock: backoff.SystemClock,
	}
	bo.Reset()
	b.ReportAllocs()
	for b.Loop() {
		if bo.NextBackOff() <= 0 {
			b.Fatal("no wait")
		}
	}
}

func BenchmarkRetryBudgetParallel(b *testing.B) {
	budget := newRetryBudget(DefaultRetryRatio, DefaultRetriesPerSec, time.Now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.deposit()
			budget.withdraw()
		}
	})
}

// flakyOnce answers every other request 503: each logical request through
// a Transport takes one retry.
type flakyOnce struct{ n int }

func (f *flakyOnce) RoundTrip(r *http.Request) (*http.Response, error) {
	f.n++
	resp, _ := okTransport{}.RoundTrip(r)
	if f.n%2 == 1 {
		resp.StatusCode = http.StatusServiceUnavailable
	}
	return resp, nil
}

// BenchmarkRoundTripRetry is one logical POST that takes a retry: the 503,
// the policy, the backoff schedule (its waits cut to nothing here), and a
// second attempt with the same key and a rewound body.
func BenchmarkRoundTripRetry(b *testing.B) {
	tr, err := NewTransport(&flakyOnce{}, WithoutRetryBudget())
	if err != nil {
		b.Fatal(err)
	}
	tr.cfg.backoffInitial, tr.cfg.backoffMax = time.Nanosecond, time.Nanosecond
	runRoundTrips(b, tr)
}

// chiftTokenTransport answers Chift's POST /token with a token valid for
// an hour, and everything else 200.
type chiftTokenTransport struct{}

func (chiftTokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/token" {
		if r.Body != nil {
			r.Body.Close()
		}
		body := `{"access_token":"tok","token_type":"bearer","expires_in":3600}`
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	}
	return okTransport{}.RoundTrip(r)
}

// BenchmarkRoundTripChiftCachedToken is a Chift POST with WithChiftAuth
// once the token is cached: the key, the Bearer header on a clone, the
// attempt timeout's timer.
func BenchmarkRoundTripChiftCachedToken(b *testing.B) {
	client, err := NewClient("http://api.test", WithChiftAuth(ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "00000000-0000-4000-8000-000000000042"}),
		WithHTTPClient(&http.Client{Transport: chiftTokenTransport{}}))
	if err != nil {
		b.Fatal(err)
	}
	runRoundTrips(b, client.transport)
}

// BenchmarkRoundTripZeroHashSigned is a zerohash POST with WithZeroHashAuth:
// the X-REQUEST-ID, and an HMAC signature of the body on every attempt.
func BenchmarkRoundTripZeroHashSigned(b *testing.B) {
	client, err := NewClient("http://api.test", WithZeroHashAuth("key", "c2VjcmV0", "pass"),
		WithHTTPClient(&http.Client{Transport: okTransport{}}))
	if err != nil {
		b.Fatal(err)
	}
	runRoundTrips(b, client.transport)
}
