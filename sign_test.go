package saferetry

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testSecret = "2mC4ZvVd4goRkuJm+rjr9byUiaUW1b6tVN4xy9QXNSE=" // the sample key of zerohash's docs

// verify recomputes a zerohash signature the way the docs describe it.
func verify(t *testing.T, h http.Header, method, route, body string) {
	t.Helper()
	key, _ := base64.StdEncoding.DecodeString(testSecret)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.Get("X-SCX-TIMESTAMP") + method + route + body))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if got := h.Get("X-SCX-SIGNED"); got != want {
		t.Errorf("X-SCX-SIGNED = %q, want %q for %s %s %s", got, want, method, route, body)
	}
	if h.Get("X-SCX-API-KEY") != "key-1" || h.Get("X-SCX-PASSPHRASE") != "pass-1" {
		t.Errorf("credentials missing: %v", h)
	}
}

// tickingClock advances 90 s per call, more than zerohash's 60 s window,
// so a reused timestamp would show.
func tickingClock() func() time.Time {
	var mu sync.Mutex
	now := time.Unix(1714445421, 0)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(90 * time.Second)
		return now
	}
}

func TestSignatureOnEveryAttempt(t *testing.T) {
	var mu sync.Mutex
	var headers []http.Header
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		bodies = append(bodies, string(b))
		n := len(headers)
		mu.Unlock()
		if n < 3 {
			w.Header().Set("Zh-Allow-Retry", "true")
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	tr := newTestTransport(t, nil, WithZeroHashAuth("key-1", testSecret, "pass-1"),
		WithAPIBaseURL(srv.URL), WithZeroHashClock(tickingClock()))
	req, _ := http.NewRequest("POST", srv.URL+"/transfers?x=1", strings.NewReader(`{"amount":"1.5"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(headers) != 3 {
		t.Fatalf("%d attempts, want 3", len(headers))
	}
	seen := map[string]bool{}
	for i, h := range headers {
		verify(t, h, "POST", "/transfers?x=1", `{"amount":"1.5"}`)
		ts := h.Get("X-SCX-TIMESTAMP")
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil || seen[ts] {
			t.Errorf("attempt %d timestamp %q is not a fresh Unix time", i+1, ts)
		}
		seen[ts] = true
		if bodies[i] != `{"amount":"1.5"}` || h.Get("X-Request-Id") != headers[0].Get("X-Request-Id") {
			t.Errorf("attempt %d: body %q, request id %q", i+1, bodies[i], h.Get("X-Request-Id"))
		}
	}
	if req.Header.Get("X-SCX-SIGNED") != "" {
		t.Fatal("the caller's request was signed in place")
	}
}

func TestGetIsSignedWithEmptyObject(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }))
	defer srv.Close()
	tr := newTestTransport(t, nil, WithZeroHashAuth("key-1", testSecret, "pass-1"), WithAPIBaseURL(srv.URL))
	req, _ := http.NewRequest("GET", srv.URL+"/transfers?client_transfer_id=a%2Fb&page=2", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	verify(t, got, "GET", "/transfers?client_transfer_id=a%2Fb&page=2", "{}")
}

func TestRedirectToAnotherHostCarriesNoCredentials(t *testing.T) {
	var elsewhere http.Header
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere = r.Header.Clone() }))
	defer other.Close()
	var home http.Header
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		home = r.Header.Clone()
		http.Redirect(w, r, other.URL+"/landing", http.StatusTemporaryRedirect)
	}))
	defer api.Close()
	hc, err := Wrap(nil, WithZeroHashAuth("key-1", testSecret, "pass-1"), WithAPIBaseURL(api.URL))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(api.URL+"/transfers", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if home.Get("X-SCX-SIGNED") == "" {
		t.Fatal("the API host got no signature")
	}
	if elsewhere == nil {
		t.Fatal("the redirect was not followed")
	}
	for _, h := range []string{"X-Scx-Api-Key", "X-Scx-Passphrase", "X-Scx-Signed", "X-Scx-Timestamp"} {
		if elsewhere.Get(h) != "" {
			t.Errorf("%s sent to another host", h)
		}
	}
}

func TestZeroHashAuthOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"secret not base64", []Option{WithZeroHashAuth("k", "not base64!!", "p"), WithAPIBaseURL("https://api.test")}, "not valid"},
		{"empty key", []Option{WithZeroHashAuth("", testSecret, "p"), WithAPIBaseURL("https://api.test")}, "must not be empty"},
		{"no host", []Option{WithZeroHashAuth("k", testSecret, "p")}, "no API host"},
		{"bad signing URL", []Option{WithAPIBaseURL("ftp://x")}, "WithAPIBaseURL"},
		{"nil clock", []Option{WithZeroHashClock(nil)}, "WithZeroHashClock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTransport(nil, tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "not base64!!") || strings.Contains(err.Error(), testSecret) {
				t.Fatalf("err %q repeats the secret", err)
			}
		})
	}
}
