package saferetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRedactURL(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"no query", "https://api.example/v1/x", "https://api.example/v1/x"},
		{"query values", "https://api.example/v1/x?api_key=s3cr3t&page=2", "https://api.example/v1/x?api_key=REDACTED&page=REDACTED"},
		{"names repeated, order kept", "https://api.example/x?b=1&a=2&b=3", "https://api.example/x?b=REDACTED&a=REDACTED&b=REDACTED"},
		{"user info", "https://user:pw@api.example/x?token=t", "https://api.example/x?token=REDACTED"},
		{"fragment", "https://api.example/x?a=1#access_token=t", "https://api.example/x?a=REDACTED"},
		{"bare item", "https://api.example/x?s3cr3t&page=2", "https://api.example/x?REDACTED&page=REDACTED"},
		{"empty value", "https://api.example/x?api_key=&page=2", "https://api.example/x?api_key=&page=REDACTED"},
		{"escapes and = in the value", "https://api.example/x?sig=ab%2Bc%3D%3D&x=a=b", "https://api.example/x?sig=REDACTED&x=REDACTED"},
		{"semicolon is no separator", "https://api.example/x?a=1;b=s3cr3t", "https://api.example/x?a=REDACTED"},
		{"empty items", "https://api.example/x?a=1&&b=2", "https://api.example/x?a=REDACTED&&b=REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			req := &http.Request{URL: u}
			if got := redactURL(req); got != tt.want {
				t.Errorf("redactURL(%s) = %s, want %s", tt.raw, got, tt.want)
			}
			if got := redactRawURL(tt.raw); got != tt.want {
				t.Errorf("redactRawURL(%s) = %s, want %s", tt.raw, got, tt.want)
			}
			if req.URL.String() != u.String() || u.User.String() != mustParse(t, tt.raw).User.String() {
				t.Errorf("the request's URL was modified: %s", req.URL)
			}
		})
	}
	if got := redactURL(&http.Request{}); got != "" {
		t.Errorf("nil URL: %q", got)
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// A URL that does not parse (as a path given to NewRequest may not) is
// still shown without its secrets.
func TestRedactRawURLUnparsable(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"bad escape in the path", "https://api.example/%zz?api_key=s3cr3t#f", "https://api.example/%zz?api_key=REDACTED"},
		{"relative", "v1/%zz?api_key=s3cr3t", "v1/%zz?api_key=REDACTED"},
		{"user info", "https://user:s3cr3t@api.example/%zz", "REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := redactRawURL(tt.raw); got != tt.want {
				t.Errorf("redactRawURL(%s) = %s, want %s", tt.raw, got, tt.want)
			}
		})
	}
}

func TestRedactErrorKeepsTheChain(t *testing.T) {
	cause := &RequestError{Method: "POST", URL: "https://api.example/x?api_key=REDACTED", Key: "k-1", Attempts: 2, MaybeSent: true, Err: io.EOF}
	orig := &url.Error{Op: "Post", URL: "https://api.example/x?api_key=s3cr3t", Err: cause}
	err := redactError(orig)
	if strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "api_key=REDACTED") {
		t.Fatalf("error = %q", err)
	}
	var urlErr *url.Error
	if !errors.As(err, &urlErr) || !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, io.EOF) || KeyFromError(err) != "k-1" {
		t.Fatalf("chain lost: %v", err)
	}
	if orig.URL != "https://api.example/x?api_key=s3cr3t" {
		t.Fatalf("the original error was modified: %s", orig.URL)
	}
	if plain := io.EOF; redactError(plain) != plain {
		t.Fatal("an error without a URL was replaced")
	}
}

// TestRedactEndToEnd: a request whose query holds a secret, failing in
// the ways that show its URL, leaves the secret in no log line, no
// Attempt and no error, while the parameter name stays for debugging.
func TestRedactEndToEnd(t *testing.T) {
	tests := []struct {
		name  string
		serve func(n int32, w http.ResponseWriter) // n counts requests from 1
	}{
		{"503 then dropped connections", func(n int32, w http.ResponseWriter) {
			if n == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}},
		{"undecodable answer", func(_ int32, w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tt.serve(requests.Add(1), w)
			}))
			defer srv.Close()
			var logs bytes.Buffer
			var mu sync.Mutex
			var attempts []Attempt
			c, err := NewClient(srv.URL,
				WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
				WithObserver(func(a Attempt) {
					mu.Lock()
					defer mu.Unlock()
					attempts = append(attempts, a)
				}),
				WithMaxRetries(2), WithBackoff(time.Millisecond, 2*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}

			_, err = c.DoJSON(context.Background(), http.MethodPost, "v1/items?api_key=s3cr3t&page=2", map[string]int{"n": 1}, &struct{}{})
			if err == nil {
				t.Fatal("no error")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(attempts) == 0 {
				t.Fatal("no attempt observed")
			}
			check := func(where, text string, named bool) {
				t.Helper()
				if strings.Contains(text, "s3cr3t") {
					t.Errorf("%s leaks the secret: %s", where, text)
				}
				if named && !strings.Contains(text, "api_key") {
					t.Errorf("%s does not name api_key: %s", where, text)
				}
			}
			check("error", err.Error(), true)
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				check("log line", line, true)
			}
			for _, a := range attempts {
				check(fmt.Sprintf("attempt %d URL", a.Number), a.URL, true)
				if a.Err != nil {
					check(fmt.Sprintf("attempt %d error", a.Number), a.Err.Error(), false)
				}
			}
		})
	}
}
