package saferetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

	tr := newTestTransport(t, nil, WithAttemptTimeout(200*time.Millisecond))
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

func TestAttemptTimeoutDoesNotCutOffTheBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for i := range 5 {
			io.WriteString(w, strings.Repeat(string(rune('a'+i)), 10))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()

	tr := newTestTransport(t, nil, WithAttemptTimeout(150*time.Millisecond))
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
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

	tr := newTestTransport(t, nil, WithAttemptTimeout(50*time.Millisecond), WithMaxRetries(1))
	req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("{}"))
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, ErrAttemptTimeout) || !errors.Is(err, ErrOutcomeUnknown) || KeyFromError(err) == "" {
		t.Fatalf("err = %v", err)
	}
}

// draftServer follows the IETF Idempotency-Key draft: it stores the answer
// per key and replays it, answers 409 while a key is in flight, and can be
// told to hang up after processing.
type draftServer struct {
	t        *testing.T
	mu       sync.Mutex
	done     map[string]string // key -> stored body
	inFlight map[string]bool
	created  int
	seen     map[string]int
	hangUpOn map[int]bool // request numbers (1-based, all keys) to hang up on after processing
	n        int
}

func newDraftServer(t *testing.T) *draftServer {
	return &draftServer{t: t, done: map[string]string{}, inFlight: map[string]bool{}, seen: map[string]int{}, hangUpOn: map[int]bool{}}
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
	if s.inFlight[key] {
		s.mu.Unlock()
		w.WriteHeader(http.StatusConflict)
		return
	}
	s.created++
	answer := `{"id":` + string(rune('0'+s.created)) + `,"echo":` + string(body) + `}`
	if s.hangUpOn[n] {
		s.inFlight[key] = true // processing goes on after the hang-up
		s.mu.Unlock()
		hangUp(s.t, w)
		go s.finishLater(key, answer)
		return
	}
	s.done[key] = answer
	s.mu.Unlock()
	io.WriteString(w, answer)
}

func (s *draftServer) finishLater(key, answer string) {
	time.Sleep(50 * time.Millisecond)
	s.mu.Lock()
	delete(s.inFlight, key)
	s.done[key] = answer
	s.mu.Unlock()
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

	var attempts []Attempt
	var mu sync.Mutex
	tr := newTestTransport(t, srv.Client().Transport, WithBackoff(20*time.Millisecond, 50*time.Millisecond), WithMaxRetries(5),
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
	if key := RequestKey(resp); ds.seen[key] < 3 {
		t.Fatalf("server saw key %d times, want the hang-up, the replay's 409 and the answer", ds.seen[key])
	}
}

func TestContextDeadlineStopsRetries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	}))
	defer srv.Close()
	tr, err := NewTransport(nil, WithBackoff(100*time.Millisecond, 100*time.Millisecond), WithMaxRetries(MaxRetriesLimit))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, strings.NewReader("{}"))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("err = %v, want the last 503 before the deadline", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("status = %d", resp.StatusCode)
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
