package saferetrytest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"time"
)

// fakeServer is the machinery ChiftServer and ZeroHashServer share: the
// loopback server and its Close, the fault queues and fault func, the
// attempt and creation counts per idempotency id, and the request log. Its
// mu also guards the fields of the server that embeds it.
//
// Its methods are named with the receiver s, so that go doc shows the
// promoted Close like the servers' own methods.
type fakeServer struct {
	srv       *httptest.Server
	closed    chan struct{}
	closeOnce sync.Once

	mu           sync.Mutex
	slowRelease  chan struct{} // closed, then replaced, by ReleaseSlowCommits
	script       []Fault       // the create endpoint's queue
	lookupScript []Fault
	faultFunc    func(id string, attempt int) Fault
	attempts     map[string]int // create requests per idempotency id
	createdBy    map[string]int // entities created per idempotency id, "" for none
	requests     []RequestRecord
}

// start serves h on loopback and returns the base URL.
func (s *fakeServer) start(h http.Handler) string {
	s.closed = make(chan struct{})
	s.slowRelease = make(chan struct{})
	s.attempts = map[string]int{}
	s.createdBy = map[string]int{}
	s.srv = httptest.NewServer(h)
	return s.srv.URL
}

// Close cuts short any slow commit and shuts the server down.
func (s *fakeServer) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.srv.Close()
	})
}

// ReleaseSlowCommits ends every FaultSlowCommit wait in progress at once,
// as if SlowDelay had passed; a wait that starts later lasts SlowDelay
// again. A wait is in progress from the moment Requests shows its fault.
// With a SlowDelay longer than the test, a test decides when a slow commit
// completes instead of racing a timer.
func (s *fakeServer) ReleaseSlowCommits() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.slowRelease)
	s.slowRelease = make(chan struct{})
}

// wait lasts d, or until release is closed; Close cuts it short too, so
// that a long SlowDelay cannot hold up httptest.Server.Close.
func (s *fakeServer) wait(d time.Duration, release <-chan struct{}) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-release:
	case <-s.closed:
	}
}

// enqueue appends faults to a FIFO queue guarded by mu.
func (s *fakeServer) enqueue(queue *[]Fault, faults []Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*queue = append(*queue, faults...)
}

// pop takes the next fault from a queue; FaultNone when it is empty.
func (s *fakeServer) pop(queue *[]Fault) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return popLocked(queue)
}

func popLocked(queue *[]Fault) Fault {
	if len(*queue) == 0 {
		return FaultNone
	}
	f := (*queue)[0]
	*queue = (*queue)[1:]
	return f
}

func (s *fakeServer) setFaultFunc(f func(id string, attempt int) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultFunc = f
}

// takeScripted pops the next create fault; when there is none it returns the
// fault func for the caller to run outside the lock. The caller holds mu.
func (s *fakeServer) takeScripted() (Fault, func(string, int) Fault) {
	if len(s.script) == 0 {
		return FaultNone, s.faultFunc
	}
	return popLocked(&s.script), nil
}

// createFault takes the fault of a create request: the next scripted one,
// or else what the fault func says, asked outside the lock.
func (s *fakeServer) createFault(id string, attempt int) Fault {
	s.mu.Lock()
	f, decide := s.takeScripted()
	s.mu.Unlock()
	if decide != nil {
		f = decide(id, attempt)
	}
	return f
}

// countAttempt returns n for the nth create request carrying id, and 1 when
// id is "". The caller holds mu.
func (s *fakeServer) countAttempt(id string) int {
	if id == "" {
		return 1
	}
	s.attempts[id]++
	return s.attempts[id]
}

// createdWith returns how many entities were created with id; "" counts
// those without one.
func (s *fakeServer) createdWith(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createdBy[id]
}

// faulted records fault on request rec and applies it around answer: a
// fault that strikes before processing gets refuse's reply instead,
// slow-commit first waits slow, and the others damage the sending of
// answer's reply.
func (s *fakeServer) faulted(rec int, fault Fault, slow time.Duration, refuse, answer func() reply) reply {
	release := s.setFault(rec, fault)
	if fault.beforeProcessing() {
		return refuse()
	}
	if fault == FaultSlowCommit {
		s.wait(slow, release)
	}
	r := answer()
	r.fault = fault
	return r
}

// logRequest appends r to the log with key and returns its index there.
func (s *fakeServer) logRequest(r *http.Request, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, RequestRecord{Method: r.Method, Path: r.URL.Path, Key: key})
	return len(s.requests) - 1
}

// setFault records f on request rec. It returns the channel that
// ReleaseSlowCommits closes next, taken under the same lock, so that a
// release which follows the record ends this request's wait.
func (s *fakeServer) setFault(rec int, f Fault) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[rec].Fault = f
	return s.slowRelease
}

// record notes the status r writes on request rec and returns r.
func (s *fakeServer) record(rec int, r reply) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[rec].Status = r.written()
	return r
}

// requestLog returns a copy of the log, in arrival order.
func (s *fakeServer) requestLog() []RequestRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// nowOf reads the server clock now, time.Now when it is nil.
func nowOf(now func() time.Time) time.Time {
	if now == nil {
		return time.Now()
	}
	return now()
}

// newUUID returns a random (version 4) UUID in its canonical form.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails since Go 1.24
	return b
}

func randomHex(n int) string {
	return hex.EncodeToString(randomBytes(n))
}
