package saferetry_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// headerTap is a base transport that remembers every value of the named
// headers sent through it, so tests can search logs and errors for them.
type headerTap struct {
	base   http.RoundTripper
	names  []string
	mu     sync.Mutex
	values map[string]bool
}

func newHeaderTap(names ...string) *headerTap {
	return &headerTap{base: &http.Transport{}, names: names, values: map[string]bool{}}
}

func (h *headerTap) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	for _, name := range h.names {
		if v := r.Header.Get(name); v != "" {
			h.values[v] = true
		}
	}
	h.mu.Unlock()
	return h.base.RoundTrip(r)
}

func (h *headerTap) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for v := range h.values {
		out = append(out, v)
	}
	return out
}

// tokens is seen with the "Bearer " of Authorization values taken off.
func (h *headerTap) tokens() []string {
	var out []string
	for _, v := range h.seen() {
		out = append(out, strings.TrimPrefix(v, "Bearer "))
	}
	return out
}

// TestZeroHashSecretsAbsentFromLogsAndErrors sweeps a debug log and every
// error of a run with faults, a stale clock, bad credentials and a
// redirect for the API key, the passphrase, the secret and every
// signature that was sent.
func TestZeroHashSecretsAbsentFromLogsAndErrors(t *testing.T) {
	srv := saferetrytest.NewZeroHashServer()
	defer srv.Close()
	tap := newHeaderTap("X-Scx-Signed")
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	newClient := func(secret string) *saferetry.Client {
		c, err := saferetry.NewClient(srv.URL, saferetry.WithHTTPClient(&http.Client{Transport: tap}),
			saferetry.WithZeroHashAuth(srv.APIKey, secret, srv.Passphrase), saferetry.WithLogger(logger),
			saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var errs []string
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
		}
	}
	good := newClient(srv.Secret)
	srv.Script(saferetrytest.FaultUnavailable, saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultBadGateway)
	for i := range 3 {
		_, err := good.Transfers.Create(context.Background(), transferRequest(fmt.Sprintf("sweep-%d", i)))
		keep(err)
	}
	_, err := newClient("d3Jvbmctc2VjcmV0").Transfers.Create(context.Background(), transferRequest("sweep-bad"))
	keep(err)
	srv.Now = func() time.Time { return time.Now().Add(5 * time.Minute) }
	_, err = good.Transfers.Create(context.Background(), transferRequest("sweep-stale"))
	keep(err)
	_, err = saferetry.NewClient(srv.URL, saferetry.WithZeroHashAuth(srv.APIKey, srv.Secret+"!", srv.Passphrase))
	keep(err)

	if len(errs) < 4 || logs.Len() == 0 || len(tap.seen()) < 5 {
		t.Fatalf("too little to sweep: %d errors, %d log bytes, %d signatures", len(errs), logs.Len(), len(tap.seen()))
	}
	wantNoSecrets(t, logs.String(), errs, append(tap.seen(), srv.APIKey, srv.Passphrase, srv.Secret))
}

// wantNoSecrets fails the test for every secret found in the log or in an
// error string; it never prints the secret itself.
func wantNoSecrets(t *testing.T, log string, errs, secrets []string) {
	t.Helper()
	for i, secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("secret %d of %d appears in the log", i+1, len(secrets))
		}
		for _, e := range errs {
			if strings.Contains(e, secret) {
				t.Errorf("secret %d of %d appears in an error: %s", i+1, len(secrets), e)
			}
		}
	}
}

// TestResponseBodiesAreBounded: answers far larger than any real one are
// read only up to the SDK's bounds.
func TestResponseBodiesAreBounded(t *testing.T) {
	const huge = 40 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, io.MultiReader(strings.NewReader(`{"id":"`), &zeros{n: huge}))
	}))
	defer srv.Close()
	c, err := saferetry.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_, err = c.DoJSON(context.Background(), "POST", "big", map[string]int{}, &out)
	if err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("err = %v, want a decoding error at the bound", err)
	}
}

// zeros is an endless run of '0' bytes, n of them.
type zeros struct{ n int }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), z.n)
	for i := range k {
		p[i] = '0'
	}
	z.n -= k
	return k, nil
}

// TestHugeErrorBodyIsBounded: a 409 of 40 MiB is classified from its first
// MiB only; that much is not valid JSON, so it is no idempotency answer and
// comes back as a response whose whole body the caller can still read.
func TestHugeErrorBodyIsBounded(t *testing.T) {
	const size = 40 << 20
	prefix := `{"error_code":"REQUEST_IN_PROCESS","message":"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		io.Copy(w, io.MultiReader(strings.NewReader(prefix), &zeros{n: size}))
	}))
	defer srv.Close()
	hc, err := saferetry.Wrap(nil, saferetry.WithChift(), saferetry.WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("got %v, %v", resp, err)
	}
	defer resp.Body.Close()
	apiErr := saferetry.CheckResponse(resp).(*saferetry.APIError)
	if len(apiErr.Body) != 1<<20 || !apiErr.Truncated {
		t.Fatalf("CheckResponse read %d bytes, truncated %v; want the first MiB", len(apiErr.Body), apiErr.Truncated)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != int64(len(prefix)+size) {
		t.Fatalf("read %d bytes back, %v; want all %d", n, err, len(prefix)+size)
	}
}
