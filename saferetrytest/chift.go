package saferetrytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

const (
	keyHeader    = "X-Chift-Client-RequestId"
	maxKeyLen    = 255 // varchar(255), counted in characters
	maxBodyBytes = 1 << 20
)

// ChiftServer is an in-process fake of Chift's invoice, token and
// transaction lookup endpoints that speaks real HTTP on loopback. Create it
// with NewChiftServer.
type ChiftServer struct {
	// URL is the base URL, such as http://127.0.0.1:PORT.
	URL string
	// SlowDelay is how long FaultSlowCommit holds a key in process, unless
	// ReleaseSlowCommits ends the hold first. Set it before sending
	// requests; the default is 300ms.
	SlowDelay time.Duration
	// RetryAfterSeconds is the Retry-After value FaultRateLimited sends.
	// Set it before sending requests; the default is 1.
	RetryAfterSeconds int

	// ClientID, ClientSecret and AccountID are the only credentials POST
	// /token accepts. NewChiftServer sets them to random values (AccountID
	// is a random version 4 UUID); set them before sending requests.
	ClientID, ClientSecret, AccountID string
	// ConnectionID is the one connection, shared by every consumer, that
	// GET /consumers/{consumer_id}/connections/{connection_id}/transactions
	// knows; any other connection id is answered 404. NewChiftServer sets it
	// to a random version 4 UUID; set it before sending requests.
	ConnectionID string
	// TokenLifetime is how long an issued token is valid, by Now. Set it
	// before sending requests; the default is 30 minutes, as Chift documents.
	TokenLifetime time.Duration
	// RequireAuth makes every request except POST /token need an
	// "Authorization: Bearer <token>" header (scheme in any case) carrying
	// an unexpired token. Set it before sending requests; the default,
	// false, lets requests in without a token.
	RequireAuth bool
	// Now is the server clock: it dates tokens and transactions and times
	// token expiry and SetLookupDelay. Set it before sending requests; to
	// move time during a test, give a func that reads a time you change
	// safely (under a mutex). It is never called with the server's lock held,
	// so it may call the server's methods. The default is time.Now.
	Now func() time.Time

	fakeServer // its mu guards the fields below

	keys         map[string]keyState
	invoices     map[string]Invoice
	numbers      map[invoiceNumber]string
	tokenScript  []Fault
	tokens       map[tokenHash]time.Time // expiry, as announced in expires_on
	tokensIssued int
	lookupDelay  time.Duration
}

// RequestRecord describes one request the server received.
type RequestRecord struct {
	Method string
	Path   string
	Key    string // X-Chift-Client-RequestId, "" when absent
	Fault  Fault
	Status int // status written, 0 if the connection was dropped
}

// Invoice is an entity the server created.
type Invoice struct {
	ID   string
	Key  string         // X-Chift-Client-RequestId of the creating request
	Body map[string]any // the decoded JSON the client posted
}

// keyState is either in process (done false) or recorded with the status
// its processing produced. The other fields are what GET .../transactions
// reports: the original request, its start and end on the server clock, and
// the invoice it created ("" when none).
type keyState struct {
	done      bool
	status    int
	consumer  string
	method    string
	route     string
	started   time.Time
	processed time.Time
	entityID  string
}

// invoiceNumber scopes invoice numbers to a consumer, as a connected
// accounting system would.
type invoiceNumber struct {
	consumer, number string
}

// NewChiftServer starts a server listening on loopback. The caller must Close it.
func NewChiftServer() *ChiftServer {
	s := &ChiftServer{
		SlowDelay:         300 * time.Millisecond,
		RetryAfterSeconds: 1,
		ClientID:          randomHex(16),
		ClientSecret:      randomHex(32),
		AccountID:         newUUID(),
		ConnectionID:      newUUID(),
		TokenLifetime:     30 * time.Minute,
		Now:               time.Now,
		tokens:            map[tokenHash]time.Time{},
		keys:              map[string]keyState{},
		invoices:          map[string]Invoice{},
		numbers:           map[invoiceNumber]string{},
	}
	s.URL = s.start(s.routes())
	return s
}

// Script appends faults to a FIFO queue; each create request that passes the
// key check consumes one.
func (s *ChiftServer) Script(faults ...Fault) {
	s.enqueue(&s.script, faults)
}

// SetFaultFunc sets what decides the fault once the script is empty; nil
// means FaultNone. attempt is n for the nth create request carrying key
// (counting every one, also those answered 409 or scripted), and 1 for an
// unkeyed request. f runs without the server's lock held, so it may call the
// server's methods.
func (s *ChiftServer) SetFaultFunc(f func(key string, attempt int) Fault) {
	s.setFaultFunc(f)
}

// Created returns the number of entities created in total.
func (s *ChiftServer) Created() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.invoices)
}

// CreatedWithKey returns how many entities were created by requests carrying
// key; "" counts the unkeyed ones.
func (s *ChiftServer) CreatedWithKey(key string) int {
	return s.createdWith(key)
}

// Requests returns every request received, in arrival order.
func (s *ChiftServer) Requests() []RequestRecord {
	return s.requestLog()
}

// Entity returns the invoice with the given id.
func (s *ChiftServer) Entity(id string) (Invoice, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv, ok := s.invoices[id]
	inv.Body = maps.Clone(inv.Body)
	return inv, ok
}

// routes puts every handler but POST /token behind authed.
func (s *ChiftServer) routes() http.Handler {
	mux := http.NewServeMux()
	for _, path := range []string{
		"/consumers/{consumer_id}/invoicing/invoices",
		"/consumers/{consumer_id}/accounting/invoices",
	} {
		mux.HandleFunc("POST "+path, s.authed(s.create))
		mux.HandleFunc(path, s.authed(s.methodNotAllowed(http.MethodPost)))
	}
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("/token", s.authed(s.methodNotAllowed(http.MethodPost)))
	mux.HandleFunc("GET "+transactionsPath, s.authed(s.transactions))
	mux.HandleFunc(transactionsPath, s.authed(s.methodNotAllowed(http.MethodGet)))
	mux.HandleFunc("/", s.authed(s.notSupported))
	return mux
}

func (s *ChiftServer) create(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(keyHeader)
	rec := s.logRequest(r, key)
	s.record(rec, s.decide(rec, r, key)).send(w)
}

// decide runs the steps listed in the package doc, in that order.
func (s *ChiftServer) decide(rec int, r *http.Request, key string) reply {
	if utf8.RuneCountInString(key) > maxKeyLen {
		return jsonReply(http.StatusUnprocessableEntity, keyTooLong())
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes)) // a cut body fails to decode: 422
	fault, conflict := s.admit(key, keyState{
		consumer: r.PathValue("consumer_id"),
		method:   r.Method,
		route:    r.URL.Path,
	})
	if conflict != nil {
		return jsonReply(http.StatusConflict, conflict)
	}
	return s.faulted(rec, fault, key, func() reply {
		return s.process(r.PathValue("consumer_id"), key, body)
	})
}

// admit runs the key check and picks the fault. The key counts as in process
// from the check until the fault turns out to strike before processing, so a
// duplicate can never slip in between check and fault. origin describes the
// request for the transaction log.
func (s *ChiftServer) admit(key string, origin keyState) (Fault, *chiftError) {
	origin.started = s.now()
	s.mu.Lock()
	attempt := s.countAttempt(key)
	if conflict := s.keyConflict(key); conflict != nil {
		s.mu.Unlock()
		return FaultNone, conflict
	}
	s.markInProcess(key, origin)
	fault, decide := s.takeScripted()
	s.mu.Unlock()
	if decide != nil {
		fault = decide(key, attempt)
	}
	if fault.beforeProcessing() {
		s.release(key)
	}
	return fault, nil
}

func (s *ChiftServer) keyConflict(key string) *chiftError {
	state, seen := s.keys[key]
	switch {
	case key == "" || !seen:
		return nil
	case state.done:
		return alreadyProcessed(key, state.status)
	}
	return inProcess(key)
}

func (s *ChiftServer) markInProcess(key string, origin keyState) {
	if key != "" {
		s.keys[key] = origin
	}
}

func (s *ChiftServer) release(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
}

// process creates the invoice or refuses it, and records the key with the
// status it produced.
func (s *ChiftServer) process(consumer, key string, raw []byte) reply {
	fields, invalid := decodeObject(raw)
	now := s.now()
	s.mu.Lock()
	status, payload, id := s.commit(consumer, key, fields, invalid)
	if state, ok := s.keys[key]; ok && key != "" {
		state.done, state.status, state.processed, state.entityID = true, status, now, id
		s.keys[key] = state
	}
	s.mu.Unlock()
	return jsonReply(status, payload)
}

// commit returns the status, the body and the id of the invoice created, ""
// when none was.
func (s *ChiftServer) commit(consumer, key string, fields map[string]any, invalid any) (int, any, string) {
	if invalid != nil {
		return http.StatusUnprocessableEntity, invalid, ""
	}
	number, hasNumber := invoiceNumberOf(consumer, fields)
	if _, taken := s.numbers[number]; hasNumber && taken {
		return http.StatusConflict, invoiceNumberUsed, ""
	}
	inv := s.createInvoice(key, fields)
	if hasNumber {
		s.numbers[number] = inv.ID
	}
	return http.StatusOK, withID(fields, inv.ID), inv.ID
}

func (s *ChiftServer) createInvoice(key string, fields map[string]any) Invoice {
	inv := Invoice{ID: "inv_" + strconv.Itoa(len(s.invoices)+1), Key: key, Body: fields}
	s.invoices[inv.ID] = inv
	s.createdBy[key]++
	return inv
}

func invoiceNumberOf(consumer string, fields map[string]any) (invoiceNumber, bool) {
	v, ok := fields["invoice_number"]
	if !ok || v == nil {
		return invoiceNumber{}, false
	}
	return invoiceNumber{consumer: consumer, number: fmt.Sprint(v)}, true
}

// withID builds the response on a copy, so that the stored Body stays what
// the client posted.
func withID(fields map[string]any, id string) map[string]any {
	out := maps.Clone(fields)
	out["id"] = id
	return out
}

func (s *ChiftServer) methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.unsupported(w, r, http.StatusMethodNotAllowed)
	}
}

func (s *ChiftServer) notSupported(w http.ResponseWriter, r *http.Request) {
	s.unsupported(w, r, http.StatusNotFound)
}

func (s *ChiftServer) unsupported(w http.ResponseWriter, r *http.Request, status int) {
	rec := s.logRequest(r, r.Header.Get(keyHeader))
	s.record(rec, jsonReply(status, chiftError{
		Status:    "error",
		Message:   fmt.Sprintf("The resource %s - %s is not supported", r.Method, r.URL.Path),
		ErrorCode: "ERROR_RESOURCE_NOT_SUPPORTED",
	})).send(w)
}

// chiftError is Chift's error body; field order follows the documents.
type chiftError struct {
	Status    string `json:"status"`
	Message   string `json:"message"`
	Detail    string `json:"detail,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
}

// validationError is the FastAPI-style 422 body, whose detail is a list.
type validationError struct {
	Status  string            `json:"status"`
	Message string            `json:"message"`
	Detail  []validationIssue `json:"detail"`
}

type validationIssue struct {
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
	Type string   `json:"type"`
}

var invoiceNumberUsed = chiftError{
	Status:    "error",
	Message:   "The invoice number is already used in the accounting system.",
	ErrorCode: "ERROR_INVOICE_NUMBER_ALREADY_USED",
}

func inProcess(key string) *chiftError {
	return &chiftError{
		Status:    "error",
		Message:   "Request is in processing",
		Detail:    "Request with same client request id " + key + " is currently processed",
		ErrorCode: "REQUEST_IN_PROCESS",
	}
}

func alreadyProcessed(key string, status int) *chiftError {
	return &chiftError{
		Status:    "error",
		Message:   "Request already processed: " + strconv.Itoa(status),
		Detail:    "Request with same client request id " + key + " was already successfully processed",
		ErrorCode: "REQUEST_ALREADY_PROCESSED",
	}
}

func validation(loc []string, msg, typ string) *validationError {
	return &validationError{
		Status:  "error",
		Message: "Validation error",
		Detail:  []validationIssue{{Loc: loc, Msg: msg, Type: typ}},
	}
}

func keyTooLong() *validationError {
	return validation([]string{"header", "x-chift-client-requestid"},
		"String should have at most 255 characters", "string_too_long")
}

// decodeObject returns the posted JSON object, or the 422 body that refuses it.
func decodeObject(raw []byte) (map[string]any, any) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, validation([]string{"body"}, "JSON decode error", "json_invalid")
	}
	fields, ok := v.(map[string]any)
	if !ok {
		return nil, validation([]string{"body"}, "Input should be a valid dictionary", "dict_type")
	}
	return fields, nil
}

// marshal keeps '<', '>' and '&' as they are, so a key echoed in a 409
// detail reads exactly as the client sent it.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("saferetrytest: " + err.Error()) // only our own types reach here
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
