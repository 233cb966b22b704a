package saferetry

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Kind 4a: the key is found whatever the case of its header name; the
// Chift document itself writes x-chift-client-requestid.
func TestKeyHeaderFoundInAnyCase(t *testing.T) {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	hc, err := Wrap(nil, WithChift())
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/consumers/c1/invoicing/invoices"
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"invoice_number":"F-42"}`))
		req.Header["x-chift-client-requestid"] = []string{"F-42"}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		} else if !errors.Is(err, ErrRequestAlreadyProcessed) {
			t.Fatal(err)
		}
	}
	if n := srv.CreatedWithKey("F-42"); n != 1 || srv.Created() != 1 {
		t.Fatalf("created %d under F-42, %d in all; want 1 and 1", n, srv.Created())
	}
	for _, r := range srv.Requests() {
		if r.Key != "F-42" {
			t.Fatalf("a request carried key %q, want F-42", r.Key)
		}
	}
}

// The request leaves with exactly one key header, under the canonical name.
func TestKeyHeaderLeavesOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string // "" means a generated key
	}{
		{"lower case", http.Header{"idempotency-key": {"k-1"}}, "k-1"},
		{"two spellings, same value", http.Header{"idempotency-key": {"k-1"}, "Idempotency-Key": {"k-1"}}, "k-1"},
		{"canonical", http.Header{"Idempotency-Key": {"k-1"}}, "k-1"},
		{"net/http's nil marker", http.Header{"Idempotency-Key": nil}, ""},
		{"nil marker in lower case", http.Header{"idempotency-key": nil}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got http.Header
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				got = req.Header
				return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
			})
			tr := newTestTransport(t, base)
			req, _ := http.NewRequest(http.MethodPost, "http://api.test/x", strings.NewReader("{}"))
			req.Header = tc.header
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			var values []string
			for k, vs := range got {
				if strings.EqualFold(k, DefaultRequestIDHeader) {
					if k != DefaultRequestIDHeader {
						t.Fatalf("header left as %q, want the canonical name", k)
					}
					values = append(values, vs...)
				}
			}
			if len(values) != 1 || (tc.want != "" && values[0] != tc.want) || values[0] != KeyFromResponse(resp) {
				t.Fatalf("key headers on the wire %q, KeyFromResponse %q; want one, %q", values, KeyFromResponse(resp), tc.want)
			}
		})
	}
}

// Two different values, or a key net/http would change on the wire, are
// refused before anything is sent.
func TestKeyRefusedBeforeSending(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{"two different values", http.Header{"idempotency-key": {"k-1"}, "Idempotency-Key": {"k-2"}}, "2 different"},
		{"leading space", http.Header{"Idempotency-Key": {" F-43"}}, "begins or ends with a space"},
		{"trailing space", http.Header{"Idempotency-Key": {"F-43 "}}, "begins or ends with a space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := roundTripFunc(func(req *http.Request) (*http.Response, error) {
				t.Fatal("the request was sent")
				return nil, nil
			})
			tr := newTestTransport(t, base)
			body := &requestBody{Reader: strings.NewReader("{}")}
			req, _ := http.NewRequest(http.MethodPost, "http://api.test/x", body)
			req.Header = tc.header
			_, err := tr.RoundTrip(req)
			if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidKey saying %q", err, tc.want)
			}
			if body.closed.Load() != 1 {
				t.Fatalf("body closed %d times, want 1", body.closed.Load())
			}
		})
	}
	if err := ValidateKey(" F-43"); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("ValidateKey(\" F-43\") = %v, want ErrInvalidKey", err)
	}
}

// Kinds 4d, 4e and 8: options that would change on the wire, leak a
// credential, contradict each other or that nobody means are refused with
// an error that names them.
func TestOptionsRefused(t *testing.T) {
	creds := ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	for _, tc := range []struct {
		name string
		make func() error
		want []string
	}{
		{"header name with CRLF", wrapWith(WithRequestIDHeader("X-Key\r\n")), []string{"WithRequestIDHeader", "X-Key"}},
		{"header name with a space", wrapWith(WithRequestIDHeader(" X-Key")), []string{"WithRequestIDHeader"}},
		{"Authorization as key header", wrapWith(WithRequestIDHeader("Authorization")), []string{"WithRequestIDHeader", "credential"}},
		{"zerohash signature as key header", wrapWith(WithRequestIDHeader("x-scx-signed")), []string{"WithRequestIDHeader", "credential"}},
		{"Chift and zerohash presets", wrapWith(WithChift(), WithZeroHashRequestID()), []string{"WithChift and WithZeroHashRequestID"}},
		{"zerohash then Chift", wrapWith(WithZeroHashRequestID(), WithChift()), []string{"WithZeroHashRequestID and WithChift"}},
		{"both auths", wrapWith(WithChiftAuth(creds), WithZeroHashAuth("k", testSecret, "p"), WithAPIBaseURL("https://api.test")), []string{"WithChiftAuth and WithZeroHashAuth"}},
		{"custom header and a preset", wrapWith(WithRequestIDHeader("X-Op"), WithChift()), []string{"WithRequestIDHeader and WithChift"}},
		{"stamped methods under zerohash", wrapWith(WithZeroHashRequestID(), WithStampedMethods("POST")), []string{"WithStampedMethods", "WithZeroHashRequestID"}},
		{"deduplication under zerohash", wrapWith(WithZeroHashRequestID(), WithServerDeduplication()), []string{"WithServerDeduplication", "zerohash"}},
		{"WithHTTPClient to Wrap", wrapWith(WithHTTPClient(&http.Client{})), []string{"WithHTTPClient", "Wrap"}},
		{"WithHTTPClient to NewTransport", func() error {
			_, err := NewTransport(nil, WithHTTPClient(&http.Client{}))
			return err
		}, []string{"WithHTTPClient", "NewTransport"}},
		{"WithAPIBaseURL other than NewClient's", func() error {
			_, err := NewClient("https://api.chift.eu", WithChiftAuth(creds), WithAPIBaseURL("https://other.example"))
			return err
		}, []string{"WithAPIBaseURL", "https://other.example", "https://api.chift.eu"}},
		{"attempt timeout of 5 ns", wrapWith(WithAttemptTimeout(5)), []string{"WithAttemptTimeout", "5ns", "[1ms, 24h0m0s]"}},
		{"1000 retries", wrapWith(WithMaxRetries(1000)), []string{"WithMaxRetries", "1000", "[0, 20]"}},
		{"backoff of 1 ns", wrapWith(WithBackoff(1, 2)), []string{"WithBackoff", "[1ms, 24h0m0s]"}},
		{"a 10 GiB body buffer", wrapWith(WithMaxBufferedBody(10 << 30)), []string{"WithMaxBufferedBody"}},
		{"Chift auth twice", wrapWith(WithChiftAuth(creds), WithChiftAuth(creds), WithAPIBaseURL("https://api.test")), []string{"WithChiftAuth given twice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.make()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("err = %v, want it to name %q", err, w)
				}
			}
		})
	}
}

func wrapWith(opts ...Option) func() error {
	return func() error {
		_, err := Wrap(nil, opts...)
		return err
	}
}

// Options that agree are accepted: a preset and its auth, the same
// WithAPIBaseURL as NewClient's base URL.
func TestOptionsThatAgree(t *testing.T) {
	creds := ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "0b9e7f2e-7e4e-4c4e-9a55-2d3c2f3b9a11"}
	if _, err := NewClient("https://api.chift.eu", WithChift(), WithChiftAuth(creds), WithAPIBaseURL("https://api.chift.eu/")); err != nil {
		t.Fatal(err)
	}
	if _, err := Wrap(nil, WithZeroHashRequestID(), WithZeroHashAuth("k", testSecret, "p"), WithAPIBaseURL("https://api.test")); err != nil {
		t.Fatal(err)
	}
	if _, err := Wrap(nil, WithRequestIDHeader("idempotency-key"), WithServerDeduplication()); err != nil {
		t.Fatal(err)
	}
}

// Kind 9: retrying after "may have been sent" follows whether the server
// deduplicates on the key, as configured: one row per line of the README's
// table.
func TestRetryAfterMaybeSentFollowsDeduplication(t *testing.T) {
	for _, tc := range []struct {
		name    string
		header  string
		opts    []Option
		retried bool
	}{
		{"default header", DefaultRequestIDHeader, nil, true},
		{"WithChift", ChiftRequestIDHeader, []Option{WithChift()}, true},
		{"WithZeroHashRequestID", ZeroHashRequestIDHeader, []Option{WithZeroHashRequestID()}, false},
		{"custom header", "X-Op", []Option{WithRequestIDHeader("X-Op")}, false},
		{"custom header, WithServerDeduplication", "X-Op", []Option{WithRequestIDHeader("X-Op"), WithServerDeduplication()}, true},
		{"default header named by hand", DefaultRequestIDHeader, []Option{WithRequestIDHeader("idempotency-key")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first POST is processed and its answer lost.
			l, srv := newLedger(t, tc.header, func(n int) string {
				if n == 1 {
					return "drop"
				}
				return "answer"
			})
			srv.Start()
			defer srv.Close()
			tr := newTestTransport(t, srv.Client().Transport, tc.opts...)
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, strings.NewReader("{}"))
			resp, err := tr.RoundTrip(req)
			if tc.retried {
				if err != nil {
					t.Fatalf("err = %v, want a retry with the same key", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if key := stampedFromResponse(resp); l.count(key) != 2 || l.total() != 2 {
					t.Fatalf("key %s sent %d times (%d in all), want 2: the server deduplicates", key, l.count(key), l.total())
				}
				return
			}
			wantOutcomeUnknown(t, err, l)
			if l.total() != 1 {
				t.Fatalf("server processed %d requests, want 1", l.total())
			}
		})
	}
}

// stampedFromError is the value the Transport stamped, as the error tells
// it: the idempotency key, or the request id of a header that is not
// deduplicated on.
func stampedFromError(err error) string {
	return cmp.Or(KeyFromError(err), RequestIDFromError(err))
}

func stampedFromResponse(resp *http.Response) string {
	return cmp.Or(KeyFromResponse(resp), RequestIDFromResponse(resp))
}
