package saferetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestKeyStampedOnceAndReusedAcrossRetries(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader,
		answer(503, "busy"), failure(errConnReset, true), answer(502, "<html>bad gateway</html>"), answer(201, `{"id":"inv_1"}`))
	tr := newTestTransport(t, mt, WithMaxRetries(3))

	resp, err := tr.RoundTrip(newPost(t, `{"total":10}`))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("status = %d, want 201", resp.StatusCode)
	}
	keys := api.seenKeys()
	if len(keys) != 4 {
		t.Fatalf("attempts = %d, want 4", len(keys))
	}
	u, err := uuid.Parse(keys[0])
	if err != nil || u.Version() != 4 {
		t.Fatalf("key %q is not a UUIDv4", keys[0])
	}
	for i, k := range keys {
		if k != keys[0] {
			t.Errorf("attempt %d key = %q, want %q", i+1, k, keys[0])
		}
	}
	for i, b := range api.seenBodies() {
		if b != `{"total":10}` {
			t.Errorf("attempt %d body = %q", i+1, b)
		}
	}
	if got := KeyFromResponse(resp); got != keys[0] {
		t.Errorf("KeyFromResponse = %q, want %q", got, keys[0])
	}
}

func TestEachLogicalRequestGetsItsOwnKey(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(200, "{}"), answer(200, "{}"))
	tr := newTestTransport(t, mt)
	for range 2 {
		resp, err := tr.RoundTrip(newPost(t, "{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	keys := api.seenKeys()
	if keys[0] == keys[1] || keys[0] == "" {
		t.Fatalf("keys %q: want two distinct keys", keys)
	}
}

func TestCallerKeyIsKept(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, answer(503, ""), answer(200, "{}"))
	tr := newTestTransport(t, mt, WithChift())
	req := newPost(t, "{}")
	req.Header.Set(ChiftRequestIDHeader, "invoice-2026-0042")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := api.seenKeys(); !reflect.DeepEqual(got, []string{"invoice-2026-0042", "invoice-2026-0042"}) {
		t.Fatalf("keys = %q", got)
	}
}

func TestMethodsStamped(t *testing.T) {
	zh := []Option{WithZeroHashRequestID()}
	tests := []struct {
		method string
		opts   []Option
		header string
		want   bool
	}{
		{"POST", nil, DefaultRequestIDHeader, true},
		{"PATCH", nil, DefaultRequestIDHeader, true},
		{"GET", nil, DefaultRequestIDHeader, false},
		{"PUT", nil, DefaultRequestIDHeader, false},
		{"PUT", []Option{WithStampedMethods("put", "POST")}, DefaultRequestIDHeader, true},
		{"PATCH", []Option{WithStampedMethods("PUT")}, DefaultRequestIDHeader, false},
		{"GET", zh, ZeroHashRequestIDHeader, true},
		{"DELETE", zh, ZeroHashRequestIDHeader, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %d", tt.method, tt.header, len(tt.opts)), func(t *testing.T) {
			mt, api := newMockAPI(t, tt.header, answer(200, "{}"))
			tr := newTestTransport(t, mt, tt.opts...)
			req, _ := http.NewRequest(tt.method, testURL, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := api.seenKeys()[0] != ""; got != tt.want {
				t.Fatalf("stamped = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCallerRequestIsNotModified(t *testing.T) {
	mt, _ := newMockAPI(t, DefaultRequestIDHeader, answer(503, ""), answer(200, "{}"))
	tr := newTestTransport(t, mt)
	req := newPost(t, `{"a":1}`)
	req.Header.Set("X-Custom", "v")
	before := req.Clone(req.Context())
	bodyBefore, getBodyBefore, ctxBefore := req.Body, req.GetBody, req.Context()

	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !reflect.DeepEqual(req.Header, before.Header) {
		t.Errorf("header changed: %v, was %v", req.Header, before.Header)
	}
	if req.URL.String() != before.URL.String() || req.Method != before.Method || req.ContentLength != before.ContentLength {
		t.Errorf("request line changed")
	}
	if req.Body != bodyBefore || req.Context() != ctxBefore || reflect.ValueOf(req.GetBody).Pointer() != reflect.ValueOf(getBodyBefore).Pointer() {
		t.Errorf("body, GetBody or context replaced on the caller's request")
	}
}

func TestBodyClosedExactlyOnce(t *testing.T) {
	tests := []struct {
		name    string
		getBody bool
		key     string
		replies []reply
		wantErr bool
	}{
		{"GetBody, success after retry", true, "", []reply{answer(503, ""), answer(200, "{}")}, false},
		{"no GetBody, buffered, retried", false, "", []reply{answer(503, ""), answer(200, "{}")}, false},
		{"invalid key, nothing sent", false, "bad\nkey", nil, true},
		{"retries exhausted on errors", true, "", []reply{failure(errConnReset, false), failure(errConnReset, false)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader, tt.replies...)
			tr := newTestTransport(t, mt, WithMaxRetries(1))
			body := &closeCounter{Reader: strings.NewReader(`{"x":1}`)}
			req, _ := http.NewRequest("POST", testURL, body)
			if tt.getBody {
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(`{"x":1}`)), nil }
			}
			if tt.key != "" {
				req.Header[DefaultRequestIDHeader] = []string{tt.key}
			}
			resp, err := tr.RoundTrip(req)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if resp != nil {
				resp.Body.Close()
			}
			if n := body.closeCount(); n != 1 {
				t.Fatalf("body closed %d times, want 1", n)
			}
			if api.attempts() != len(tt.replies) {
				t.Fatalf("attempts = %d, want %d", api.attempts(), len(tt.replies))
			}
		})
	}
}

func TestInvalidKeyRefusedBeforeSending(t *testing.T) {
	tests := map[string]string{
		"empty":       "",
		"blank":       "   ",
		"too long":    strings.Repeat("k", 256),
		"control":     "abc\x01",
		"newline":     "abc\ndef",
		"non-ascii":   "clé",
		"delete byte": "abc\x7f",
	}
	for name, key := range tests {
		t.Run(name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader)
			tr := newTestTransport(t, mt)
			req := newPost(t, "{}")
			req.Header[DefaultRequestIDHeader] = []string{key}
			resp, err := tr.RoundTrip(req)
			if resp != nil || !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("got %v, %v; want ErrInvalidKey", resp, err)
			}
			if !strings.HasPrefix(err.Error(), "saferetry: ") || !strings.Contains(err.Error(), DefaultRequestIDHeader) {
				t.Errorf("error %q does not name the header", err)
			}
			if api.attempts() != 0 {
				t.Fatalf("%d attempts sent", api.attempts())
			}
		})
	}
	t.Run("255 characters accepted", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(200, "{}"))
		tr := newTestTransport(t, mt)
		req := newPost(t, "{}")
		req.Header.Set(DefaultRequestIDHeader, strings.Repeat("k", 255))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if api.attempts() != 1 {
			t.Fatal("not sent")
		}
	})
	t.Run("two key headers", func(t *testing.T) {
		mt, _ := newMockAPI(t, DefaultRequestIDHeader)
		tr := newTestTransport(t, mt)
		req := newPost(t, "{}")
		req.Header[DefaultRequestIDHeader] = []string{"a", "b"}
		if _, err := tr.RoundTrip(req); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("zerohash key must be a UUIDv4", func(t *testing.T) {
		mt, api := newMockAPI(t, ZeroHashRequestIDHeader)
		tr := newTestTransport(t, mt, WithZeroHashRequestID())
		req := newPost(t, "{}")
		req.Header.Set(ZeroHashRequestIDHeader, "not-a-uuid")
		if _, err := tr.RoundTrip(req); !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), "UUIDv4") {
			t.Fatalf("err = %v", err)
		}
		if api.attempts() != 0 {
			t.Fatal("sent")
		}
	})
	t.Run("generated key is validated", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader)
		tr := newTestTransport(t, mt, WithKeyGenerator(func() (string, error) { return "bad key\n", nil }))
		if _, err := tr.RoundTrip(newPost(t, "{}")); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("err = %v", err)
		}
		if api.attempts() != 0 {
			t.Fatal("sent")
		}
	})
}

func TestLargeBodyWithoutGetBody(t *testing.T) {
	big := strings.Repeat("x", 100)
	t.Run("within the limit: buffered and retried", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader, failure(errConnReset, true), answer(200, "{}"))
		tr := newTestTransport(t, mt, WithMaxBufferedBody(100))
		req, _ := http.NewRequest("POST", testURL, io.NopCloser(strings.NewReader(big)))
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := api.seenBodies(); len(got) != 2 || got[0] != big || got[1] != big {
			t.Fatalf("bodies = %d, want the same 100 bytes twice", len(got))
		}
	})
	t.Run("over the limit: sent once, never retried", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader, failure(errConnReset, true), answer(200, "{}"))
		tr := newTestTransport(t, mt, WithMaxBufferedBody(99))
		body := &closeCounter{Reader: strings.NewReader(big)}
		req, _ := http.NewRequest("POST", testURL, body)
		_, err := tr.RoundTrip(req)
		if !errors.Is(err, errConnReset) || !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("err = %v, want the connection error, outcome unknown", err)
		}
		if got := api.seenBodies(); len(got) != 1 || got[0] != big {
			t.Fatalf("attempts = %d, want 1 with the whole body", len(got))
		}
	})
	t.Run("over the limit: a 503 is returned, not retried", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(503, "busy"))
		tr := newTestTransport(t, mt, WithMaxBufferedBody(10))
		req, _ := http.NewRequest("POST", testURL, io.NopCloser(strings.NewReader(big)))
		resp, err := tr.RoundTrip(req)
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("got %v, %v", resp, err)
		}
		resp.Body.Close()
		if api.attempts() != 1 {
			t.Fatalf("attempts = %d", api.attempts())
		}
	})
}

func TestWhatIsRetried(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		opts     []Option
		first    reply
		retried  bool
		noHeader bool
	}{
		{"keyed POST, 502", "POST", nil, answer(502, ""), true, false},
		{"keyed POST, 503", "POST", nil, answer(503, ""), true, false},
		{"keyed POST, 504", "POST", nil, answer(504, ""), true, false},
		{"keyed POST, 408", "POST", nil, answer(408, ""), true, false},
		{"keyed POST, 429", "POST", nil, answer(429, ""), true, false},
		{"keyed POST, 500", "POST", nil, answer(500, ""), false, false},
		{"keyed POST, 400", "POST", nil, answer(400, `{"message":"bad"}`), false, false},
		{"keyed POST, 401", "POST", nil, answer(401, ""), false, false},
		{"keyed POST, 404", "POST", nil, answer(404, ""), false, false},
		{"keyed POST, error after sending", "POST", nil, failure(errConnReset, true), true, false},
		{"keyed POST, error before sending", "POST", nil, failure(errConnReset, false), true, false},
		{"unkeyed POST, 503", "POST", []Option{WithStampedMethods("PUT")}, answer(503, ""), false, true},
		{"unkeyed POST, error after sending", "POST", []Option{WithStampedMethods("PUT")}, failure(errConnReset, true), false, true},
		{"unkeyed POST, error before sending", "POST", []Option{WithStampedMethods("PUT")}, failure(errConnReset, false), true, true},
		{"GET, 503", "GET", nil, answer(503, ""), true, true},
		{"GET, error after sending", "GET", nil, failure(errConnReset, true), true, true},
		{"DELETE, 504", "DELETE", nil, answer(504, ""), true, true},
		{"zerohash POST, 502", "POST", []Option{WithZeroHashRequestID()}, answer(502, ""), false, false},
		{"zerohash POST, 503 without zh-allow-retry", "POST", []Option{WithZeroHashRequestID()}, answer(503, ""), false, false},
		{"zerohash POST, 503 zh-allow-retry", "POST", []Option{WithZeroHashRequestID()}, reply{status: 503, header: http.Header{"Zh-Allow-Retry": {"true"}}}, true, false},
		{"zerohash POST, 429", "POST", []Option{WithZeroHashRequestID()}, reply{status: 429, header: http.Header{"Retry-After": {"0"}}}, true, false},
		{"zerohash POST, bare 429: the 10 s lock-out does not fit the retry cap", "POST", []Option{WithZeroHashRequestID(), WithMaxRetryAfter(5 * time.Second)}, answer(429, ""), false, false},
		{"zerohash POST, error after sending", "POST", []Option{WithZeroHashRequestID()}, failure(errConnReset, true), false, false},
		{"zerohash POST, error before sending", "POST", []Option{WithZeroHashRequestID()}, failure(errConnReset, false), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mt, api := newMockAPI(t, DefaultRequestIDHeader, tt.first, answer(200, "{}"))
			tr := newTestTransport(t, mt, tt.opts...)
			req, _ := http.NewRequest(tt.method, testURL, strings.NewReader("{}"))
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			wantAttempts := 1
			if tt.retried {
				wantAttempts = 2
			}
			if api.attempts() != wantAttempts {
				t.Fatalf("attempts = %d, want %d (err %v)", api.attempts(), wantAttempts, err)
			}
			if tt.retried && (err != nil || resp.StatusCode != 200) {
				t.Fatalf("after retry: %v, %v", resp, err)
			}
			if !tt.retried && tt.first.err != nil && !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
			}
		})
	}
}

func TestRetriesExhaustedReturnLastResponse(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(503, "first"), answer(429, "second"), answer(503, "last one"))
	tr := newTestTransport(t, mt, WithMaxRetries(2))
	resp, err := tr.RoundTrip(newPost(t, "{}"))
	if err != nil {
		t.Fatalf("err = %v, want the last response", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "last one" || api.attempts() != 3 {
		t.Fatalf("got %d %q after %d attempts", resp.StatusCode, body, api.attempts())
	}
}

func TestRetriesExhaustedOnErrors(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader, failure(errConnReset, false), failure(errConnReset, true), failure(errConnReset, false))
	tr := newTestTransport(t, mt, WithMaxRetries(2))
	_, err := tr.RoundTrip(newPost(t, "{}"))
	var reqErr *RequestError
	if !errors.As(err, &reqErr) {
		t.Fatalf("err = %T %v, want *RequestError", err, err)
	}
	if reqErr.Attempts != 3 || !reqErr.MaybeSent || reqErr.Key != api.seenKeys()[0] {
		t.Fatalf("RequestError = %+v", reqErr)
	}
	if !errors.Is(err, errConnReset) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err %v does not wrap the cause and ErrOutcomeUnknown", err)
	}
	if !strings.Contains(err.Error(), "3 attempt(s)") || KeyFromError(err) != reqErr.Key {
		t.Fatalf("err = %q", err)
	}
}

func TestNeverSentErrorIsNotOutcomeUnknown(t *testing.T) {
	mt, _ := newMockAPI(t, DefaultRequestIDHeader, failure(errConnReset, false))
	tr := newTestTransport(t, mt, WithMaxRetries(0))
	_, err := tr.RoundTrip(newPost(t, "{}"))
	if err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v: a request that never left has a known outcome", err)
	}
}

func TestAlreadyProcessedIsTypedError(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, failure(errConnReset, true), answer(409, alreadyProcessedBody))
	tr := newTestTransport(t, mt, WithChift())
	resp, err := tr.RoundTrip(newPost(t, "{}"))
	if resp != nil {
		t.Fatalf("resp = %v, want nil", resp.Status)
	}
	if !errors.Is(err, ErrRequestAlreadyProcessed) {
		t.Fatalf("err = %v, want ErrRequestAlreadyProcessed", err)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %T, want *APIError", err)
	}
	if apiErr.Key != api.seenKeys()[0] || apiErr.OriginalStatus != 200 || apiErr.StatusCode != 409 {
		t.Fatalf("APIError = %+v", apiErr)
	}
	if api.attempts() != 2 {
		t.Fatalf("attempts = %d, want 2", api.attempts())
	}
}

func TestInProcessIsWaitedOut(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, answer(409, inProcessBody), answer(409, inProcessBody), answer(200, `{"id":"inv_9"}`))
	var codes []string
	tr := newTestTransport(t, mt, WithChift(), WithObserver(func(a Attempt) { codes = append(codes, a.Code) }))
	resp, err := tr.RoundTrip(newPost(t, "{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || api.attempts() != 3 {
		t.Fatalf("status %d after %d attempts", resp.StatusCode, api.attempts())
	}
	if want := []string{"REQUEST_IN_PROCESS", "REQUEST_IN_PROCESS", ""}; !reflect.DeepEqual(codes, want) {
		t.Fatalf("observed codes %q, want %q", codes, want)
	}
}

func TestInProcessAfterRetriesIsTypedError(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, answer(409, inProcessBody), answer(409, inProcessBody))
	tr := newTestTransport(t, mt, WithChift(), WithMaxRetries(1))
	resp, err := tr.RoundTrip(newPost(t, "{}"))
	var apiErr *APIError
	if resp != nil || !errors.Is(err, ErrRequestInProcess) || !errors.As(err, &apiErr) {
		t.Fatalf("got %v, %v; want ErrRequestInProcess", resp, err)
	}
	if apiErr.Key != api.seenKeys()[0] || apiErr.Key == "" || apiErr.RequestID != "" {
		t.Fatalf("Key = %q, RequestID = %q", apiErr.Key, apiErr.RequestID)
	}
}

func TestOther409PassesThrough(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, answer(409, invoiceNumberBody))
	tr := newTestTransport(t, mt, WithChift())
	resp, err := tr.RoundTrip(newPost(t, "{}"))
	if err != nil {
		t.Fatalf("err = %v, want the 409 response", err)
	}
	defer resp.Body.Close()
	apiErr := CheckResponse(resp).(*APIError)
	if apiErr.Code != "ERROR_INVOICE_NUMBER_ALREADY_USED" || errors.Is(apiErr, ErrRequestAlreadyProcessed) || errors.Is(apiErr, ErrRequestInProcess) {
		t.Fatalf("CheckResponse = %+v", apiErr)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 409 || string(body) != invoiceNumberBody || api.attempts() != 1 {
		t.Fatalf("got %d %q after %d attempts", resp.StatusCode, body, api.attempts())
	}
}

func TestDraftConflictsForTheDefaultHeader(t *testing.T) {
	tests := []struct {
		name     string
		opts     []Option
		replies  []reply
		wantCode int
		wantErr  error
		attempts int
	}{
		{"bare 409 to a first attempt passes through", nil,
			[]reply{answer(409, `{"title":"conflict"}`)}, 409, nil, 1},
		{"bare 409 after a lost response is waited out", nil,
			[]reply{failure(errConnReset, true), answer(409, `{"title":"A request is outstanding for this Idempotency-Key"}`), answer(201, "{}")}, 201, nil, 3},
		{"bare 409 after a lost response, retries spent: the server's answer", []Option{WithMaxRetries(1)},
			[]reply{failure(errConnReset, true), answer(409, "")}, 409, nil, 2},
		{"stored business 409 replayed to every retry comes back as the response", nil,
			[]reply{failure(errConnReset, true), answer(409, `{"title":"e-mail already registered"}`), answer(409, `{"title":"e-mail already registered"}`),
				answer(409, `{"title":"e-mail already registered"}`)}, 409, nil, 4},
		{"bare 409 after a 503 (may have been processed) is waited out", nil,
			[]reply{answer(503, ""), answer(409, `{"title":"conflict"}`), answer(201, "{}")}, 201, nil, 3},
		{"a 409 marked Idempotent-Replayed is the stored answer at once", nil,
			[]reply{failure(errConnReset, true), {status: 409, body: `{"title":"e-mail already registered"}`, header: http.Header{"Idempotent-Replayed": {"true"}}}}, 409, nil, 2},
		{"422 to a retry is the server's answer", nil,
			[]reply{failure(errConnReset, true), answer(422, `{"title":"validation failed"}`)}, 422, nil, 2},
		{"422 to a first attempt passes through", nil,
			[]reply{answer(422, `{"title":"invalid"}`)}, 422, nil, 1},
		{"Chift header: bare 409 after a lost response passes through", []Option{WithChift()},
			[]reply{failure(errConnReset, true), answer(409, `{"message":"conflict"}`)}, 409, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := DefaultRequestIDHeader
			mt, api := newMockAPI(t, header, tt.replies...)
			tr := newTestTransport(t, mt, tt.opts...)
			resp, err := tr.RoundTrip(newPost(t, "{}"))
			if tt.wantErr != nil {
				if resp != nil || !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want %v", resp, err, tt.wantErr)
				}
			} else {
				if err != nil || resp.StatusCode != tt.wantCode {
					t.Fatalf("got %v, %v; want %d", resp, err, tt.wantCode)
				}
				resp.Body.Close()
			}
			if api.attempts() != tt.attempts {
				t.Fatalf("attempts = %d, want %d", api.attempts(), tt.attempts)
			}
		})
	}
}

func TestRetryAfterHonouredAndCapped(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		mt, _ := newMockAPI(t, DefaultRequestIDHeader,
			reply{status: 429, header: http.Header{"Retry-After": {"1"}}}, answer(200, "{}"))
		var waits []time.Duration
		tr := newTestTransport(t, mt, WithObserver(func(a Attempt) { waits = append(waits, a.Wait) }))
		resp, err := tr.RoundTrip(newPost(t, "{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if len(waits) != 2 || waits[0] != time.Second {
			t.Fatalf("waits = %v, want [1s 0s]", waits)
		}
	})
	t.Run("over the cap: response returned", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader,
			reply{status: 503, header: http.Header{"Retry-After": {"120"}}})
		tr := newTestTransport(t, mt, WithMaxRetryAfter(time.Minute))
		resp, err := tr.RoundTrip(newPost(t, "{}"))
		if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "120" {
			t.Fatalf("got %v, %v", resp, err)
		}
		resp.Body.Close()
		if api.attempts() != 1 {
			t.Fatalf("attempts = %d", api.attempts())
		}
	})
	t.Run("beyond the context deadline: response returned at once", func(t *testing.T) {
		mt, api := newMockAPI(t, DefaultRequestIDHeader,
			reply{status: 503, header: http.Header{"Retry-After": {"25"}}})
		tr := newTestTransport(t, mt)
		// "At once" is anything well short of the deadline: a transport
		// that waited for it would take the whole 20 s.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		resp, err := tr.RoundTrip(newPost(t, "{}").WithContext(ctx))
		if err != nil || resp.StatusCode != 503 {
			t.Fatalf("got %v, %v", resp, err)
		}
		resp.Body.Close()
		if api.attempts() != 1 || time.Since(start) > 10*time.Second {
			t.Fatalf("attempts = %d after %v", api.attempts(), time.Since(start))
		}
	})
}

func TestCancelDuringBackoffReturnsAtOnce(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(503, ""), answer(200, "{}"))
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := NewTransport(mt, WithBackoff(time.Minute, time.Minute), WithObserver(func(a Attempt) {
		if a.Retry {
			cancel()
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := tr.RoundTrip(newPost(t, "{}").WithContext(ctx))
	if resp != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, %v; want context.Canceled", resp, err)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second { // the wait is a minute
		t.Fatalf("returned after %v; the wait was not cut short", elapsed)
	}
	if api.attempts() != 1 || KeyFromError(err) == "" {
		t.Fatalf("attempts = %d, key %q", api.attempts(), KeyFromError(err))
	}
}

func TestObserverAndLogSeeEveryAttempt(t *testing.T) {
	mt, api := newMockAPI(t, DefaultRequestIDHeader, answer(503, ""), failure(errConnReset, true), answer(201, "{}"))
	var got []Attempt
	var mu sync.Mutex
	var logBuf bytes.Buffer
	tr := newTestTransport(t, mt, WithObserver(func(a Attempt) {
		mu.Lock()
		got = append(got, a)
		mu.Unlock()
	}), WithLogger(newTestLogger(&logBuf)))
	req := newPost(t, "{}")
	req.Header.Set("Authorization", "Bearer secret-token-123")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(got) != 3 {
		t.Fatalf("observed %d attempts, want 3", len(got))
	}
	key := api.seenKeys()[0]
	want := []struct {
		status int
		retry  bool
		err    bool
	}{{503, true, false}, {0, true, true}, {201, false, false}}
	for i, a := range got {
		if a.Number != i+1 || a.Key != key || a.StatusCode != want[i].status || a.Retry != want[i].retry || (a.Err != nil) != want[i].err {
			t.Errorf("attempt %d = %+v", i+1, a)
		}
	}
	logs := logBuf.String()
	if strings.Count(logs, "saferetry attempt") != 3 || !strings.Contains(logs, key) {
		t.Errorf("log = %s", logs)
	}
	if strings.Contains(logs, "secret-token-123") {
		t.Errorf("log leaks the Authorization header: %s", logs)
	}
}

func TestServerRequestIDAndKeyReadable(t *testing.T) {
	mt, api := newMockAPI(t, ZeroHashRequestIDHeader, reply{status: 200, body: "{}", header: http.Header{"X-Request-Id": {"srv-echo-1"}}})
	tr := newTestTransport(t, mt, WithZeroHashRequestID())
	req, _ := http.NewRequest("GET", testURL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ServerRequestID(resp) != "srv-echo-1" || stampedFromResponse(resp) != api.seenKeys()[0] {
		t.Fatalf("ServerRequestID %q, stamped %q, sent %q", ServerRequestID(resp), stampedFromResponse(resp), api.seenKeys()[0])
	}
}

func TestWrapThroughHTTPClient(t *testing.T) {
	mt, api := newMockAPI(t, ChiftRequestIDHeader, answer(502, ""), answer(409, alreadyProcessedBody))
	orig := &http.Client{Transport: mt, Timeout: 10 * time.Second}
	hc, err := Wrap(orig, WithChift(), fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	if orig.Transport != mt {
		t.Fatal("Wrap modified the caller's client")
	}
	_, err = hc.Post(testURL, "application/json", strings.NewReader("{}"))
	var urlErr *url.Error
	if !errors.As(err, &urlErr) || !errors.Is(err, ErrRequestAlreadyProcessed) || KeyFromError(err) != api.seenKeys()[0] {
		t.Fatalf("err = %v", err)
	}
}

// Keys come out of batches shared by goroutines: each must be a UUIDv4 in
// its canonical text form, and none may be handed out twice.
func TestNewUUIDKeysAreDistinctUUIDv4s(t *testing.T) {
	const goroutines, perGoroutine = 8, 2000
	keys := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				k, err := newUUIDKey()
				if err != nil {
					t.Error(err)
					return
				}
				keys[g] = append(keys[g], k)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ks := range keys {
		for _, k := range ks {
			u, err := uuid.Parse(k)
			if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || u.String() != k {
				t.Fatalf("key %q: not a UUIDv4 in canonical form (%v)", k, err)
			}
			if seen[k] {
				t.Fatalf("key %q handed out twice", k)
			}
			seen[k] = true
		}
	}
	if len(seen) != goroutines*perGoroutine {
		t.Fatalf("%d keys, want %d", len(seen), goroutines*perGoroutine)
	}
}
