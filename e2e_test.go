package saferetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangUp closes the client's connection without an answer, after the
// handler has read (and maybe processed) the request.
func hangUp(t *testing.T, w http.ResponseWriter) {
	t.Helper()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// promptTimeout is an attempt timeout that only a hung attempt reaches, even
// on a loaded machine under the race detector; a test that needs an attempt
// cut pays it once per cut.
const promptTimeout = time.Second

func TestAttemptTimeoutRetriesAHungAttempt(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		if n == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	defer close(release)

	tr := newTestTransport(t, nil, WithAttemptTimeout(promptTimeout))
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" || calls != 2 {
		t.Fatalf("body %q after %d calls", body, calls)
	}
}

// TestAttemptTimeoutDoesNotCutOffTheBody: the headers come at once, the
// rest of the body only after the attempt timeout has passed.
func TestAttemptTimeoutDoesNotCutOffTheBody(t *testing.T) {
	rest := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, strings.Repeat("a", 10))
		w.(http.Flusher).Flush()
		select {
		case <-rest:
		case <-r.Context().Done():
			return
		}
		for i := 1; i < 5; i++ {
			io.WriteString(w, strings.Repeat(string(rune('a'+i)), 10))
		}
	}))
	defer srv.Close()

	tr := newTestTransport(t, nil, WithAttemptTimeout(promptTimeout))
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		close(rest)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The attempt began before RoundTrip returned: by now its timeout has
	// passed, had it not been stopped when the headers arrived.
	time.Sleep(promptTimeout + 100*time.Millisecond)
	close(rest)
	body, err := io.ReadAll(resp.Body)
	if err != nil || len(body) != 50 {
		t.Fatalf("read %d bytes, err %v; the attempt timeout cut the body off", len(body), err)
	}
}

func TestAttemptTimeoutOnEveryAttemptIsOutcomeUnknown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // lets the server notice the client hanging up
		<-r.Context().Done()
	}))
	defer srv.Close()

	tr := newTestTransport(t, nil, WithAttemptTimeout(promptTimeout), WithMaxRetries(1))
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, ErrAttemptTimeout) || !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) == "" {
		t.Fatalf("err = %v", err)
	}
}

// draftServer follows the IETF Idempotency-Key draft: it stores the answer
// per key and replays it, answers 409 while a key is in flight, and can be
// told to hang up after processing. A key it hung up on stays in flight
// until one request has been told 409, and is done for the next: a retry
// meets both states whatever the timing.
type draftServer struct {
	t        *testing.T
	mu       sync.Mutex
	done     map[string]string // key -> stored body
	inFlight map[string]string // key -> the body it will store
	created  int
	seen     map[string]int
	hangUpOn map[int]bool // request numbers (1-based, all keys) to hang up on after processing
	n        int
}

func newDraftServer(t *testing.T) *draftServer {
	return &draftServer{t: t, done: map[string]string{}, inFlight: map[string]string{}, seen: map[string]int{}, hangUpOn: map[int]bool{}}
}

func (s *draftServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	s.n++
	n := s.n
	s.seen[key]++
	if stored, ok := s.done[key]; ok && key != "" {
		s.mu.Unlock()
		io.WriteString(w, stored)
		return
	}
	if answer, ok := s.inFlight[key]; ok {
		delete(s.inFlight, key)
		s.done[key] = answer // processing ends as this 409 leaves
		s.mu.Unlock()
		w.WriteHeader(http.StatusConflict)
		return
	}
	s.created++
	answer := `{"id":` + string(rune('0'+s.created)) + `,"echo":` + string(body) + `}`
	if s.hangUpOn[n] {
		s.inFlight[key] = answer // processing goes on after the hang-up
		s.mu.Unlock()
		hangUp(s.t, w)
		return
	}
	s.done[key] = answer
	s.mu.Unlock()
	io.WriteString(w, answer)
}

// TestNetHTTPReplayIsSeenAndSafe: net/http itself resends a request that
// carries Idempotency-Key when a reused connection fails. Here the server
// processes the request, hangs up, and is still working when the replay
// arrives; the replay's 409 must be waited out, and one entity exists.
func TestNetHTTPReplayIsSeenAndSafe(t *testing.T) {
	ds := newDraftServer(t)
	ds.hangUpOn[2] = true
	srv := httptest.NewServer(ds)
	defer srv.Close()

	// One connection at most: the invoice waits for the warm-up's to be
	// idle and reuses it, rather than racing it with a new one, so the
	// hang-up always hits a reused connection, the case net/http replays.
	base := &http.Transport{MaxConnsPerHost: 1}
	defer base.CloseIdleConnections()
	var attempts []Attempt
	var mu sync.Mutex
	tr := newTestTransport(t, base, WithMaxRetries(5),
		WithObserver(func(a Attempt) { mu.Lock(); attempts = append(attempts, a); mu.Unlock() }))
	client := &http.Client{Transport: tr}

	warm, err := client.Post(srv.URL, "application/json", strings.NewReader(`"warm-up"`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, warm.Body)
	warm.Body.Close()

	resp, err := client.Post(srv.URL, "application/json", strings.NewReader(`"invoice"`))
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"echo":"invoice"`) {
		t.Fatalf("got %d %s; attempts %+v", resp.StatusCode, body, attempts)
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.created != 2 {
		t.Fatalf("created %d entities, want 2 (warm-up and invoice)", ds.created)
	}
	if !attempts[1].Replayed {
		t.Fatalf("first attempt of the invoice not seen as replayed: %+v", attempts[1])
	}
	if key := KeyFromResponse(resp); ds.seen[key] != 3 {
		t.Fatalf("server saw key %d times, want the hang-up, the replay's 409 and the answer", ds.seen[key])
	}
}

// TestContextDeadlineStopsRetries: retries go on while their waits fit
// before the context's deadline; the first that would not is not started,
// and its attempt's response comes back at once. Short waits and a long one
// the server asks for (20 s, within WithMaxRetryAfter) on each side of a
// deadline 10 s away leave nothing to how fast the machine is.
func TestContextDeadlineStopsRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if n == 4 {
			w.Header().Set("Retry-After", "20")
		}
		w.WriteHeader(503)
		fmt.Fprint(w, n)
	}))
	defer srv.Close()
	tr := newTestTransport(t, nil, WithMaxRetries(10))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("err = %v, want the last 503 before the deadline", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != "4" || calls.Load() != 4 {
		t.Fatalf("got %d %q after %d attempts; want the 4th answer, the one whose wait did not fit", resp.StatusCode, body, calls.Load())
	}
}

func TestBodyIsSentWithItsLength(t *testing.T) {
	type seen struct {
		length  int64
		chunked bool
		body    string
	}
	var got []seen
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.ContentLength, len(r.TransferEncoding) > 0, string(b)})
		n := len(got)
		mu.Unlock()
		if n%2 == 1 {
			w.WriteHeader(503)
		}
	}))
	defer srv.Close()
	tr := newTestTransport(t, nil)
	withGetBody, _ := http.NewRequest("POST", srv.URL, strings.NewReader(`{"a":1}`))
	withoutGetBody, _ := http.NewRequest("POST", srv.URL, io.NopCloser(strings.NewReader(`{"a":1}`)))
	for _, req := range []*http.Request{withGetBody, withoutGetBody} {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(got) != 4 {
		t.Fatalf("%d requests, want 4", len(got))
	}
	for i, s := range got {
		if s.length != 7 || s.chunked || s.body != `{"a":1}` {
			t.Errorf("attempt %d arrived as %+v, want Content-Length 7, not chunked", i+1, s)
		}
	}
}
