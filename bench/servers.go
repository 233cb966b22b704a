package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
)

// seqHeader names the logical request an attempt belongs to. It is the
// benchmark's bookkeeping only: the servers never deduplicate on it, so a
// library that sends no idempotency key still cannot be deduplicated.
const seqHeader = "X-Bench-Seq"

var okBody = []byte(`{"id":"inv_0001","status":"created"}`)

// newBaseTransport is the *http.Transport under every library. The same
// settings for all, and enough idle connections per host for 32 callers,
// so that no library pays for redials the others do not.
func newBaseTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return t
}

// newOKServer is a healthy API: it reads the whole body, as a real one
// would before answering, and answers a small JSON document.
func newOKServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(okBody)
	}))
}

// attemptCounter counts, per logical request, the attempts that reached
// the server.
type attemptCounter struct {
	mu    sync.Mutex
	bySeq map[int]int
}

// add counts r and returns its logical request and attempt number.
func (c *attemptCounter) add(r *http.Request) (seq, attempt int) {
	seq, _ = strconv.Atoi(r.Header.Get(seqHeader))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bySeq == nil {
		c.bySeq = map[int]int{}
	}
	c.bySeq[seq]++
	return seq, c.bySeq[seq]
}

// attempts returns the attempts of logical requests from..to-1.
func (c *attemptCounter) attempts(from, to int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for seq := from; seq < to; seq++ {
		n += c.bySeq[seq]
	}
	return n
}

// outageServer is an API that is down: 503 to everything, with no
// Retry-After, so each library falls back on its own schedule.
type outageServer struct {
	*httptest.Server
	counter attemptCounter
}

func newOutageServer() *outageServer {
	s := &outageServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		s.counter.add(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"service unavailable"}`))
	}))
	return s
}

type fault int

const (
	faultNone fault = iota
	faultDropBefore
	faultDropAfter
)

// flakyServer creates one entity per processed request and fails a share
// of the attempts: half of the failures after the entity is created, half
// before. It deduplicates on Idempotency-Key as the IETF draft says: a
// completed key gets its stored response replayed, nothing is created.
// Requests without a key cannot be deduplicated.
type flakyServer struct {
	*httptest.Server
	seed      uint64
	faultRate float64
	counter   attemptCounter

	mu       sync.Mutex
	entities map[int]int // per logical request
	stored   map[string][]byte
	nextID   int
}

func newFlakyServer(seed uint64, faultRate float64) *flakyServer {
	s := &flakyServer{seed: seed, faultRate: faultRate, entities: map[int]int{}, stored: map[string][]byte{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

func (s *flakyServer) serve(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	seq, attempt := s.counter.add(r)
	f := s.fault(seq, attempt)
	if f == faultDropBefore {
		dropConnection(w)
		return
	}
	body := s.process(seq, r.Header.Get("Idempotency-Key"))
	if f == faultDropAfter {
		dropConnection(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(body)
}

// fault is a pure function of the seed, the logical request and the
// attempt number, so a run is the same whatever the goroutines' order.
func (s *flakyServer) fault(seq, attempt int) fault {
	u := float64(splitmix64(s.seed^uint64(seq)<<20^uint64(attempt))>>11) / (1 << 53)
	switch {
	case u < s.faultRate/2:
		return faultDropAfter
	case u < s.faultRate:
		return faultDropBefore
	}
	return faultNone
}

// process creates the entity, or replays the stored answer to a key seen
// before. It runs under the lock, so a key is never in process twice.
func (s *flakyServer) process(seq int, key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if body, ok := s.stored[key]; ok && key != "" {
		return body
	}
	s.entities[seq]++
	s.nextID++
	body := fmt.Appendf(nil, `{"id":"inv_%d","status":"created"}`, s.nextID)
	if key != "" {
		s.stored[key] = body
	}
	return body
}

// created returns the entities created and how many of them were
// duplicates (beyond one per logical request).
func (s *flakyServer) created() (total, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.entities {
		total += n
		duplicates += max(n-1, 0)
	}
	return total, duplicates
}

// dropConnection closes the connection without a response: the client
// cannot tell whether the request was processed.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
