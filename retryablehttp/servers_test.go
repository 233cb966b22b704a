package saferetryablehttp_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	saferetry "github.com/saferetry/saferetry-go"
)

// received is one request a recordingServer got.
type received struct {
	key  string // Idempotency-Key
	body []byte
}

// recordingServer records every request's key and body, then answers it
// as answer says (n counts from 1).
type recordingServer struct {
	*httptest.Server
	arrived chan struct{} // receives once per request, if anyone listens

	mu  sync.Mutex
	got []received
}

func newRecordingServer(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *recordingServer {
	t.Helper()
	s := &recordingServer{arrived: make(chan struct{}, 16)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.got = append(s.got, received{r.Header.Get(saferetry.DefaultRequestIDHeader), body})
		n := len(s.got)
		s.mu.Unlock()
		s.arrived <- struct{}{}
		answer(n, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *recordingServer) requests() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.got...)
}

// newHoldServer holds every request until the client goes away.
func newHoldServer(t *testing.T) *recordingServer {
	return newRecordingServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
}

// newDropFirstServer drops the connection of the first request after
// reading all of it, and answers the others 200.
func newDropFirstServer(t *testing.T) *recordingServer {
	return newRecordingServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n > 1 {
			w.WriteHeader(http.StatusOK)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	})
}
