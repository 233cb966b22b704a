package matrix

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// The fake API: one per cell, behind either server (net/http's for
// HTTP/1.1, the framer-driven one for HTTP/2). It counts how many times each
// operation's payload was processed, deduplicates on the key only where the
// preset's real server does, checks credentials as the real API would, and
// draws each attempt's fault.

const (
	opHeader  = "X-Test-Op" // names the operation on every attempt, bodies or not
	tokenPath = "/token"    // Chift's token endpoint, relative to the API base URL
	apiPath   = "/v1/payments"
)

type credentials struct {
	chift        saferetry.ChiftCredentials
	zhKey        string
	zhSecret     string // base64
	zhPassphrase string
}

func newCredentials() credentials {
	return credentials{
		chift: saferetry.ChiftCredentials{
			ClientID: "matrix-client", ClientSecret: "matrix-secret",
			AccountID: "0b9f7c1e-6a52-4d3b-9c1e-2f5a7d8e9b10",
		},
		zhKey:        "matrix-api-key",
		zhSecret:     base64.StdEncoding.EncodeToString([]byte("matrix zerohash signing secret")),
		zhPassphrase: "matrix-passphrase",
	}
}

// keyHeader is the header the preset puts the idempotency key in.
func (a auth) keyHeader() string {
	switch a {
	case chiftToken:
		return saferetry.ChiftRequestIDHeader
	case zeroHashSigning:
		return saferetry.ZeroHashRequestIDHeader
	}
	return saferetry.DefaultRequestIDHeader
}

// deduplicates: the preset's real server processes one key once. zerohash
// does not deduplicate on X-Request-Id (only on client_transfer_id, which
// plain requests do not carry).
func (a auth) deduplicates() bool { return a != zeroHashSigning }

// answer is a complete HTTP answer, for either server to write.
type answer struct {
	status int
	header http.Header
	body   []byte
}

type fakeAPI struct {
	auth    auth
	kinds   []fault
	creds   credentials
	release chan struct{} // closed when the cell ends: slow answers go out at once
	once    sync.Once

	opList []*opRecord // in the order the workers take them

	mu      sync.Mutex
	ops     map[string]*opRecord
	stored  map[string]storedAnswer // by key, where the preset deduplicates
	tokens  map[string]bool
	entity  int
	strays  []string // problems not tied to an operation
	tokenNo int
}

type storedAnswer struct {
	op      string
	answer  answer
	pending bool // processed, its answer not yet out: the key is "in process"
}

func newFakeAPI(c cell, creds credentials, seed uint64, ops int) *fakeAPI {
	a := &fakeAPI{
		auth: c.auth, kinds: c.faults(), creds: creds, release: make(chan struct{}),
		ops: map[string]*opRecord{}, stored: map[string]storedAnswer{}, tokens: map[string]bool{},
	}
	for i := range ops {
		id := fmt.Sprintf("op-%04d", i)
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%s", c, id)
		op := &opRecord{id: id, payload: payload(id, c.body), rng: rand.New(rand.NewPCG(seed, h.Sum64()))}
		a.ops[id] = op
		a.opList = append(a.opList, op)
	}
	return a
}

// releaseHeld lets every held slow answer go.
func (a *fakeAPI) releaseHeld() { a.once.Do(func() { close(a.release) }) }

// hold keeps a slow answer back until long past the bound, the end of the
// cell, or either gone channel closes (the client or the connection went
// away; nil never does).
func (a *fakeAPI) hold(gone1, gone2 <-chan struct{}) {
	t := time.NewTimer(slowHold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-a.release:
	case <-gone1:
	case <-gone2:
	}
}

func (a *fakeAPI) stray(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.strays) < 20 {
		a.strays = append(a.strays, fmt.Sprintf(format, args...))
	}
}

// arrive records an attempt from its headers and draws its fault. It
// returns nil for a request that names no operation.
func (a *fakeAPI) arrive(h http.Header) (*opRecord, *arrival) {
	a.mu.Lock()
	op := a.ops[h.Get(opHeader)]
	a.mu.Unlock()
	if op == nil {
		a.stray("a request naming no operation (%s: %q)", opHeader, h.Get(opHeader))
		return nil, nil
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	at := &arrival{key: strings.Join(h.Values(a.auth.keyHeader()), ","), fault: drawFault(op.rng, a.kinds)}
	op.arrivals = append(op.arrivals, at)
	return op, at
}

// serve answers a complete request: its body checked against the
// operation's payload, its credentials, the status fault if one was drawn,
// then deduplication and processing.
func (a *fakeAPI) serve(op *opRecord, at *arrival, method, uri string, h http.Header, body []byte) answer {
	if !bytes.Equal(body, op.payload) {
		op.note(at, fmt.Sprintf("corrupt body (%d bytes, want %d)", len(body), len(op.payload)), func() { op.corrupt++ })
		return jsonAnswer(http.StatusBadRequest, map[string]any{"message": "the body is not the operation's payload"})
	}
	if err := a.checkCredentials(method, uri, h, body); err != nil {
		op.note(at, "credentials refused: "+err.Error(), func() { op.refused++ })
		return a.refusal(err)
	}
	if status := at.fault.spec().status; status != 0 {
		op.note(at, strconv.Itoa(status), nil)
		return a.faultAnswer(status)
	}
	return a.process(op, at)
}

// process applies the operation once per key where the preset's server
// deduplicates, and on every arrival where it does not. A slow answer
// keeps its key "in process" until settle.
func (a *fakeAPI) process(op *opRecord, at *arrival) answer {
	slow := op.faultOf(at) == slowAnswer
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.auth.deduplicates() {
		if prev, ok := a.stored[at.key]; ok {
			op.note(at, "deduplicated", nil)
			return a.replay(prev, op.id, at.key)
		}
	}
	a.entity++
	ans := jsonAnswer(http.StatusCreated, map[string]any{"op": op.id, "id": fmt.Sprintf("ent-%d", a.entity)})
	op.note(at, "processed", func() { op.processed++ })
	if a.auth.deduplicates() {
		a.stored[at.key] = storedAnswer{op: op.id, answer: ans, pending: slow}
	}
	return ans
}

// settle ends the "in process" state of a slow answer's key, once the
// answer went out or could not.
func (a *fakeAPI) settle(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.stored[key]; ok {
		s.pending = false
		a.stored[key] = s
	}
}

// replay is the deduplicating server's answer to a key it knows: Chift's
// 409 REQUEST_IN_PROCESS or REQUEST_ALREADY_PROCESSED; the IETF draft's
// 409 while in process, then the stored answer (422 when the key came with
// another payload).
func (a *fakeAPI) replay(prev storedAnswer, op, key string) answer {
	switch {
	case a.auth == chiftToken && prev.pending:
		return jsonAnswer(http.StatusConflict, map[string]any{
			"status": "error", "message": "Request is in processing",
			"detail":     fmt.Sprintf("Request with same client request id %s is currently processed", key),
			"error_code": "REQUEST_IN_PROCESS",
		})
	case a.auth == chiftToken:
		return jsonAnswer(http.StatusConflict, map[string]any{
			"status": "error", "message": fmt.Sprintf("Request already processed: %d", prev.answer.status),
			"detail":     fmt.Sprintf("Request with same client request id %s was already successfully processed", key),
			"error_code": "REQUEST_ALREADY_PROCESSED",
		})
	case prev.op != op:
		return problem(http.StatusUnprocessableEntity, "Idempotency-Key is already used")
	case prev.pending:
		return problem(http.StatusConflict, "A request is outstanding for this Idempotency-Key")
	}
	ans := prev.answer
	ans.header = ans.header.Clone()
	ans.header.Set("Idempotent-Replayed", "true")
	return ans
}

// problem is an RFC 7807 answer, as the IETF draft's examples give them.
func problem(status int, title string) answer {
	ans := jsonAnswer(status, map[string]any{"type": "about:blank", "title": title, "status": status})
	ans.header.Set("Content-Type", "application/problem+json")
	return ans
}

func (a *fakeAPI) faultAnswer(status int) answer {
	switch {
	case status == http.StatusUnauthorized:
		return jsonAnswer(status, map[string]any{"status": "error", "message": "Invalid token", "error_code": "ERROR_CHIFT_AUTHENTICATION_ERROR"})
	case status == http.StatusServiceUnavailable && a.auth == zeroHashSigning:
		ans := jsonAnswer(status, map[string]any{"error": "Service Unavailable"})
		ans.header.Set("Zh-Allow-Retry", "true")
		return ans
	}
	text := fmt.Sprintf("%d %s", status, http.StatusText(status))
	return answer{status: status, header: http.Header{"Content-Type": {"text/html"}},
		body: []byte("<html><head><title>" + text + "</title></head><body>" + text + "</body></html>")}
}

// token is Chift's POST /token: a JSON body with the credentials, a bearer
// token in return.
func (a *fakeAPI) token(body []byte) answer {
	var in struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
		AccountID    string `json:"accountId"`
	}
	want := a.creds.chift
	if json.Unmarshal(body, &in) != nil || in.ClientID != want.ClientID || in.ClientSecret != want.ClientSecret || in.AccountID != want.AccountID {
		a.stray("a token request with wrong credentials")
		return jsonAnswer(http.StatusUnauthorized, map[string]any{"status": "error", "message": "Invalid credentials", "error_code": "ERROR_CHIFT_AUTHENTICATION_ERROR"})
	}
	a.mu.Lock()
	a.tokenNo++
	tok := fmt.Sprintf("matrix-token-%d", a.tokenNo)
	a.tokens[tok] = true
	a.mu.Unlock()
	return jsonAnswer(http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "bearer", "expires_in": 1800, "expires_on": time.Now().Add(30 * time.Minute).Unix(),
	})
}

// checkCredentials is what the real API checks before anything else: a
// token it issued (Chift), a fresh valid signature (zerohash).
func (a *fakeAPI) checkCredentials(method, uri string, h http.Header, body []byte) error {
	switch a.auth {
	case chiftToken:
		tok, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		issued := a.tokens[tok]
		a.mu.Unlock()
		if !ok || !issued {
			return errors.New("no token this server issued")
		}
	case zeroHashSigning:
		return a.checkSignature(method, uri, h, body)
	}
	return nil
}

func (a *fakeAPI) checkSignature(method, uri string, h http.Header, body []byte) error {
	if h.Get("X-Scx-Api-Key") != a.creds.zhKey || h.Get("X-Scx-Passphrase") != a.creds.zhPassphrase {
		return errors.New("wrong API key or passphrase")
	}
	ts := h.Get("X-Scx-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		return fmt.Errorf("timestamp %q is not within 60 s", ts)
	}
	secret, _ := base64.StdEncoding.DecodeString(a.creds.zhSecret)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + method + uri))
	mac.Write(body)
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(h.Get("X-Scx-Signed")), []byte(want)) {
		return errors.New("the signature does not match the request")
	}
	return nil
}

func (a *fakeAPI) refusal(err error) answer {
	if a.auth == zeroHashSigning {
		return jsonAnswer(http.StatusForbidden, map[string]any{"error": true, "message": err.Error()})
	}
	return jsonAnswer(http.StatusUnauthorized, map[string]any{"status": "error", "message": err.Error(), "error_code": "ERROR_CHIFT_AUTHENTICATION_ERROR"})
}

func jsonAnswer(status int, v any) answer {
	body, _ := json.Marshal(v)
	return answer{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: body}
}

// payload is the operation's body: JSON naming it, padded to the size the
// cell's body kind needs. noBody sends none; the op header names it.
func payload(op string, kind bodyKind) []byte {
	size := smallBody
	switch kind {
	case noBody:
		return nil
	case streamLarge:
		size = largeBody
	}
	head := fmt.Sprintf(`{"op":%q,"pad":"`, op)
	pad := strings.Repeat("x", size-len(head)-2)
	return []byte(head + pad + `"}`)
}
