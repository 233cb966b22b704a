package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/idempotency"
	"github.com/google/uuid"

	saferetry "github.com/saferetry/saferetry-go"
)

// These tests put saferetry in front of a server-side implementation of the
// IETF Idempotency-Key draft that we did not write: the idempotency
// middleware of Fiber v3 (github.com/gofiber/fiber/v3/middleware/idempotency,
// MIT). What that middleware does, read from its v3.1.0 source:
//
//   - a key seen before gets the stored response replayed: status, headers,
//     body, whatever the status was (a 503 included);
//   - the response is stored after the handler returned nil; a handler that
//     returns an error is not stored, so the key can be retried;
//   - a duplicate that arrives while the first is running blocks on an
//     in-process lock and is answered with the replay: never a 409;
//   - there is no request fingerprint, so never a 422;
//   - the default key validator wants exactly 36 characters (a UUID); it is
//     kept, so it checks the keys the transport generates;
//   - storage and lock are in memory.
//
// The Fiber app runs on Fiber's own server (fasthttp, as in production), on a
// loopback listener, not through the net/http adaptor.

const (
	keyHeader = saferetry.DefaultRequestIDHeader // "Idempotency-Key"
	// dropFirstHeader asks the server to drop the first response for the
	// request's key (TestFiberManyKeysWithDroppedResponses).
	dropFirstHeader = "X-Test-Drop-First"
	// requestTimeout and hangGuard bound what ends at once unless something
	// is broken; they are long, so that a loaded machine does not fail them.
	requestTimeout = 30 * time.Second
	hangGuard      = 30 * time.Second
)

type invoice struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// handlerFunc is the business handler behind the idempotency middleware;
// call is the number of times it has run for key, this one included.
type handlerFunc func(s *fiberServer, c fiber.Ctx, key string, call int) error

// dropFunc decides, after the middleware has stored the response, whether
// the response to the arrival-th request with key is dropped.
type dropFunc func(c fiber.Ctx, key string, arrival int) bool

// fiberServer is a Fiber app behind a loopback listener, with its middleware
// chain wire -> idempotency.New -> POST /invoices handler. wire counts what
// reaches the server and drops the responses drop picks.
type fiberServer struct {
	URL string

	handler handlerFunc
	drop    dropFunc

	mu             sync.Mutex
	nextID         int
	arrivals       map[string]int    // requests that reached the app, per key
	calls          map[string]int    // handler executions, per key
	entities       map[string]string // key -> id of the entity created
	bodies         map[string][]byte // key -> body the handler last wrote
	inFlight       map[string]int    // handler executions running now, per key
	locks          map[string]int    // Lock calls on Fiber's idempotency lock, per key
	arrivedRunning map[string]int    // arrivals while the handler ran for the same key
	replayed       map[string]int    // responses Fiber served from its store, per key
	dropped        map[string]int    // responses dropped, per key
	droppedUnsaved int               // dropped responses Fiber had not stored: must stay 0
}

func startFiber(t *testing.T, handler handlerFunc, drop dropFunc) *fiberServer {
	t.Helper()
	s := &fiberServer{
		handler:        handler,
		drop:           drop,
		arrivals:       map[string]int{},
		calls:          map[string]int{},
		entities:       map[string]string{},
		bodies:         map[string][]byte{},
		inFlight:       map[string]int{},
		locks:          map[string]int{},
		arrivedRunning: map[string]int{},
		replayed:       map[string]int{},
		dropped:        map[string]int{},
	}
	app := fiber.New()
	app.Use(s.wire)
	// KeyHeader is the only setting changed: the draft's header instead of
	// Fiber's X-Idempotency-Key. The default 36-character validator stays,
	// and so does the lock, Fiber's in-memory one, only counted.
	app.Use(idempotency.New(idempotency.Config{KeyHeader: keyHeader, Lock: countedLock{idempotency.NewMemoryLock(), s}}))
	app.Post("/invoices", func(c fiber.Ctx) error {
		key := strings.Clone(c.Get(keyHeader))
		s.mu.Lock()
		s.calls[key]++
		call := s.calls[key]
		s.inFlight[key]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight[key]--
			s.bodies[key] = bytes.Clone(c.Response().Body())
			s.mu.Unlock()
		}()
		return s.handler(s, c, key, call)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Listener(ln, fiber.ListenConfig{DisableStartupMessage: true}) }()
	s.URL = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		if err := app.ShutdownWithTimeout(hangGuard); err != nil {
			t.Errorf("fiber shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("fiber listener: %v", err)
			}
		case <-time.After(hangGuard):
			t.Errorf("fiber listener still serving %v after shutdown", hangGuard)
		}
	})
	return s
}

// countedLock counts the Lock calls on Fiber's lock, so that a test can
// tell when a duplicate has reached it.
type countedLock struct {
	idempotency.Locker
	s *fiberServer
}

func (l countedLock) Lock(key string) error {
	l.s.mu.Lock()
	l.s.locks[key]++
	l.s.mu.Unlock()
	return l.Locker.Lock(key)
}

// wire runs before the idempotency middleware. It counts arrivals, and after
// the middleware returned (so after it stored the response) it may drop the
// response: fasthttp's Hijack with HijackSetNoResponse makes the server skip
// writing the response and hand over the connection, which fasthttp closes
// when the hijack handler returns. The client has sent its whole request and
// gets EOF instead of a response: an attempt of unknown outcome, on which the
// processing and the stored response really did happen. This is deterministic
// (no timing, no proxy parsing HTTP), and it runs on Fiber's real server.
func (s *fiberServer) wire(c fiber.Ctx) error {
	key := strings.Clone(c.Get(keyHeader))
	s.mu.Lock()
	s.arrivals[key]++
	arrival := s.arrivals[key]
	if s.inFlight[key] > 0 {
		s.arrivedRunning[key]++
	}
	s.mu.Unlock()

	err := c.Next()

	if idempotency.IsFromCache(c) {
		s.mu.Lock()
		s.replayed[key]++
		s.mu.Unlock()
	}
	if s.drop != nil && s.drop(c, key, arrival) {
		s.mu.Lock()
		s.dropped[key]++
		if !idempotency.WasPutToCache(c) {
			s.droppedUnsaved++
		}
		s.mu.Unlock()
		c.RequestCtx().HijackSetNoResponse(true)
		c.RequestCtx().Hijack(func(net.Conn) {})
	}
	return err
}

// create records a new entity for key and answers 201 with it.
func (s *fiberServer) create(c fiber.Ctx, key string) error {
	s.mu.Lock()
	s.nextID++
	id := fmt.Sprintf("inv_%03d", s.nextID)
	s.entities[key] = id
	s.mu.Unlock()
	c.Set("Location", "/invoices/"+id)
	return c.Status(http.StatusCreated).JSON(invoice{ID: id, Key: key})
}

func createInvoice(s *fiberServer, c fiber.Ctx, key string, _ int) error {
	return s.create(c, key)
}

// waitFor polls cond every 2 ms for at most d.
func (s *fiberServer) waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// snapshot returns copies of a counter map, taken under the lock.
func (s *fiberServer) snapshot(m map[string]int) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

type attemptLog struct {
	mu   sync.Mutex
	list []saferetry.Attempt
}

func (l *attemptLog) observe(a saferetry.Attempt) {
	l.mu.Lock()
	l.list = append(l.list, a)
	l.mu.Unlock()
}

func (l *attemptLog) forKey(key string) []saferetry.Attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []saferetry.Attempt
	for _, a := range l.list {
		if a.Key == key {
			out = append(out, a)
		}
	}
	return out
}

// newClient wraps a client over its own loopback-only http.Transport (no
// proxy from the environment) with short backoffs.
func newClient(t *testing.T, log *attemptLog, opts ...saferetry.Option) *http.Client {
	t.Helper()
	base := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(base.CloseIdleConnections)
	opts = append([]saferetry.Option{saferetry.WithBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	if log != nil {
		opts = append(opts, saferetry.WithObserver(log.observe))
	}
	hc, err := saferetry.Wrap(&http.Client{Transport: base, Timeout: requestTimeout}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return hc
}

// postInvoice sends one logical POST; header may carry a caller key or test
// controls. The body is read and closed.
func postInvoice(hc *http.Client, url string, n int, header map[string]string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/invoices", strings.NewReader(fmt.Sprintf(`{"number":%d}`, n)))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func decodeInvoice(t *testing.T, body []byte) invoice {
	t.Helper()
	var inv invoice
	if err := json.Unmarshal(body, &inv); err != nil {
		t.Fatalf("response body %q: %v", body, err)
	}
	return inv
}

// The first attempt is processed and stored by Fiber but its response is
// lost; the transport retries with the same key and gets Fiber's replay.
func TestFiberReplaysResponseLostAfterProcessing(t *testing.T) {
	s := startFiber(t, createInvoice, func(_ fiber.Ctx, _ string, arrival int) bool { return arrival == 1 })
	var log attemptLog
	hc := newClient(t, &log)

	resp, body, err := postInvoice(hc, s.URL, 1, nil)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	key := saferetry.KeyFromResponse(resp)
	if u, err := uuid.Parse(key); err != nil || u.Version() != 4 || len(key) != 36 {
		t.Fatalf("key %q is not a 36-character UUIDv4", key)
	}

	arrivals, calls := s.snapshot(s.arrivals), s.snapshot(s.calls)
	if len(arrivals) != 1 || arrivals[key] != 2 {
		t.Errorf("server saw %v; want 2 requests, all with key %s", arrivals, key)
	}
	if calls[key] != 1 || len(calls) != 1 {
		t.Errorf("handler executions %v; want exactly 1 for %s", calls, key)
	}
	if d, r := s.snapshot(s.dropped), s.snapshot(s.replayed); d[key] != 1 || r[key] != 1 {
		t.Errorf("dropped %v, replayed %v; want the first response dropped and the second replayed", d, r)
	}

	// What the client got is what the handler wrote on the only execution.
	s.mu.Lock()
	stored, entity, droppedUnsaved := s.bodies[key], s.entities[key], s.droppedUnsaved
	s.mu.Unlock()
	if droppedUnsaved != 0 {
		t.Errorf("%d responses were dropped before Fiber stored them", droppedUnsaved)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("status %d; want the stored 201", resp.StatusCode)
	}
	if !bytes.Equal(body, stored) {
		t.Errorf("body %q; want the stored %q", body, stored)
	}
	if inv := decodeInvoice(t, body); inv.ID != entity || inv.Key != key {
		t.Errorf("invoice %+v; want id %s key %s", inv, entity, key)
	}
	if loc := resp.Header.Get("Location"); loc != "/invoices/"+entity {
		t.Errorf("Location %q; want the stored /invoices/%s", loc, entity)
	}

	// The transport, not net/http, did the retry: the first attempt ended
	// without a response after sending, the second got the replay.
	attempts := log.forKey(key)
	if len(attempts) != 2 {
		t.Fatalf("attempts %+v; want 2", attempts)
	}
	if a := attempts[0]; a.StatusCode != 0 || a.Err == nil || !a.Sent || !a.Retry {
		t.Errorf("attempt 1 %+v; want a sent attempt without response, retried", a)
	}
	if a := attempts[1]; a.StatusCode != http.StatusCreated || a.Err != nil {
		t.Errorf("attempt 2 %+v; want 201", a)
	}
}

// A handler that writes a 503 without processing: Fiber stores the 503 like
// any response and replays it to every retry with that key, for the key's
// lifetime (30 minutes by default). The handler runs once and the transport
// ends up returning the replayed 503, body readable, after its retries.
func TestFiberStores503WrittenByHandler(t *testing.T) {
	const unavailable = "maintenance, try again"
	s := startFiber(t, func(s *fiberServer, c fiber.Ctx, key string, call int) error {
		if call == 1 {
			return c.Status(http.StatusServiceUnavailable).SendString(unavailable)
		}
		return s.create(c, key)
	}, nil)
	var log attemptLog
	hc := newClient(t, &log, saferetry.WithMaxRetries(3))

	resp, body, err := postInvoice(hc, s.URL, 2, nil)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	key := saferetry.KeyFromResponse(resp)
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != unavailable {
		t.Errorf("got %d %q; want the replayed 503 %q", resp.StatusCode, body, unavailable)
	}
	if calls := s.snapshot(s.calls); calls[key] != 1 {
		t.Errorf("handler executions %v; want exactly 1 (the 503)", calls)
	}
	if arrivals, replayed := s.snapshot(s.arrivals), s.snapshot(s.replayed); arrivals[key] != 4 || replayed[key] != 3 {
		t.Errorf("arrivals %v, replayed %v; want 4 requests with key %s, the last 3 replayed", arrivals, replayed, key)
	}
	s.mu.Lock()
	entities := len(s.entities)
	s.mu.Unlock()
	if entities != 0 {
		t.Errorf("%d entities created; want none", entities)
	}
	attempts := log.forKey(key)
	if len(attempts) != 4 {
		t.Fatalf("attempts %+v; want 1 + 3 retries", attempts)
	}
	for i, a := range attempts {
		if a.StatusCode != http.StatusServiceUnavailable || a.Retry != (i < 3) {
			t.Errorf("attempt %d %+v; want 503, retried unless last", i+1, a)
		}
	}
}

// A handler that returns the 503 as an error is not stored by Fiber, so the
// retry with the same key reaches the handler, which now creates the entity:
// this is how a Fiber service must say "not processed, retry".
func TestFiberDoesNotStore503ReturnedAsError(t *testing.T) {
	s := startFiber(t, func(s *fiberServer, c fiber.Ctx, key string, call int) error {
		if call == 1 {
			return fiber.NewError(http.StatusServiceUnavailable, "maintenance")
		}
		return s.create(c, key)
	}, nil)
	var log attemptLog
	hc := newClient(t, &log)

	resp, body, err := postInvoice(hc, s.URL, 3, nil)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	key := saferetry.KeyFromResponse(resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d %q; want 201 after the retry", resp.StatusCode, body)
	}
	s.mu.Lock()
	entity, entities := s.entities[key], len(s.entities)
	s.mu.Unlock()
	if inv := decodeInvoice(t, body); inv.ID != entity || inv.Key != key || entities != 1 {
		t.Errorf("invoice %+v, %d entities; want the one entity %s for %s", inv, entities, entity, key)
	}
	if calls, replayed := s.snapshot(s.calls), s.snapshot(s.replayed); calls[key] != 2 || replayed[key] != 0 {
		t.Errorf("handler executions %v, replayed %v; want 2 executions (503, 201), no replay", calls, replayed)
	}
	attempts := log.forKey(key)
	if len(attempts) != 2 || attempts[0].StatusCode != http.StatusServiceUnavailable || attempts[1].StatusCode != http.StatusCreated {
		t.Errorf("attempts %+v; want 503 then 201", attempts)
	}
}

// Two POSTs with the same caller key, the second sent while the handler is
// running the first: Fiber's lock holds the second until the first is stored
// and replays it. No 409, one execution, the same answer twice.
func TestFiberConcurrentDuplicateBlocksThenReplays(t *testing.T) {
	s := startFiber(t, func(s *fiberServer, c fiber.Ctx, key string, _ int) error {
		// Hold on until the duplicate has asked for Fiber's lock, which
		// this execution holds: it surely blocks behind it.
		s.waitFor(hangGuard, func() bool { return s.locks[key] >= 2 })
		return s.create(c, key)
	}, nil)
	var log attemptLog
	hc := newClient(t, &log)
	key := uuid.NewString()

	type result struct {
		status int
		body   []byte
		err    error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	send := func(i int) {
		defer wg.Done()
		resp, body, err := postInvoice(hc, s.URL, 4, map[string]string{keyHeader: key})
		results[i] = result{body: body, err: err}
		if resp != nil {
			results[i].status = resp.StatusCode
		}
	}
	wg.Add(2)
	go send(0)
	if !s.waitFor(hangGuard, func() bool { return s.inFlight[key] == 1 }) {
		t.Fatal("the first request never reached the handler")
	}
	go send(1)
	wg.Wait()

	for i, r := range results {
		if r.err != nil || r.status != http.StatusCreated {
			t.Fatalf("caller %d: %d %q %v; want 201", i+1, r.status, r.body, r.err)
		}
	}
	if !bytes.Equal(results[0].body, results[1].body) {
		t.Errorf("bodies differ: %q and %q", results[0].body, results[1].body)
	}
	s.mu.Lock()
	entity := s.entities[key]
	s.mu.Unlock()
	if inv := decodeInvoice(t, results[1].body); inv.ID != entity || inv.Key != key {
		t.Errorf("invoice %+v; want id %s key %s", inv, entity, key)
	}
	if calls := s.snapshot(s.calls); calls[key] != 1 {
		t.Errorf("handler executions %v; want 1", calls)
	}
	if running, replayed, locks := s.snapshot(s.arrivedRunning), s.snapshot(s.replayed), s.snapshot(s.locks); running[key] != 1 || replayed[key] != 1 || locks[key] != 2 {
		t.Errorf("arrived while running %v, replayed %v, locked %v; want the duplicate to arrive during the first, wait on the lock and be replayed", running, replayed, locks)
	}
	// Fiber never answered 409: each caller needed one attempt.
	if attempts := log.forKey(key); len(attempts) != 2 || attempts[0].Retry || attempts[1].Retry {
		t.Errorf("attempts %+v; want one each, no retry", attempts)
	}
}

// 50 logical POSTs at once, each with its own generated key; a seeded random
// 30% (15) lose their first response after Fiber processed and stored it.
func TestFiberManyKeysWithDroppedResponses(t *testing.T) {
	const (
		n    = 50
		seed = 20240601
	)
	toDrop := map[int]bool{}
	for _, i := range rand.New(rand.NewPCG(seed, seed)).Perm(n)[:n*30/100] {
		toDrop[i] = true
	}
	s := startFiber(t, createInvoice, func(c fiber.Ctx, _ string, arrival int) bool {
		return arrival == 1 && c.Get(dropFirstHeader) == "1"
	})
	hc := newClient(t, nil)

	type result struct {
		key    string
		status int
		body   []byte
		err    error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			header := map[string]string{}
			if toDrop[i] {
				header[dropFirstHeader] = "1"
			}
			resp, body, err := postInvoice(hc, s.URL, i, header)
			results[i] = result{body: body, err: err}
			if resp != nil {
				results[i].key, results[i].status = saferetry.KeyFromResponse(resp), resp.StatusCode
			}
		}()
	}
	wg.Wait()

	s.mu.Lock()
	entities := make(map[string]string, len(s.entities))
	for k, v := range s.entities {
		entities[k] = v
	}
	droppedUnsaved := s.droppedUnsaved
	s.mu.Unlock()
	calls, arrivals := s.snapshot(s.calls), s.snapshot(s.arrivals)
	dropped, replayed := s.snapshot(s.dropped), s.snapshot(s.replayed)

	total := 0
	for _, c := range calls {
		total += c
	}
	if total != n || len(calls) != n || len(entities) != n {
		t.Errorf("%d handler executions over %d keys, %d entities; want %d of each", total, len(calls), len(entities), n)
	}
	if len(dropped) != len(toDrop) || droppedUnsaved != 0 {
		t.Errorf("%d responses dropped (%d before being stored); want %d, all stored", len(dropped), droppedUnsaved, len(toDrop))
	}
	ids := map[string]int{}
	for i, r := range results {
		if r.err != nil || r.status != http.StatusCreated {
			t.Errorf("caller %d: %d %q %v; want 201", i, r.status, r.body, r.err)
			continue
		}
		inv := decodeInvoice(t, r.body)
		if inv.Key != r.key || inv.ID != entities[r.key] || calls[r.key] != 1 {
			t.Errorf("caller %d (key %s) got %+v; want its own entity %s, created once (%d)", i, r.key, inv, entities[r.key], calls[r.key])
		}
		if prev, dup := ids[inv.ID]; dup {
			t.Errorf("callers %d and %d both got %s", prev, i, inv.ID)
		}
		ids[inv.ID] = i
		switch {
		case toDrop[i] && (dropped[r.key] != 1 || arrivals[r.key] != 2 || replayed[r.key] != 1):
			t.Errorf("caller %d (dropped): dropped %d, arrivals %d, replayed %d; want 1, 2, 1", i, dropped[r.key], arrivals[r.key], replayed[r.key])
		case !toDrop[i] && (dropped[r.key] != 0 || arrivals[r.key] != 1):
			t.Errorf("caller %d: dropped %d, arrivals %d; want 0, 1", i, dropped[r.key], arrivals[r.key])
		}
	}
}

// Fiber's default validator wants 36 characters. A key the transport accepts
// (1-255 printable ASCII) but of another length is refused with a 500 (the
// validator's plain error through Fiber's default error handler), before the
// handler; the transport returns that 500 without retrying.
func TestFiberRefusesKeyOfAnotherLength(t *testing.T) {
	s := startFiber(t, createInvoice, nil)
	var log attemptLog
	hc := newClient(t, &log)
	const key = "invoice-2024-0001"

	resp, body, err := postInvoice(hc, s.URL, 5, map[string]string{keyHeader: key})
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "invalid idempotency key") {
		t.Errorf("got %d %q; want 500 invalid idempotency key", resp.StatusCode, body)
	}
	if calls, arrivals := s.snapshot(s.calls), s.snapshot(s.arrivals); len(calls) != 0 || arrivals[key] != 1 {
		t.Errorf("handler executions %v, arrivals %v; want none and 1", calls, arrivals)
	}
	if attempts := log.forKey(key); len(attempts) != 1 {
		t.Errorf("attempts %+v; want 1", attempts)
	}
}
