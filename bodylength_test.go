package saferetry_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
)

// bodyRecorder is a server that records every body it receives, with the
// key or request id it came under.
type bodyRecorder struct {
	mu  sync.Mutex
	got []string
}

func (b *bodyRecorder) start(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got = append(b.got, r.Header.Get("Idempotency-Key")+r.Header.Get("X-Req")+"|"+string(body))
		b.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (b *bodyRecorder) bodies() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

// A body that does not hold the bytes ContentLength declares is refused
// before anything is sent: net/http fails such a request while writing
// it, and sent with the length of what was read it would carry another
// payload (the last part of an invoice, say).
func TestBodyLengthMismatchRefused(t *testing.T) {
	cases := map[string]func(url string) *http.Request{
		"read in part before": func(url string) *http.Request {
			body := strings.NewReader(`{"amount":1000}`)
			req, _ := http.NewRequest(http.MethodPost, url, body)
			req.GetBody = nil // a request built by hand: the body is buffered
			body.Seek(5, io.SeekStart)
			return req
		},
		"no body at all": func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, nil)
			req.ContentLength = 5
			return req
		},
		"longer than declared": func(url string) *http.Request {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"amount":1000}`))
			req.GetBody = nil
			req.ContentLength = 4
			return req
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			var rec bodyRecorder
			srv := rec.start(t)
			hc, err := saferetry.Wrap(&http.Client{})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(mk(srv.URL))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, saferetry.ErrBodyLength) {
				t.Errorf("err %v, want ErrBodyLength", err)
			}
			if got := rec.bodies(); len(got) != 0 {
				t.Errorf("the server received %q", got)
			}
		})
	}
}

// resp.Request sent again, on a Transport that has not yet seen net/http's
// trace hooks fire (so the request carries no GetBody): its body was read
// by the first send. It is refused, not sent empty under the same key or,
// with a request id that is not deduplicated on, as a new write.
func TestResendOfResponseRequestRefused(t *testing.T) {
	for _, header := range []string{"", "X-Req"} {
		t.Run("header "+header, func(t *testing.T) {
			var rec bodyRecorder
			srv := rec.start(t)
			var opts []saferetry.Option
			if header != "" {
				opts = append(opts, saferetry.WithRequestIDHeader(header))
			}
			hc, err := saferetry.Wrap(&http.Client{}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Post(srv.URL, "text/plain", strings.NewReader("payload-123"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			again, err := hc.Do(resp.Request)
			if err == nil {
				again.Body.Close()
				// Sent: only with the whole payload.
			} else if !errors.Is(err, saferetry.ErrBodyLength) {
				t.Errorf("second send: err %v, want ErrBodyLength or success", err)
			}
			for _, g := range rec.bodies() {
				if !strings.HasSuffix(g, "|payload-123") {
					t.Errorf("the server received %q: another payload", g)
				}
			}
		})
	}
}

// A body of unknown length (ContentLength 0 with a body) is sent whole.
func TestBodyOfUnknownLengthSent(t *testing.T) {
	var rec bodyRecorder
	srv := rec.start(t)
	hc, err := saferetry.Wrap(&http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.MultiReader(strings.NewReader("pay"), strings.NewReader("load")))
	if req.ContentLength != 0 {
		t.Fatalf("setup: ContentLength %d", req.ContentLength)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := rec.bodies(); len(got) != 1 || !strings.HasSuffix(got[0], "|payload") {
		t.Errorf("the server received %q, want one payload", got)
	}
}

// The zerohash signer reads each attempt's body whole to sign it: a body
// from the caller's GetBody shorter than ContentLength is refused there,
// not signed and sent as the whole payload.
func TestSignedBodyLengthMismatchRefused(t *testing.T) {
	var rec bodyRecorder
	srv := rec.start(t)
	tr, err := saferetry.NewTransport(http.DefaultTransport,
		saferetry.WithZeroHashAuth("key", "c2VjcmV0", "pass"), saferetry.WithAPIBaseURL(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/transfers", strings.NewReader(`{"amount":"1000"}`))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(`{"amount"`)), nil }
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, saferetry.ErrBodyLength) {
		t.Errorf("err %v, want ErrBodyLength", err)
	}
	var reqErr *saferetry.RequestError
	if !errors.As(err, &reqErr) {
		t.Errorf("err %T, want a *RequestError", err)
	} else if reqErr.Attempts != 1 || reqErr.MaybeSent {
		t.Errorf("attempts %d, maybe sent %v: want 1 attempt, refused before sending, not retried", reqErr.Attempts, reqErr.MaybeSent)
	}
	if got := rec.bodies(); len(got) != 0 {
		t.Errorf("the server received %q", got)
	}
}
