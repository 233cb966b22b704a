package saferetry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"
)

// hangGuard only keeps a broken build from hanging the suite; no
// assertion depends on it. It is long, so that a loaded machine does not
// trip it.
const hangGuard = 30 * time.Second

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hangGuard):
		t.Fatalf("%s: nothing after %s", what, hangGuard)
		panic("unreachable")
	}
}

// verifyNoLeak fails t if goroutines beyond those ignored are still running
// some seconds on: goroutines of closed connections take a moment to end,
// longer on a loaded machine than the half second goleak waits by itself.
func verifyNoLeak(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Error(err)
			return
		}
	}
}

var cancelTestCreds = ChiftCredentials{ClientID: "id", ClientSecret: "secret", AccountID: "7f0c0e4e-8c5e-4d1c-9a3b-2f1e6a0b9c1d"}

// tokenServer answers the n-th POST /token with tok-n, once release is
// closed (nil release: at once). Every other path answers 200 with the
// Authorization header it got.
type tokenServer struct {
	*httptest.Server
	release   chan struct{}
	requested chan struct{} // closed by the first POST /token
	once      sync.Once
	requests  atomic.Int32 // POST /token requests received
}

func newTokenServer(t *testing.T, release chan struct{}) *tokenServer {
	t.Helper()
	s := &tokenServer{release: release, requested: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/token" {
		json.NewEncoder(w).Encode(map[string]string{"authorization": r.Header.Get("Authorization")})
		return
	}
	n := s.requests.Add(1)
	s.once.Do(func() { close(s.requested) })
	if s.release != nil {
		<-s.release
	}
	json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + strconv.Itoa(int(n)), "expires_in": 1800})
}

func TestChiftTokenCancelReleasesTheCaller(t *testing.T) {
	defer verifyNoLeak(t, goleak.IgnoreCurrent())
	srv := newTokenServer(t, make(chan struct{}))
	defer srv.Close()
	release := sync.OnceFunc(func() { close(srv.release) })
	defer release() // before Close, which waits for the held /token
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	c, err := NewClient(srv.URL, WithHTTPClient(&http.Client{Transport: base}), WithChiftAuth(cancelTestCreds))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := c.DoJSON(ctx, http.MethodGet, "invoices", nil, nil)
		cancelled <- err
	}()
	receive(t, srv.requested, "POST /token")

	type answer struct {
		auth string
		err  error
	}
	live := make(chan answer, 1)
	go func() {
		var out struct{ Authorization string }
		_, err := c.DoJSON(context.Background(), http.MethodGet, "invoices", nil, &out)
		live <- answer{out.Authorization, err}
	}()

	cancel()
	// /token is still held: the caller must come back without its answer.
	if err := receive(t, cancelled, "cancelled caller"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v, want context.Canceled", err)
	}
	select {
	case a := <-live:
		t.Fatalf("live caller returned before /token answered: %+v", a)
	default:
	}

	release()
	if a := receive(t, live, "live caller"); a.err != nil || a.auth != "Bearer tok-1" {
		t.Fatalf("live caller: %q, %v; want Bearer tok-1", a.auth, a.err)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Fatalf("%d POST /token, want 1 shared by both callers", n)
	}
}

// TestChiftTokenCacheAndInvalidate: the cached token is handed out with
// no allocation (so no goroutine and no wait, whatever the context), and
// only a 401 for that very token drops it.
func TestChiftTokenCacheAndInvalidate(t *testing.T) {
	srv := newTokenServer(t, nil)
	defer srv.Close()
	origin, _ := url.Parse(srv.URL)
	a := newChiftAuth(cancelTestCreds, origin, srv.Client().Transport)
	want := func(wantToken string, wantIssued int32) {
		t.Helper()
		got, err := a.token(context.Background())
		if err != nil || got != wantToken || srv.requests.Load() != wantIssued {
			t.Fatalf("token() = %q, %v after %d fetches; want %q after %d", got, err, srv.requests.Load(), wantToken, wantIssued)
		}
	}

	want("tok-1", 1)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	allocs := testing.AllocsPerRun(100, func() {
		if got, err := a.token(done); got != "tok-1" || err != nil {
			t.Fatalf("cached token() = %q, %v", got, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("cached token() allocates %.0f times; want a lock-free read", allocs)
	}
	a.invalidate("another")
	want("tok-1", 1)
	a.invalidate("tok-1")
	want("tok-2", 2)
	a.invalidate("tok-1") // a late 401 for the old token
	want("tok-2", 2)
}

func TestChiftTokenUsable(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name  string
		token *oauth2.Token
		want  bool
	}{
		{"none", nil, false},
		{"no expiry", &oauth2.Token{AccessToken: "t"}, true},
		{"well before the margin", &oauth2.Token{AccessToken: "t", Expiry: now.Add(30 * time.Minute)}, true},
		{"within the margin", &oauth2.Token{AccessToken: "t", Expiry: now.Add(chiftTokenMargin / 2)}, false},
		{"expired", &oauth2.Token{AccessToken: "t", Expiry: now.Add(-time.Second)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := usable(tt.token); got != tt.want {
				t.Fatalf("usable = %v, want %v", got, tt.want)
			}
		})
	}
}

// pipeBody is a streamed request body that counts its closes.
type pipeBody struct {
	*io.PipeReader
	closes atomic.Int32
}

func (b *pipeBody) Close() error {
	b.closes.Add(1)
	return b.PipeReader.Close()
}

// TestZeroHashSignCancelReleasesTheCaller: signing reads the whole body;
// a stream that stalls must not hold a caller whose context ended.
func TestZeroHashSignCancelReleasesTheCaller(t *testing.T) {
	defer verifyNoLeak(t, goleak.IgnoreCurrent())
	pr, pw := io.Pipe()
	body := &pipeBody{PipeReader: pr}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.example/transfers", body)
	if err != nil {
		t.Fatal(err)
	}
	s := &zeroHashSigner{apiKey: "k", passphrase: "p", secret: []byte("s"), now: time.Now}
	signed := make(chan error, 1)
	go func() {
		_, err := s.sign(req)
		signed <- err
	}()
	// Write returns once the signer has read these bytes: it is reading.
	if _, err := pw.Write([]byte(`{"amount":`)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := receive(t, signed, "sign"); !errors.Is(err, context.Canceled) {
		t.Fatalf("sign: %v, want context.Canceled", err)
	}
	if _, err := pw.Write([]byte(`"1"}`)); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("writing after the cancel: %v, want the body closed", err)
	}
	if n := body.closes.Load(); n != 1 {
		t.Fatalf("body closed %d times, want once", n)
	}
}
