package saferetry

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// constructors runs every constructor that takes options, so each option is
// checked the same way by all three.
var constructors = []struct {
	name string
	make func(opts ...Option) error
}{
	{"NewTransport", func(opts ...Option) error { _, err := NewTransport(nil, opts...); return err }},
	{"Wrap", func(opts ...Option) error { _, err := Wrap(nil, opts...); return err }},
	{"NewClient", func(opts ...Option) error { _, err := NewClient("https://api.example/v1", opts...); return err }},
}

func TestOptionInvalid(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want []string // every string must be in the one error
	}{
		{"negative retries", []Option{WithMaxRetries(-1)}, []string{"WithMaxRetries"}},
		{"backoff initial above max", []Option{WithBackoff(2*time.Second, time.Second)}, []string{"WithBackoff"}},
		{"backoff zero initial", []Option{WithBackoff(0, time.Second)}, []string{"WithBackoff"}},
		{"backoff zero max", []Option{WithBackoff(time.Second, 0)}, []string{"WithBackoff"}},
		{"empty header", []Option{WithRequestIDHeader("")}, []string{"WithRequestIDHeader"}},
		{"header with space", []Option{WithRequestIDHeader("bad header")}, []string{"WithRequestIDHeader"}},
		{"header with colon", []Option{WithRequestIDHeader("X-Key:")}, []string{"WithRequestIDHeader"}},
		{"negative attempt timeout", []Option{WithAttemptTimeout(-1)}, []string{"WithAttemptTimeout"}},
		{"zero max retry after", []Option{WithMaxRetryAfter(0)}, []string{"WithMaxRetryAfter"}},
		{"negative buffered body", []Option{WithMaxBufferedBody(-1)}, []string{"WithMaxBufferedBody"}},
		{"nil observer", []Option{WithObserver(nil)}, []string{"WithObserver"}},
		{"nil key generator", []Option{WithKeyGenerator(nil)}, []string{"WithKeyGenerator"}},
		{"nil http client", []Option{WithHTTPClient(nil)}, []string{"WithHTTPClient"}},
		{"no stamped methods", []Option{WithStampedMethods()}, []string{"WithStampedMethods"}},
		{"bad stamped method", []Option{WithStampedMethods("PO ST")}, []string{"WithStampedMethods"}},
		{"nil option", []Option{WithMaxRetries(1), nil}, []string{"option 1 is nil"}},
		{"two invalid", []Option{WithMaxRetries(-1), WithObserver(nil)}, []string{"WithMaxRetries", "WithObserver"}},
	}
	for _, tt := range tests {
		for _, ctor := range constructors {
			t.Run(tt.name+"/"+ctor.name, func(t *testing.T) {
				err := ctor.make(tt.opts...)
				if err == nil {
					t.Fatalf("%s succeeded, want an error naming %q", ctor.name, tt.want)
				}
				if !strings.HasPrefix(err.Error(), "saferetry: ") {
					t.Errorf("error %q does not start with %q", err, "saferetry: ")
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
			})
		}
	}
}

func TestOptionValid(t *testing.T) {
	opts := []Option{
		WithMaxRetries(0),
		WithBackoff(time.Millisecond, time.Millisecond),
		WithRequestIDHeader("x-chift-client-requestid"),
		WithAttemptTimeout(0),
		WithMaxRetryAfter(time.Second),
		WithMaxBufferedBody(0),
		WithObserver(func(Attempt) {}),
		WithKeyGenerator(func() (string, error) { return "k", nil }),
		WithStampedMethods("post", "PUT"),
		WithLogger(nil),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	for _, ctor := range constructors {
		t.Run(ctor.name, func(t *testing.T) {
			if err := ctor.make(opts...); err != nil {
				t.Fatalf("%s: %v", ctor.name, err)
			}
		})
	}

	tr, err := NewTransport(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"header", tr.cfg.header, "X-Chift-Client-Requestid"},
		{"maxRetries", tr.cfg.maxRetries, 0},
		{"backoff", [2]time.Duration{tr.cfg.backoffInitial, tr.cfg.backoffMax}, [2]time.Duration{time.Millisecond, time.Millisecond}},
		{"maxRetryAfter", tr.cfg.maxRetryAfter, time.Second},
		{"maxBufferedBody", tr.cfg.maxBufferedBody, int64(0)},
		{"stampMethods", tr.cfg.stampMethods, map[string]bool{"POST": true, "PUT": true}},
		{"draftConflicts", tr.cfg.draftConflicts, false},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("cfg.%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// recordingTransport answers every request with 201 and records the
// idempotency headers it saw.
type recordingTransport struct {
	mu   sync.Mutex
	seen []http.Header
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Header.Clone())
	r.mu.Unlock()
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusCreated, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

// The preset headers must find a key the caller set with Header.Set, which
// stores it under the canonical name.
func TestOptionPresetHeaderFindsCallerKey(t *testing.T) {
	tests := []struct {
		name   string
		opt    Option
		header string
		key    string
	}{
		{"chift", WithChift(), ChiftRequestIDHeader, "inv-2024-0001"},
		{"zerohash", WithZeroHashRequestID(), ZeroHashRequestIDHeader, "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{"default", WithMaxRetries(0), DefaultRequestIDHeader, "order-42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := &recordingTransport{}
			var observed []string
			tr, err := NewTransport(base, tt.opt, WithObserver(func(a Attempt) { observed = append(observed, cmp.Or(a.Key, a.RequestID)) }))
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://api.example/x", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(tt.header, tt.key)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if len(base.seen) != 1 {
				t.Fatalf("base saw %d attempts, want 1", len(base.seen))
			}
			if got := base.seen[0].Values(tt.header); len(got) != 1 || got[0] != tt.key {
				t.Errorf("wire %s = %q, want [%q]", tt.header, got, tt.key)
			}
			if got := stampedFromResponse(resp); got != tt.key {
				t.Errorf("KeyFromResponse = %q, want the caller's key %q", got, tt.key)
			}
			if len(observed) != 1 || observed[0] != tt.key {
				t.Errorf("observer keys = %q, want [%q]", observed, tt.key)
			}
		})
	}
}

func TestNewClientBaseURL(t *testing.T) {
	invalid := []struct {
		name, raw string
		secret    string // must not appear in the error
	}{
		{"empty", "", ""},
		{"ftp", "ftp://x", ""},
		{"relative", "/relative", ""},
		{"no host", "http://", ""},
		{"user info", "http://user:pass@host", "pass"},
		{"user info, bad port", "http://user:s3cret@host:port/", "s3cret"},
		{"user info, bad escape", "https://user:s3cret@host/%zz", "s3cret"},
		{"query", "http://h/?q=1", ""},
		{"fragment", "http://h/#frag", ""},
	}
	for _, tt := range invalid {
		t.Run("invalid "+tt.name, func(t *testing.T) {
			c, err := NewClient(tt.raw)
			if err == nil {
				t.Fatalf("NewClient(%q) = %v, nil; want an error", tt.raw, c)
			}
			if !strings.Contains(err.Error(), "base URL") {
				t.Errorf("error %q does not name the base URL", err)
			}
			if !strings.HasPrefix(err.Error(), "saferetry: ") {
				t.Errorf("error %q does not start with %q", err, "saferetry: ")
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}

	c, err := NewClient("http://127.0.0.1:8080/api/")
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	paths := []struct {
		path, want string
	}{
		{"v1/x?y=1", "http://127.0.0.1:8080/api/v1/x?y=1"},
		{"/v1/x?y=1", "http://127.0.0.1:8080/api/v1/x?y=1"},
		{"/v1/x", "http://127.0.0.1:8080/api/v1/x"},
		// An escaped slash inside one segment (an id holding "/") must stay
		// escaped, or the request goes to another path.
		{"v1/items/a%2Fb", "http://127.0.0.1:8080/api/v1/items/a%2Fb"},
	}
	for _, tt := range paths {
		t.Run("path "+tt.path, func(t *testing.T) {
			req, err := c.NewRequest(context.Background(), http.MethodGet, tt.path, nil)
			if err != nil {
				t.Fatalf("NewRequest(%q): %v", tt.path, err)
			}
			if got := req.URL.String(); got != tt.want {
				t.Errorf("URL = %q, want %q", got, tt.want)
			}
		})
	}
	for _, path := range []string{"http://evil.example/x", "//evil.example/x"} {
		t.Run("refused "+path, func(t *testing.T) {
			req, err := c.NewRequest(context.Background(), http.MethodGet, path, nil)
			if err == nil {
				t.Fatalf("NewRequest(%q) = %s, want an error", path, req.URL)
			}
			if !strings.HasPrefix(err.Error(), "saferetry: ") {
				t.Errorf("error %q does not start with %q", err, "saferetry: ")
			}
		})
	}
}

func TestWrap(t *testing.T) {
	t.Run("does not modify the client", func(t *testing.T) {
		base := &recordingTransport{}
		errStop := errors.New("stop")
		redirect := func(*http.Request, []*http.Request) error { return errStop }
		orig := &http.Client{Transport: base, Timeout: 7 * time.Second, CheckRedirect: redirect}
		wrapped, err := Wrap(orig, WithMaxRetries(1))
		if err != nil {
			t.Fatal(err)
		}
		if wrapped == orig {
			t.Fatal("Wrap returned the client it was given")
		}
		if orig.Transport != base {
			t.Errorf("orig.Transport = %T, want the original transport", orig.Transport)
		}
		if orig.Timeout != 7*time.Second {
			t.Errorf("orig.Timeout = %v, want 7s", orig.Timeout)
		}
		if reflect.ValueOf(orig.CheckRedirect).Pointer() != reflect.ValueOf(redirect).Pointer() {
			t.Error("orig.CheckRedirect changed")
		}
		tr, ok := wrapped.Transport.(*Transport)
		if !ok {
			t.Fatalf("wrapped.Transport = %T, want *Transport", wrapped.Transport)
		}
		if tr.base != base {
			t.Errorf("wrapped transport's base = %T, want the original transport", tr.base)
		}
		if err := wrapped.CheckRedirect(&http.Request{}, []*http.Request{{Method: "GET"}}); !errors.Is(err, errStop) {
			t.Errorf("wrapped CheckRedirect returned %v, want the caller's policy's answer", err)
		}
		if wrapped.Timeout != 0 || tr.cfg.callTimeout != 7*time.Second {
			t.Errorf("Timeout %v on the copy, %v in the Transport; want it moved into the Transport", wrapped.Timeout, tr.cfg.callTimeout)
		}
	})
	t.Run("nil client", func(t *testing.T) {
		wrapped, err := Wrap(nil)
		if err != nil {
			t.Fatal(err)
		}
		tr, ok := wrapped.Transport.(*Transport)
		if !ok {
			t.Fatalf("wrapped.Transport = %T, want *Transport", wrapped.Transport)
		}
		if tr.base != http.DefaultTransport {
			t.Errorf("base = %T, want http.DefaultTransport", tr.base)
		}
	})
	t.Run("already wrapped", func(t *testing.T) {
		once, err := Wrap(nil)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := Wrap(once)
		if err == nil {
			t.Fatalf("Wrap of a wrapped client = %v, want an error", twice)
		}
		if !strings.HasPrefix(err.Error(), "saferetry: ") {
			t.Errorf("error %q does not start with %q", err, "saferetry: ")
		}
		if _, err := NewClient("https://api.example", WithHTTPClient(once)); err == nil {
			t.Error("NewClient(WithHTTPClient(wrapped client)) succeeded, want an error")
		}
	})
}
