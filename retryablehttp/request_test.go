package saferetryablehttp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
	saferetryablehttp "github.com/saferetry/saferetry-go/retryablehttp"
)

// Every body retryablehttp accepts goes out byte-identical on the
// Transport's retry, under the same key.
func TestConfigureResendsBodyByteIdentical(t *testing.T) {
	want := []byte(invoiceBody)
	tests := []struct {
		name string
		body func() any
	}{
		{"[]byte", func() any { return want }},
		{"*bytes.Reader", func() any { return bytes.NewReader(want) }},
		{"*bytes.Buffer", func() any { return bytes.NewBuffer(want) }},
		{"io.ReadSeeker", func() any { return strings.NewReader(invoiceBody) }},
		{"io.Reader", func() any { return io.MultiReader(bytes.NewReader(want)) }},
		{"ReaderFunc", func() any {
			return retryablehttp.ReaderFunc(func() (io.Reader, error) { return bytes.NewReader(want), nil })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newDropFirstServer(t)
			rc := configured(t)

			resp, err := rc.Post(srv.URL, "application/json", tt.body())
			if err != nil {
				t.Fatal(err)
			}
			closeResp(resp)
			got := srv.requests()
			if len(got) != 2 || got[0].key == "" || got[1].key != got[0].key {
				t.Fatalf("%d requests, keys %q and %q; want 2 with one key", len(got), got[0].key, got[len(got)-1].key)
			}
			for i, r := range got {
				if !bytes.Equal(r.body, want) {
					t.Errorf("attempt %d sent %q, want %q", i+1, r.body, want)
				}
			}
		})
	}
}

// Cancelling the context while the Transport waits between attempts ends
// the wait at once: with an hour's backoff, the test would otherwise hang.
func TestConfigureCancelStopsTheWait(t *testing.T) {
	srv := newRecordingServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The observer runs after each attempt, before the wait.
	rc := configured(t, saferetry.WithBackoff(time.Hour, time.Hour),
		saferetry.WithObserver(func(saferetry.Attempt) { cancel() }))
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, srv.URL, []byte(invoiceBody))
	if err != nil {
		t.Fatal(err)
	}

	resp, err := rc.Do(req)
	closeResp(resp)
	if resp != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got response %v and error %v, want an error matching context.Canceled", resp, err)
	}
	if got := srv.requests(); len(got) != 1 || saferetry.KeyFromError(err) != got[0].key {
		t.Fatalf("%d request(s), KeyFromError %q; want 1, with the key it carried", len(got), saferetry.KeyFromError(err))
	}
}

// An error from the request's ResponseHandler is handed back as it is,
// without a retry, and the response it came with is closed.
func TestConfigureResponseHandlerErrorIsReturned(t *testing.T) {
	var sent, closed atomic.Int32
	base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		sent.Add(1)
		body := &closeCounter{Reader: strings.NewReader("{}"), closed: &closed}
		return &http.Response{StatusCode: http.StatusOK, Body: body, Header: http.Header{}, Request: req}, nil
	})
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.HTTPClient = &http.Client{Transport: base}
	if err := saferetryablehttp.Configure(rc, fast()); err != nil {
		t.Fatal(err)
	}
	errHandler := errors.New("handler refused the answer")
	req, err := retryablehttp.NewRequest(http.MethodPost, "http://api.example/invoices", []byte(invoiceBody))
	if err != nil {
		t.Fatal(err)
	}
	req.SetResponseHandler(func(*http.Response) error { return errHandler })

	resp, err := rc.Do(req)
	if resp != nil || err != errHandler {
		t.Fatalf("got response %v and error %v, want no response and the handler's error itself", resp, err)
	}
	if sent.Load() != 1 || closed.Load() != 1 {
		t.Fatalf("sent %d time(s), body closed %d time(s); want 1 and 1", sent.Load(), closed.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

type closeCounter struct {
	io.Reader
	closed *atomic.Int32
}

func (c *closeCounter) Close() error {
	c.closed.Add(1)
	return nil
}
