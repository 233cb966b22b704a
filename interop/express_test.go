package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	saferetry "github.com/saferetry/saferetry-go"
)

// These tests put saferetry in front of express-idempotency 1.0.6 (npm, Ville
// de Montréal, MIT) on Express 5.3.0, the versions pinned by
// express/package-lock.json. The app is express/server.js; it uses the
// middleware as the package's README says. What the middleware sends on the
// wire, read from its source; TestExpressWire* check it on the wire:
//
//   - a duplicate that arrives while the original is still being processed:
//     409, the middleware's Error passed to Express's default error handler,
//     so an HTML page (text/html; charset=utf-8, Content-Security-Policy:
//     default-src 'none', X-Content-Type-Options: nosniff) whose text is
//     "Conflict" under NODE_ENV=production and the error's stack ("Error: A
//     previous request is still in progress for this key.") otherwise; no
//     Retry-After, no problem document, no marker header;
//   - a duplicate after the original completed: the stored answer, status
//     and body byte for byte, with only its Content-Type among the handler's
//     headers (Location and the like are dropped); no Idempotent-Replayed or
//     any other header that says it is a replay. Which answers are stored is
//     the responseValidator's choice: by default 2xx only, any other answer
//     makes the middleware forget the key, so a retry runs the handler again;
//   - the same key with another JSON body (or URL, method, query), while the
//     original runs or after it: 417 Expectation Failed, the same kind of
//     HTML page ("Expectation Failed"), never 422. A body that no parser
//     turned into req.body (text/plain here) is not compared at all;
//   - no key: the request goes to the handler as if the middleware were not
//     there; never 400;
//   - every answer to a keyed request echoes the key in an idempotency-key
//     response header.
//
// The tests need node on PATH. Without it they skip, except under CI=true,
// where they fail. npm ci installs the pinned packages into
// express/node_modules when they are missing or not the pinned versions.

// expressStats is what server.js saw for one key (GET /stats).
type expressStats struct {
	Arrivals int   `json:"arrivals"`  // POSTs with this key that reached the app
	Runs     int   `json:"runs"`      // executions of the POST /users handler
	InFlight int   `json:"in_flight"` // executions running now
	Answers  []int `json:"answers"`   // status of every answer finished, in order
	Users    int   `json:"users"`     // users created, all keys
}

type expressServer struct {
	URL  string
	Addr string // host:port
}

var (
	expressInstall     sync.Once
	expressInstallDir  string
	expressInstallErr  error
	expressInstallSkip string
)

// expressAppDir returns the directory of server.js with its node_modules in
// place, running npm ci there once per test process when needed.
func expressAppDir(t *testing.T) string {
	t.Helper()
	expressInstall.Do(func() {
		if _, err := exec.LookPath("node"); err != nil {
			expressInstallSkip = "node is not on PATH: the express-idempotency interop tests need Node.js (18 or later) and npm"
			return
		}
		dir, err := filepath.Abs("express")
		if err != nil {
			expressInstallErr = err
			return
		}
		expressInstallDir = dir
		if installedAsLocked(dir) {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			expressInstallErr = fmt.Errorf("node is on PATH but npm is not; it is needed once to install %s/node_modules", dir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			expressInstallErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
			return
		}
		if !installedAsLocked(dir) {
			expressInstallErr = fmt.Errorf("npm ci in %s did not install the versions of package-lock.json", dir)
		}
	})
	if expressInstallSkip != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(expressInstallSkip + " (CI=true: failing rather than skipping)")
		}
		t.Skip(expressInstallSkip)
	}
	if expressInstallErr != nil {
		t.Fatal(expressInstallErr)
	}
	return expressInstallDir
}

// installedAsLocked reports whether node_modules holds express and
// express-idempotency at the versions package-lock.json pins.
func installedAsLocked(dir string) bool {
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil || json.Unmarshal(b, &lock) != nil {
		return false
	}
	for _, name := range []string{"express", "express-idempotency"} {
		var installed struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err != nil || json.Unmarshal(b, &installed) != nil {
			return false
		}
		if want := lock.Packages["node_modules/"+name].Version; want == "" || installed.Version != want {
			return false
		}
	}
	return true
}

// lockedBuffer collects the server's stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startExpress runs `node server.js` on a free loopback port (server.js
// listens on port 0 and prints the port it got) with NODE_ENV=production and
// the given environment on top, and waits until it answers.
func startExpress(t *testing.T, env ...string) *expressServer {
	t.Helper()
	dir := expressAppDir(t)
	cmd := exec.Command("node", "server.js")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PORT=0", "NODE_ENV=production"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("node server.js: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			if s := stderr.String(); s != "" {
				t.Logf("server.js stderr:\n%s", s)
			}
		}
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-lines:
	case <-exited:
		t.Fatalf("node server.js exited before listening: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("node server.js did not listen within 30s: %s", stderr.String())
	}
	var hello struct {
		Listening int `json:"listening"`
	}
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Listening == 0 {
		t.Fatalf("node server.js printed %q; want {\"listening\":port}", line)
	}
	s := &expressServer{Addr: fmt.Sprintf("127.0.0.1:%d", hello.Listening)}
	s.URL = "http://" + s.Addr
	if _, err := s.statsErr(""); err != nil {
		t.Fatalf("server.js does not answer: %v", err)
	}
	return s
}

func (s *expressServer) statsErr(key string) (expressStats, error) {
	var st expressStats
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/stats?key="+key, nil)
	if err != nil {
		return st, err
	}
	req.Close = true
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (s *expressServer) stats(t *testing.T, key string) expressStats {
	t.Helper()
	st, err := s.statsErr(key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStats polls the stats of key until cond holds, for at most 10 s.
func (s *expressServer) waitStats(t *testing.T, key string, cond func(expressStats) bool) expressStats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.stats(t, key)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q: stats %+v still not as wanted after 10s", key, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// plainClient is an http.Client without saferetry, on its own transport.
func plainClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: requestTimeout}
}

// rawPost sends one POST /users; key "" sends no Idempotency-Key.
func rawPost(t *testing.T, hc *http.Client, s *expressServer, key, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := rawPostErr(hc, s.URL, key, contentType, body)
	if err != nil {
		t.Fatalf("POST /users: %v", err)
	}
	return resp, b
}

func rawPostErr(hc *http.Client, url, key, contentType, body string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url+"/users", strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set(keyHeader, key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// expressErrorPage is the page Express's default error handler (finalhandler)
// writes under NODE_ENV=production for an error without a message of its own
// to show: the status text in a <pre>.
func expressErrorPage(text string) string {
	return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>" +
		text + "</pre>\n</body>\n</html>\n"
}

// checkMiddlewareError checks an answer the middleware itself produced (409
// in progress, 417 misuse) under NODE_ENV=production.
func checkMiddlewareError(t *testing.T, what string, resp *http.Response, body []byte, key string, status int, text string) {
	t.Helper()
	if resp.StatusCode != status || string(body) != expressErrorPage(text) {
		t.Errorf("%s: %d %q; want %d and Express's error page %q", what, resp.StatusCode, body, status, expressErrorPage(text))
	}
	want := map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Content-Security-Policy": "default-src 'none'",
		"X-Content-Type-Options":  "nosniff",
		keyHeader:                 key,
	}
	for h, v := range want {
		if got := resp.Header.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s %q; want %q", what, h, got, v)
		}
	}
	for _, h := range []string{"Retry-After", "Idempotent-Replayed", "X-Handler-Run", "Link"} {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("%s: has %s %q; the middleware sends none", what, h, v)
		}
	}
}

// headerNames returns the header names of h, sorted.
func headerNames(h http.Header) []string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// without returns names minus drop.
func without(names []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(drop, n) })
}

// (a) A duplicate that arrives while the original is running gets the
// middleware's 409; one with another payload gets 417, checked first. The
// original is unaffected.
func TestExpressWireDuplicateWhileProcessing(t *testing.T) {
	s := startExpress(t)
	hc := plainClient(t)
	key := uuid.NewString()
	// The handler holds until the two duplicates below have arrived.
	const body = `{"email":"ada@example.com","until_arrivals":3}`

	type result struct {
		resp *http.Response
		body []byte
		err  error
	}
	original := make(chan result, 1)
	go func() {
		resp, b, err := rawPostErr(hc, s.URL, key, "application/json", body)
		original <- result{resp, b, err}
	}()
	s.waitStats(t, key, func(st expressStats) bool { return st.InFlight == 1 })

	resp, b := rawPost(t, hc, s, key, "application/json", body)
	checkMiddlewareError(t, "same payload while processing", resp, b, key, http.StatusConflict, "Conflict")

	resp, b = rawPost(t, hc, s, key, "application/json", `{"email":"eve@example.com","until_arrivals":3}`)
	checkMiddlewareError(t, "other payload while processing", resp, b, key, http.StatusExpectationFailed, "Expectation Failed")

	r := <-original
	if r.err != nil || r.resp.StatusCode != http.StatusCreated {
		t.Fatalf("original: %v %v %q; want 201", r.err, r.resp, r.body)
	}
	st := s.stats(t, key)
	if st.Runs != 1 || st.Users != 1 || !slices.Equal(st.Answers, []int{409, 417, 201}) {
		t.Errorf("stats %+v; want 1 run, 1 user, answers 409, 417, 201", st)
	}
}

// (a) Outside production, the 409 page shows the middleware's error and its
// stack instead of the status text.
func TestExpressWireDuplicateWhileProcessingDevelopment(t *testing.T) {
	s := startExpress(t, "NODE_ENV=development")
	hc := plainClient(t)
	key := uuid.NewString()
	const body = `{"until_arrivals":2}`
	done := make(chan error, 1)
	go func() {
		_, _, err := rawPostErr(hc, s.URL, key, "application/json", body)
		done <- err
	}()
	s.waitStats(t, key, func(st expressStats) bool { return st.InFlight == 1 })
	resp, b := rawPost(t, hc, s, key, "application/json", body)
	const msg = "<pre>Error: A previous request is still in progress for this key.<br>"
	if resp.StatusCode != http.StatusConflict || !bytes.Contains(b, []byte(msg)) || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("got %d %s %q; want 409 text/html containing %q", resp.StatusCode, resp.Header.Get("Content-Type"), b, msg)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// (b) A duplicate after the original completed gets the stored answer: the
// same status and body bytes, the same Content-Type (and so the same ETag),
// none of the handler's other headers, and no header that marks a replay.
// What is stored is the responseValidator's choice: the package's default
// keeps 2xx only and forgets the key on any other answer, so the retry runs
// the handler again; server.js's IDEMPOTENCY_STORE=all stores every answer.
func TestExpressWireDuplicateAfterCompletion(t *testing.T) {
	cases := []struct {
		name, store, body string
		status            int
		contentType       string
		wantRuns          int
		handlerHeaders    []string // the handler's headers that a replay drops
	}{
		{"201 default store", "2xx", `{"email":"ada@example.com"}`, 201, "application/json; charset=utf-8", 1, []string{"Location", "X-Handler-Run"}},
		{"business 409 default store", "2xx", `{"status":409,"body":"e-mail already registered"}`, 409, "text/plain; charset=utf-8", 2, nil},
		{"business 409 store all", "all", `{"status":409,"body":"e-mail already registered"}`, 409, "text/plain; charset=utf-8", 1, []string{"X-Handler-Run"}},
		{"503 problem store all", "all", `{"status":503,"body":"{\"title\":\"down\"}","content_type":"application/problem+json"}`, 503, "application/problem+json; charset=utf-8", 1, []string{"X-Handler-Run"}},
	}
	servers := map[string]*expressServer{
		"2xx": startExpress(t, "IDEMPOTENCY_STORE=2xx"),
		"all": startExpress(t, "IDEMPOTENCY_STORE=all"),
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := servers[tc.store]
			hc := plainClient(t)
			key := uuid.NewString()
			first, firstBody := rawPost(t, hc, s, key, "application/json", tc.body)
			again, againBody := rawPost(t, hc, s, key, "application/json", tc.body)

			if first.StatusCode != tc.status || again.StatusCode != tc.status {
				t.Errorf("statuses %d then %d; want %d twice", first.StatusCode, again.StatusCode, tc.status)
			}
			if !bytes.Equal(firstBody, againBody) {
				t.Errorf("bodies differ: %q then %q", firstBody, againBody)
			}
			for _, r := range []*http.Response{first, again} {
				if ct := r.Header.Get("Content-Type"); ct != tc.contentType {
					t.Errorf("Content-Type %q; want %q", ct, tc.contentType)
				}
				if k := r.Header.Values(keyHeader); len(k) != 1 || k[0] != key {
					t.Errorf("%s %q; want the key echoed", keyHeader, k)
				}
			}
			if e1, e2 := first.Header.Get("ETag"), again.Header.Get("ETag"); e1 == "" || e1 != e2 {
				t.Errorf("ETag %q then %q; want the same", e1, e2)
			}
			st := s.stats(t, key)
			if st.Runs != tc.wantRuns {
				t.Errorf("handler runs %d; want %d", st.Runs, tc.wantRuns)
			}
			if tc.wantRuns == 2 {
				// Not stored: the second answer is a new one, not a replay.
				if r1, r2 := first.Header.Get("X-Handler-Run"), again.Header.Get("X-Handler-Run"); r1 != "1" || r2 != "2" {
					t.Errorf("X-Handler-Run %q then %q; want 1 then 2", r1, r2)
				}
				return
			}
			// A replay: the first answer's header names minus the handler's
			// own; nothing added (no Idempotent-Replayed or the like).
			if got, want := headerNames(again.Header), without(headerNames(first.Header), tc.handlerHeaders...); !slices.Equal(got, want) {
				t.Errorf("replay headers %q; want %q (the original's %q without %q)", got, want, headerNames(first.Header), tc.handlerHeaders)
			}
		})
	}
}

// (c) The same key with another payload after completion: 417 from the
// middleware, never 422; the stored answer is kept for the right payload. A
// body that Express did not parse (text/plain) is not compared: the other
// payload gets the replay.
func TestExpressWireKeyReusedWithOtherPayload(t *testing.T) {
	s := startExpress(t)
	hc := plainClient(t)

	t.Run("JSON", func(t *testing.T) {
		key := uuid.NewString()
		first, firstBody := rawPost(t, hc, s, key, "application/json", `{"email":"ada@example.com"}`)
		if first.StatusCode != http.StatusCreated {
			t.Fatalf("first: %d %q", first.StatusCode, firstBody)
		}
		resp, b := rawPost(t, hc, s, key, "application/json", `{"email":"eve@example.com"}`)
		checkMiddlewareError(t, "other payload after completion", resp, b, key, http.StatusExpectationFailed, "Expectation Failed")
		again, againBody := rawPost(t, hc, s, key, "application/json", `{"email":"ada@example.com"}`)
		if again.StatusCode != http.StatusCreated || !bytes.Equal(againBody, firstBody) {
			t.Errorf("right payload again: %d %q; want the stored 201 %q", again.StatusCode, againBody, firstBody)
		}
		if st := s.stats(t, key); st.Runs != 1 || !slices.Equal(st.Answers, []int{201, 417, 201}) {
			t.Errorf("stats %+v; want 1 run, answers 201, 417, 201", st)
		}
	})

	t.Run("unparsed body", func(t *testing.T) {
		key := uuid.NewString()
		first, firstBody := rawPost(t, hc, s, key, "text/plain", "one")
		other, otherBody := rawPost(t, hc, s, key, "text/plain", "two")
		if first.StatusCode != http.StatusCreated || other.StatusCode != http.StatusCreated || !bytes.Equal(firstBody, otherBody) {
			t.Errorf("got %d %q then %d %q; want the same 201 replayed", first.StatusCode, firstBody, other.StatusCode, otherBody)
		}
		if st := s.stats(t, key); st.Runs != 1 {
			t.Errorf("stats %+v; want 1 run", st)
		}
	})
}

// (d) No key: the middleware lets the request through untouched, no 400;
// two identical POSTs create two users.
func TestExpressWireNoKey(t *testing.T) {
	s := startExpress(t)
	hc := plainClient(t)
	const body = `{"email":"ada@example.com"}`
	var ids []string
	for range 2 {
		resp, b := rawPost(t, hc, s, "", "application/json", body)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("got %d %q; want 201", resp.StatusCode, b)
		}
		if _, ok := resp.Header[keyHeader]; ok {
			t.Errorf("an answer to a request without key has %s", keyHeader)
		}
		var u struct{ ID string }
		if err := json.Unmarshal(b, &u); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	if st := s.stats(t, ""); st.Runs != 2 || st.Users != 2 || ids[0] == ids[1] {
		t.Errorf("stats %+v, ids %q; want 2 runs, 2 distinct users", st, ids)
	}
}

// dropProxy forwards TCP connections to target. On each of the first drop
// connections it forwards the request, waits for the first bytes of the
// server's response (the handler has answered, and express-idempotency has
// taken what it stores) and closes both sides instead of forwarding them:
// the client sent its whole request and gets EOF, an attempt of unknown
// outcome that was really processed. Later connections are plain pipes.
type dropProxy struct {
	URL     string
	ln      net.Listener
	drop    int32
	conns   atomic.Int32
	dropped atomic.Int32
	wg      sync.WaitGroup
	mu      sync.Mutex
	open    map[net.Conn]struct{}
}

func startDropProxy(t *testing.T, target string, drop int) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{URL: "http://" + ln.Addr().String(), ln: ln, drop: int32(drop), open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *dropProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.open[c] = struct{}{}
	}
}

func (p *dropProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.open, c)
	}
}

func (p *dropProxy) serve(client net.Conn, target string) {
	up, err := net.Dial("tcp", target)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, up)
	defer p.untrack(client, up)
	n := p.conns.Add(1)
	go io.Copy(up, client)
	if n <= p.drop {
		var b [1]byte
		if _, err := up.Read(b[:]); err == nil {
			p.dropped.Add(1)
		}
		return
	}
	io.Copy(client, up)
}

// postUser sends one logical POST /users through hc.
func postUser(hc *http.Client, url, body string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/users", strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// onlyKey returns the one key all attempts carried.
func onlyKey(t *testing.T, log *attemptLog) string {
	t.Helper()
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.list) == 0 || log.list[0].Key == "" {
		t.Fatalf("attempts %+v; want keyed attempts", log.list)
	}
	for _, a := range log.list {
		if a.Key != log.list[0].Key {
			t.Fatalf("attempts %+v carry different keys", log.list)
		}
	}
	return log.list[0].Key
}

// wantServerAnswer checks that a call ended with the server's own answer:
// the response itself, or an error that carries it; never
// ErrRequestInProcess.
func wantServerAnswer(t *testing.T, resp *http.Response, body []byte, err error, status int, wantBody string) {
	t.Helper()
	var apiErr *saferetry.APIError
	switch {
	case errors.Is(err, saferetry.ErrRequestInProcess):
		t.Errorf("got ErrRequestInProcess (%v); want the server's answer %d %q: the caller is told to try again later and would get the same answer forever", err, status, wantBody)
	case err != nil && errors.As(err, &apiErr):
		if apiErr.StatusCode != status || string(apiErr.Body) != wantBody {
			t.Errorf("got %v with %d %q; want the server's answer %d %q", err, apiErr.StatusCode, apiErr.Body, status, wantBody)
		}
	case err != nil:
		t.Errorf("got %v; want the server's answer %d %q", err, status, wantBody)
	case resp.StatusCode != status || string(body) != wantBody:
		t.Errorf("got %d %q; want the server's answer %d %q", resp.StatusCode, body, status, wantBody)
	}
}

const (
	emailTaken   = "e-mail already registered"
	business409  = `{"email":"ada@example.com","status":409,"body":"` + emailTaken + `"}`
	sdkMaxRetry  = 3
	attemptLimit = 300 * time.Millisecond
)

// (i) The first attempt is processed (the handler answers a business 409,
// "e-mail already registered") and its answer is lost on the way back. Every
// retry with the same key gets that 409 again: replayed from the store
// (IDEMPOTENCY_STORE=all, the draft's behaviour) or answered anew by the
// handler (the package's default, which stores 2xx only). Either way it is
// the server's final answer, and the SDK must return it, not
// ErrRequestInProcess.
func TestExpressSDKReturnsBusiness409AfterLostAnswer(t *testing.T) {
	for _, store := range []string{"all", "2xx"} {
		t.Run("store="+store, func(t *testing.T) {
			s := startExpress(t, "IDEMPOTENCY_STORE="+store)
			proxy := startDropProxy(t, s.Addr, 1)
			var log attemptLog
			hc := newClient(t, &log, saferetry.WithMaxRetries(sdkMaxRetry))

			resp, body, err := postUser(hc, proxy.URL, business409)
			key := onlyKey(t, &log)
			wantServerAnswer(t, resp, body, err, http.StatusConflict, emailTaken)

			st := s.stats(t, key)
			if proxy.dropped.Load() != 1 || len(st.Answers) == 0 || st.Answers[0] != http.StatusConflict {
				t.Fatalf("dropped %d, stats %+v; want the first answer (409) processed and dropped", proxy.dropped.Load(), st)
			}
			attempts := log.forKey(key)
			if a := attempts[0]; a.Err == nil || !a.Sent || a.StatusCode != 0 {
				t.Errorf("attempt 1 %+v; want sent, ended without a response", a)
			}
			if st.Users != 0 {
				t.Errorf("%d users created; want none", st.Users)
			}
			switch store {
			case "all":
				if st.Runs != 1 {
					t.Errorf("handler runs %d; want 1 (every retry answered from the store)", st.Runs)
				}
			case "2xx":
				if st.Runs != st.Arrivals {
					t.Errorf("handler runs %d, arrivals %d; want one run per arrival (a 409 is not stored)", st.Runs, st.Arrivals)
				}
			}
			t.Logf("%d attempts: %s", len(attempts), attemptSummary(attempts))
		})
	}
}

// (ii) The first attempt times out while the handler is still running; the
// retries get the middleware's 409 "in progress" until the original
// completes, then its stored 201. The SDK waits it out and returns that 201:
// the user the only run created.
func TestExpressSDKWaitsOutOriginalInProgress(t *testing.T) {
	s := startExpress(t)
	var log attemptLog
	hc := newClient(t, &log, saferetry.WithAttemptTimeout(attemptLimit), saferetry.WithMaxRetries(8),
		saferetry.WithBackoff(20*time.Millisecond, 100*time.Millisecond))

	// The handler holds until the third request with its key has arrived:
	// attempt 1 times out, attempt 2 surely meets it running.
	resp, body, err := postUser(hc, s.URL, `{"email":"ada@example.com","until_arrivals":3}`)
	key := onlyKey(t, &log)
	attempts := log.forKey(key)
	t.Logf("%d attempts: %s", len(attempts), attemptSummary(attempts))
	if err != nil {
		t.Fatalf("POST: %v; want the original's 201", err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("got %d %q; want the original's 201", resp.StatusCode, body)
	}
	var u struct{ ID, Email, Key string }
	if err := json.Unmarshal(body, &u); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	st := s.stats(t, key)
	if u.ID != "usr_1" || u.Key != key || st.Runs != 1 || st.Users != 1 {
		t.Errorf("user %+v, stats %+v; want the one user usr_1 created by the one run, key %s", u, st, key)
	}
	if !slices.Contains(st.Answers, http.StatusConflict) {
		t.Errorf("answers %v; want at least one 409 in progress (the test did not exercise it)", st.Answers)
	}
	if a := attempts[0]; a.Err == nil || !a.Sent {
		t.Errorf("attempt 1 %+v; want a sent attempt that timed out", a)
	}
}

// (i) and (ii) at once: the original is still running when the retries
// arrive (409 in progress), and what it ends with is a business 409 that the
// middleware stores (IDEMPOTENCY_STORE=all) and replays. The SDK waits out
// the first kind of 409 and returns the second.
func TestExpressSDKWaitsOutInProgressThenReturnsStored409(t *testing.T) {
	s := startExpress(t, "IDEMPOTENCY_STORE=all")
	var log attemptLog
	hc := newClient(t, &log, saferetry.WithAttemptTimeout(attemptLimit), saferetry.WithMaxRetries(8),
		saferetry.WithBackoff(20*time.Millisecond, 100*time.Millisecond))

	resp, body, err := postUser(hc, s.URL, `{"email":"ada@example.com","until_arrivals":3,"status":409,"body":"`+emailTaken+`"}`)
	key := onlyKey(t, &log)
	attempts := log.forKey(key)
	t.Logf("%d attempts: %s", len(attempts), attemptSummary(attempts))
	wantServerAnswer(t, resp, body, err, http.StatusConflict, emailTaken)
	if st := s.stats(t, key); st.Runs != 1 || !slices.Contains(st.Answers, http.StatusConflict) {
		t.Errorf("stats %+v; want 1 run and a 409 in progress seen", st)
	}
}

func attemptSummary(attempts []saferetry.Attempt) string {
	parts := make([]string, len(attempts))
	for i, a := range attempts {
		switch {
		case a.Err != nil:
			parts[i] = fmt.Sprintf("#%d error (%v)", a.Number, a.Err)
		default:
			parts[i] = fmt.Sprintf("#%d %d", a.Number, a.StatusCode)
		}
		if a.Retry {
			parts[i] += fmt.Sprintf(" retry after %v", a.Wait.Round(time.Millisecond))
		}
	}
	return strings.Join(parts, ", ")
}
