package saferetrytest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	zhRequestIDHeader   = "X-Request-Id"
	zhDuplicateMessage  = "Request does not contain an unique client_transfer_id"
	zhFirstTransferID   = 1152000
	zhUniqueWindow      = 72 * time.Hour
	zhMaxSkewSeconds    = 60
	zhDefaultPageSize   = 50
	zhMaxPageSize       = 100
	zhTimestampLayout   = "2006-01-02T15:04:05.000Z"
	zhListMonths        = 2 // GET /transfers: "Results are limited to the last 2 months."
	zhLabelPattern      = `^[A-Za-z0-9:_-]+$`
	zhStatusApproved    = "approved"
	zhGetBodyForSigning = "{}"
)

var (
	zhLabelRE   = regexp.MustCompile(zhLabelPattern)
	zhDecimalRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)
)

// ZeroHashServer is an in-process fake of zerohash's transfer endpoints that
// speaks real HTTP on loopback. Create it with NewZeroHashServer.
//
// Every request except GET /time must carry X-SCX-API-KEY, X-SCX-PASSPHRASE,
// X-SCX-TIMESTAMP (Unix seconds, at most 60 s from Now) and X-SCX-SIGNED,
// the base64 HMAC-SHA256, keyed with the base64-decoded Secret, of
// timestamp + method + request target (path and query exactly as sent) +
// body, where the body is the raw request body, or "{}" for GET and HEAD.
// A request that fails a check gets 403 {"error":true,"message":"..."} whose
// message names the check; the checks run in that order. An unknown route
// is authenticated first, then answered 404 {"error":"Not Found"}.
//
// Every response carries X-Request-Id: the request's X-REQUEST-ID (any
// case; empty counts as absent) or a fresh UUIDv4. Requests records every
// request with Key set to the X-REQUEST-ID the client sent ("" if none).
//
// POST /transfers is handled in this order:
//
//  1. authentication (403; no fault consumed);
//  2. body validation (400 {"errors":[...]}, one message per problem; no
//     fault consumed), then, with UpperCaseCodes, the codes upper-cased;
//  3. the transfer's client_transfer_id, if any, is locked, waiting for any
//     request holding it, and checked: if a transfer created within the last
//     72 h (by Now and its created_at) has it, the answer is 400 with
//     exactly {"error":true,"message":"Request does not contain an unique
//     client_transfer_id"}, and no fault is consumed. zerohash documents
//     the body but not the status; 400 is this fake's choice;
//  4. the fault is chosen: the next one queued by Script; when the queue is
//     empty, the func given to SetFaultFunc; without one, FaultNone;
//  5. drop-before, 500, 502, 503 and 429 are answered without creating
//     anything; slow commit waits SlowDelay with the id still locked, so a
//     concurrent POST with that id waits and then gets the duplicate answer
//     and a concurrent GET does not see the transfer yet; otherwise (and
//     then) the transfer is created and the id unlocked;
//  6. the 201 {"message": transfer} is sent, or damaged as drop-after and
//     reset-mid-body say; the transfer exists either way.
//
// The faults answer like this: 500 and 502 with a proxy's HTML page; 503
// with {"error":"Service Unavailable"} and "zh-allow-retry: true"; 429 with
// the text "Too Many Requests" (and Retry-After only if RetryAfterSeconds
// is positive, as zerohash documents none).
//
// GET /transfers and GET /transfers/{id} are authenticated, their query is
// validated (400 {"errors":[...]}), then a fault queued by ScriptLookup, if
// any, applies: drop-before, 500, 502, 503 and 429 as for POST; slow commit
// delays the answer by SlowDelay; drop-after and reset-mid-body damage it.
// SetFaultFunc never applies to lookups.
//
// GET /transfers filters by exact match on client_transfer_id,
// from/to_participant_code, from/to_account_group, from/to_account_label
// and currency (the asset); an empty filter value is a 400. page defaults
// to 1 and page_size to 50 (1..100). Results are newest first (created_at,
// then id), limited to transfers created in the last 2 months (by Now); no
// match is 200 with "message": [], "count": 0 and "total_pages": 0. A page
// past the end is 200 with an empty array.
//
// Visibility (SetVisibilityDelay) is measured on the real clock, not Now,
// because it models replication lag; it applies to GET /transfers and
// GET /transfers/{id} alike, which answers 404 until then.
//
// A client_transfer_id that is null or "" counts as absent: the transfer
// shows null and is never a duplicate.
type ZeroHashServer struct {
	// URL is the base URL, such as http://127.0.0.1:PORT.
	URL string
	// APIKey and Passphrase are the credentials the server accepts.
	APIKey, Passphrase string
	// Secret is the base64 HMAC key the server verifies signatures with.
	Secret string
	// SlowDelay is how long FaultSlowCommit holds a client_transfer_id (or
	// delays a lookup), unless ReleaseSlowCommits ends the wait first. Set
	// it before sending requests; the default is 300ms.
	SlowDelay time.Duration
	// RetryAfterSeconds is the Retry-After value FaultRateLimited sends;
	// 0, the default, sends no Retry-After header (zerohash documents none).
	RetryAfterSeconds int
	// UpperCaseCodes makes the server store the participant codes, the
	// account groups and the asset of a new transfer in upper case, so its
	// 201 and its lookups show "USD" for a request that sent "usd": a
	// server that normalises what it receives. zerohash documents no such
	// normalisation (its examples show upper case only); this is for tests
	// of a client that must not second-guess the answer to its own POST.
	// Filters of GET /transfers still match exactly. Set it before sending
	// requests; the default, false, stores the fields as sent.
	UpperCaseCodes bool
	// Now is the server clock, used for timestamps, the 60 s signature window,
	// the 72 h uniqueness window and the 2-month list window. Set it before
	// sending requests; tests may make it return any time. The default is
	// time.Now.
	Now func() time.Time

	fakeServer // its mu guards the fields below

	transfers  []*zhTransfer // in creation order
	byID       map[int64]*zhTransfer
	byCID      map[string][]*zhTransfer // index for the duplicate check and the lookup
	idLocks    map[string]*zhIDLock
	visibility time.Duration
}

// zhTransfer is a created transfer; created and updated are on the server
// clock, visibleAt on the real clock.
type zhTransfer struct {
	id               int64
	body             zhTransferBody
	created, updated time.Time
	visibleAt        time.Time
}

// zhTransferBody is a validated PostTransferBody.
type zhTransferBody struct {
	fromParticipant, fromGroup string
	fromLabel                  *string
	toParticipant, toGroup     string
	toLabel                    *string
	asset, amount              string
	clientTransferID           string // "" when absent
	prefunded                  bool
}

// zhTransferEntity is TransferEntity, in the order of the OpenAPI schema.
type zhTransferEntity struct {
	ID                  int64   `json:"id"`
	CreatedAt           string  `json:"created_at"`
	UpdatedAt           string  `json:"updated_at"`
	Status              string  `json:"status"`
	FromParticipantCode string  `json:"from_participant_code"`
	FromAccountGroup    string  `json:"from_account_group"`
	FromAccountLabel    *string `json:"from_account_label"`
	ToParticipantCode   string  `json:"to_participant_code"`
	ToAccountGroup      string  `json:"to_account_group"`
	ToAccountLabel      *string `json:"to_account_label"`
	Asset               string  `json:"asset"`
	Amount              string  `json:"amount"`
	MovementID          *string `json:"movement_id"`
	ClientTransferID    *string `json:"client_transfer_id"`
	AdminTransfer       bool    `json:"admin_transfer"`
	ParentLinkID        *string `json:"parent_link_id"`
	ParentLinkIDSource  *string `json:"parent_link_id_source"`
	Prefunded           bool    `json:"prefunded"`
}

type zhMessage struct {
	Message any `json:"message"`
}

type zhPage struct {
	Message    []zhTransferEntity `json:"message"`
	Page       int64              `json:"page"`
	PageSize   int64              `json:"page_size"`
	TotalPages int64              `json:"total_pages"`
	Count      int64              `json:"count"`
}

// zhForbidden is Code403 (and the duplicate client_transfer_id body).
type zhForbidden struct {
	Error   bool   `json:"error"`
	Message string `json:"message"`
}

// zhStringError is Code404, Code500 and Code503, whose error is a string.
type zhStringError struct {
	Error string `json:"error"`
}

// zhErrors is Code400.
type zhErrors struct {
	Errors []string `json:"errors"`
}

// zhIDLock serialises the requests carrying one client_transfer_id.
type zhIDLock struct {
	ch   chan struct{} // holds a token while locked
	refs int
}

// zhCall is what the common wrapper hands each handler.
type zhCall struct {
	rec  int
	body []byte
}

// NewZeroHashServer starts a server listening on loopback with random
// credentials. The caller must Close it.
func NewZeroHashServer() *ZeroHashServer {
	s := &ZeroHashServer{
		APIKey:     randomHex(16),
		Passphrase: randomHex(12),
		Secret:     base64.StdEncoding.EncodeToString(randomBytes(32)),
		SlowDelay:  300 * time.Millisecond,
		Now:        time.Now,
		byID:       map[int64]*zhTransfer{},
		byCID:      map[string][]*zhTransfer{},
		idLocks:    map[string]*zhIDLock{},
	}
	s.URL = s.start(s.routes())
	return s
}

// Script appends faults to the FIFO queue consumed by POST /transfers
// requests that pass authentication, validation and the duplicate check.
func (s *ZeroHashServer) Script(faults ...Fault) {
	s.enqueue(&s.script, faults)
}

// ScriptLookup appends faults to a separate FIFO queue consumed by
// authenticated, valid GET /transfers and GET /transfers/{id} requests.
func (s *ZeroHashServer) ScriptLookup(faults ...Fault) {
	s.enqueue(&s.lookupScript, faults)
}

// SetFaultFunc sets what decides the fault of a POST /transfers once the
// Script queue is empty; nil means FaultNone. attempt is n for the nth
// authenticated, valid POST carrying clientTransferID (also counting those
// answered as duplicates or scripted), and 1 when it has none. f runs
// without the server's lock held, so it may call the server's methods.
func (s *ZeroHashServer) SetFaultFunc(f func(clientTransferID string, attempt int) Fault) {
	s.setFaultFunc(f)
}

// Created returns the number of transfers created in total.
func (s *ZeroHashServer) Created() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.transfers)
}

// CreatedWithClientTransferID returns how many transfers were created with
// client_transfer_id id; "" counts those without one.
func (s *ZeroHashServer) CreatedWithClientTransferID(id string) int {
	return s.createdWith(id)
}

// Requests returns every request received, in arrival order. Key is the
// X-REQUEST-ID header the client sent, "" when absent.
func (s *ZeroHashServer) Requests() []RequestRecord {
	return s.requestLog()
}

// SetVisibilityDelay makes transfers created from now on appear in GET
// /transfers and GET /transfers/{id} only d (real time) after creation.
func (s *ZeroHashServer) SetVisibilityDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.visibility = d
}

// AgeTransfer moves created_at and updated_at of every transfer with
// client_transfer_id clientTransferID back by the given duration.
func (s *ZeroHashServer) AgeTransfer(clientTransferID string, by time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.transfers {
		if t.body.clientTransferID == clientTransferID {
			t.created = t.created.Add(-by)
			t.updated = t.updated.Add(-by)
		}
	}
}

func (s *ZeroHashServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /time", s.handle(false, s.serveTime))
	mux.HandleFunc("POST /transfers", s.handle(true, s.createTransfer))
	mux.HandleFunc("GET /transfers", s.handle(true, s.listTransfers))
	mux.HandleFunc("GET /transfers/{id}", s.handle(true, s.getTransfer))
	mux.HandleFunc("/", s.handle(true, func(*zhCall, *http.Request) reply { return zhNotFound() }))
	return mux
}

// handle records the request, checks authentication, runs h, and sends its
// reply with the request id.
func (s *ZeroHashServer) handle(auth bool, h func(*zhCall, *http.Request) reply) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sent := r.Header.Get(zhRequestIDHeader)
		requestID := sent
		if requestID == "" {
			requestID = newUUID()
		}
		rec := s.logRequest(r, sent)
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes)) // a cut body fails the signature
		failed := ""
		if auth {
			failed = s.authenticate(r, body)
		}
		var rep reply
		if failed != "" {
			rep = jsonReply(http.StatusForbidden, zhForbidden{Error: true, Message: failed})
		} else {
			rep = h(&zhCall{rec: rec, body: body}, r)
		}
		if rep.header == nil {
			rep.header = http.Header{}
		}
		rep.header.Set(zhRequestIDHeader, requestID)
		s.record(rec, rep).send(w)
	}
}

// authenticate returns "" for a correctly signed request, or the 403
// message naming the check that failed.
func (s *ZeroHashServer) authenticate(r *http.Request, body []byte) string {
	key := r.Header.Get("X-SCX-API-KEY")
	pass := r.Header.Get("X-SCX-PASSPHRASE")
	ts := r.Header.Get("X-SCX-TIMESTAMP")
	sig := r.Header.Get("X-SCX-SIGNED")
	switch {
	case key == "":
		return "Missing X-SCX-API-KEY header"
	case !zhEqual(key, s.APIKey):
		return "Invalid X-SCX-API-KEY: unknown api key"
	case pass == "":
		return "Missing X-SCX-PASSPHRASE header"
	case !zhEqual(pass, s.Passphrase):
		return "Invalid X-SCX-PASSPHRASE for this api key"
	case ts == "":
		return "Missing X-SCX-TIMESTAMP header"
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "Invalid X-SCX-TIMESTAMP: not a Unix timestamp in seconds"
	}
	if now := s.now().Unix(); sec < now-zhMaxSkewSeconds || sec > now+zhMaxSkewSeconds {
		return "Invalid X-SCX-TIMESTAMP: more than 60 seconds away from server time"
	}
	if sig == "" {
		return "Missing X-SCX-SIGNED header"
	}
	secret, err := base64.StdEncoding.DecodeString(s.Secret)
	if err != nil {
		return "Invalid X-SCX-SIGNED: server secret is not base64"
	}
	signed := body
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		signed = []byte(zhGetBodyForSigning)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + r.Method + r.RequestURI))
	mac.Write(signed)
	if !zhEqual(sig, base64.StdEncoding.EncodeToString(mac.Sum(nil))) {
		return "Invalid X-SCX-SIGNED: signature does not match the request"
	}
	return ""
}

func zhEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (s *ZeroHashServer) now() time.Time { return nowOf(s.Now) }

func (s *ZeroHashServer) serveTime(*zhCall, *http.Request) reply {
	return jsonReply(http.StatusOK, struct {
		Epoch int64 `json:"epoch"`
	}{s.now().Unix()})
}

// createTransfer runs the steps listed in the type's doc, in that order.
func (s *ZeroHashServer) createTransfer(c *zhCall, r *http.Request) reply {
	in, problems := zhParseTransfer(c.body)
	if len(problems) > 0 {
		return jsonReply(http.StatusBadRequest, zhErrors{Errors: problems})
	}
	if s.UpperCaseCodes {
		in.upperCaseCodes()
	}
	cid := in.clientTransferID
	s.mu.Lock()
	attempt := s.countAttempt(cid)
	s.mu.Unlock()
	if cid != "" {
		unlock, ok := s.lockID(r.Context(), cid)
		if !ok { // the client left or the server is closing
			return reply{fault: FaultDropBeforeProcessing}
		}
		defer unlock()
		if s.isDuplicate(cid) {
			return jsonReply(http.StatusBadRequest, zhForbidden{Error: true, Message: zhDuplicateMessage})
		}
	}
	return s.faulted(c.rec, s.nextFault(false, cid, attempt), func() reply {
		return jsonReply(http.StatusCreated, zhMessage{Message: s.create(in)})
	})
}

// lockID takes the lock on one client_transfer_id, waiting for its holder
// unless ctx ends or the server closes first.
func (s *ZeroHashServer) lockID(ctx context.Context, cid string) (unlock func(), ok bool) {
	s.mu.Lock()
	l := s.idLocks[cid]
	if l == nil {
		l = &zhIDLock{ch: make(chan struct{}, 1)}
		s.idLocks[cid] = l
	}
	l.refs++
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if l.refs--; l.refs == 0 {
			delete(s.idLocks, cid)
		}
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; forget() }, true
	case <-ctx.Done():
	case <-s.closed:
	}
	forget()
	return nil, false
}

func (s *ZeroHashServer) isDuplicate(cid string) bool {
	cutoff := s.now().Add(-zhUniqueWindow)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.byCID[cid] {
		if t.created.After(cutoff) {
			return true
		}
	}
	return false
}

// nextFault pops the next fault of the create or lookup queue; when that is
// empty, a create asks the fault func, outside the lock.
func (s *ZeroHashServer) nextFault(lookup bool, cid string, attempt int) Fault {
	var f Fault
	if lookup {
		f = s.pop(&s.lookupScript)
	} else {
		f = s.createFault(cid, attempt)
	}
	if f == FaultInProcess {
		return FaultNone // a Chift answer that zerohash has no counterpart for
	}
	return f
}

// faulted records f on the request and applies it around answer: a fault
// that strikes before processing replaces the answer, slow-commit delays it
// by SlowDelay, the others damage its sending.
func (s *ZeroHashServer) faulted(rec int, f Fault, answer func() reply) reply {
	return s.fakeServer.faulted(rec, f, s.SlowDelay, func() reply { return s.refusal(f) }, answer)
}

// refusal is the reply to a fault that strikes before processing.
func (s *ZeroHashServer) refusal(f Fault) reply {
	switch f {
	case FaultDropBeforeProcessing:
		return reply{fault: f}
	case FaultUnavailable:
		r := jsonReply(http.StatusServiceUnavailable, zhStringError{Error: "Service Unavailable"})
		r.header.Set("zh-allow-retry", "true")
		return r
	case FaultRateLimited:
		r := reply{
			status: http.StatusTooManyRequests,
			header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
			body:   []byte("Too Many Requests"),
		}
		if s.RetryAfterSeconds > 0 {
			r.header.Set("Retry-After", strconv.Itoa(s.RetryAfterSeconds))
		}
		return r
	}
	return proxyPage(proxyStatus[f])
}

func (s *ZeroHashServer) create(in zhTransferBody) zhTransferEntity {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &zhTransfer{
		id:        zhFirstTransferID + int64(len(s.transfers)),
		body:      in,
		created:   now,
		updated:   now,
		visibleAt: time.Now().Add(s.visibility),
	}
	s.transfers = append(s.transfers, t)
	s.byID[t.id] = t
	s.createdBy[in.clientTransferID]++
	if in.clientTransferID != "" {
		s.byCID[in.clientTransferID] = append(s.byCID[in.clientTransferID], t)
	}
	return t.entity()
}

// upperCaseCodes is what UpperCaseCodes does to a new transfer.
func (b *zhTransferBody) upperCaseCodes() {
	for _, f := range []*string{&b.fromParticipant, &b.fromGroup, &b.toParticipant, &b.toGroup, &b.asset} {
		*f = strings.ToUpper(*f)
	}
}

func (t *zhTransfer) entity() zhTransferEntity {
	e := zhTransferEntity{
		ID:                  t.id,
		CreatedAt:           t.created.UTC().Format(zhTimestampLayout),
		UpdatedAt:           t.updated.UTC().Format(zhTimestampLayout),
		Status:              zhStatusApproved,
		FromParticipantCode: t.body.fromParticipant,
		FromAccountGroup:    t.body.fromGroup,
		FromAccountLabel:    t.body.fromLabel,
		ToParticipantCode:   t.body.toParticipant,
		ToAccountGroup:      t.body.toGroup,
		ToAccountLabel:      t.body.toLabel,
		Asset:               t.body.asset,
		Amount:              t.body.amount,
		Prefunded:           t.body.prefunded,
	}
	if cid := t.body.clientTransferID; cid != "" {
		e.ClientTransferID = &cid
	}
	return e
}

func (t *zhTransfer) visible() bool {
	return !time.Now().Before(t.visibleAt)
}

// zhListFilters maps each GET /transfers filter to the field it matches.
var zhListFilters = []struct {
	name  string
	field func(*zhTransferBody) *string
}{
	{"client_transfer_id", func(b *zhTransferBody) *string { return zhNonEmpty(b.clientTransferID) }},
	{"from_participant_code", func(b *zhTransferBody) *string { return &b.fromParticipant }},
	{"to_participant_code", func(b *zhTransferBody) *string { return &b.toParticipant }},
	{"from_account_group", func(b *zhTransferBody) *string { return &b.fromGroup }},
	{"to_account_group", func(b *zhTransferBody) *string { return &b.toGroup }},
	{"from_account_label", func(b *zhTransferBody) *string { return b.fromLabel }},
	{"to_account_label", func(b *zhTransferBody) *string { return b.toLabel }},
	{"currency", func(b *zhTransferBody) *string { return &b.asset }},
}

func zhNonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type zhQuery struct {
	filters        map[string]string
	page, pageSize int64
}

func zhParseQuery(r *http.Request) (zhQuery, []string) {
	values := r.URL.Query()
	q := zhQuery{filters: map[string]string{}, page: 1, pageSize: zhDefaultPageSize}
	var problems []string
	for _, f := range zhListFilters {
		if !values.Has(f.name) {
			continue
		}
		if v := values.Get(f.name); v != "" {
			q.filters[f.name] = v
		} else {
			problems = append(problems, "query/"+f.name+" must NOT have fewer than 1 characters")
		}
	}
	problems = zhIntParam(values.Has("page"), values.Get("page"), "page", 0, &q.page, problems)
	problems = zhIntParam(values.Has("page_size"), values.Get("page_size"), "page_size", zhMaxPageSize, &q.pageSize, problems)
	return q, problems
}

// zhIntParam parses a positive integer query parameter no larger than max
// (0: no maximum) into dst, or adds the problem.
func zhIntParam(present bool, raw, name string, limit int64, dst *int64, problems []string) []string {
	if !present {
		return problems
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	switch {
	case err != nil:
		return append(problems, "query/"+name+" must be integer")
	case n < 1:
		return append(problems, "query/"+name+" must be >= 1")
	case limit > 0 && n > limit:
		return append(problems, fmt.Sprintf("query/%s must be <= %d", name, limit))
	}
	*dst = n
	return problems
}

// lookupFaulted applies the next ScriptLookup fault around answer.
func (s *ZeroHashServer) lookupFaulted(c *zhCall, answer func() reply) reply {
	return s.faulted(c.rec, s.nextFault(true, "", 0), answer)
}

func (s *ZeroHashServer) listTransfers(c *zhCall, r *http.Request) reply {
	q, problems := zhParseQuery(r)
	if len(problems) > 0 {
		return jsonReply(http.StatusBadRequest, zhErrors{Errors: problems})
	}
	return s.lookupFaulted(c, func() reply { return jsonReply(http.StatusOK, s.page(q)) })
}

func (s *ZeroHashServer) page(q zhQuery) zhPage {
	oldest := s.now().AddDate(0, -zhListMonths, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	candidates := s.transfers
	if cid, ok := q.filters["client_transfer_id"]; ok {
		candidates = s.byCID[cid] // most lookups: no scan of every transfer
	}
	var match []*zhTransfer
	for _, t := range candidates {
		if t.visible() && !t.created.Before(oldest) && zhMatches(t, q.filters) {
			match = append(match, t)
		}
	}
	sort.SliceStable(match, func(i, j int) bool {
		if !match[i].created.Equal(match[j].created) {
			return match[i].created.After(match[j].created)
		}
		return match[i].id > match[j].id
	})
	count := int64(len(match))
	p := zhPage{
		Message:    []zhTransferEntity{},
		Page:       q.page,
		PageSize:   q.pageSize,
		TotalPages: (count + q.pageSize - 1) / q.pageSize,
		Count:      count,
	}
	if q.page <= p.TotalPages {
		start := (q.page - 1) * q.pageSize
		for _, t := range match[start:min(start+q.pageSize, count)] {
			p.Message = append(p.Message, t.entity())
		}
	}
	return p
}

func zhMatches(t *zhTransfer, filters map[string]string) bool {
	for _, f := range zhListFilters {
		want, ok := filters[f.name]
		if !ok {
			continue
		}
		if got := f.field(&t.body); got == nil || *got != want {
			return false
		}
	}
	return true
}

func (s *ZeroHashServer) getTransfer(c *zhCall, r *http.Request) reply {
	return s.lookupFaulted(c, func() reply {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		s.mu.Lock()
		t, found := s.byID[id]
		var e zhTransferEntity
		if found = found && err == nil && t.visible(); found {
			e = t.entity()
		}
		s.mu.Unlock()
		if !found {
			return zhNotFound()
		}
		return jsonReply(http.StatusOK, zhMessage{Message: e})
	})
}

func zhNotFound() reply {
	return jsonReply(http.StatusNotFound, zhStringError{Error: "Not Found"})
}

// zhParseTransfer validates a PostTransferBody (additionalProperties false).
func zhParseTransfer(raw []byte) (zhTransferBody, []string) {
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return zhTransferBody{}, []string{"body must be object"}
	}
	var (
		in       zhTransferBody
		problems []string
	)
	required := func(name string, dst *string) {
		v, ok := fields[name]
		s, isString := v.(string)
		switch {
		case !ok:
			problems = append(problems, "body/"+name+" is required")
		case !isString:
			problems = append(problems, "body/"+name+" must be string")
		case s == "":
			problems = append(problems, "body/"+name+" must NOT have fewer than 1 characters")
		default:
			*dst = s
		}
	}
	optional := func(name string) (string, bool) {
		v := fields[name]
		s, isString := v.(string)
		if v != nil && !isString {
			problems = append(problems, "body/"+name+" must be string")
		}
		return s, isString
	}
	label := func(name string, dst **string) {
		if s, ok := optional(name); ok {
			if !zhLabelRE.MatchString(s) {
				problems = append(problems, "body/"+name+` must match pattern "`+zhLabelPattern+`"`)
			}
			*dst = &s
		}
	}

	required("from_participant_code", &in.fromParticipant)
	required("from_account_group", &in.fromGroup)
	label("from_account_label", &in.fromLabel)
	required("to_participant_code", &in.toParticipant)
	required("to_account_group", &in.toGroup)
	label("to_account_label", &in.toLabel)
	required("asset", &in.asset)
	required("amount", &in.amount)
	if in.amount != "" {
		if problem := zhCheckAmount(in.amount); problem != "" {
			problems = append(problems, problem)
		}
	}
	in.clientTransferID, _ = optional("client_transfer_id")
	switch v := fields["prefunded"].(type) {
	case nil:
	case bool:
		in.prefunded = v
	default:
		problems = append(problems, "body/prefunded must be boolean")
	}

	var unknown []string
	for name := range fields {
		if !slices.Contains(zhBodyFields, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		problems = append(problems, "body/"+name+" is not allowed")
	}
	return in, problems
}

var zhBodyFields = []string{
	"from_participant_code", "from_account_group", "from_account_label",
	"to_participant_code", "to_account_group", "to_account_label",
	"asset", "amount", "client_transfer_id", "prefunded",
}

// zhCheckAmount requires a decimal string greater than zero.
func zhCheckAmount(amount string) string {
	if !zhDecimalRE.MatchString(amount) {
		return "body/amount must be a decimal string"
	}
	if amount[0] == '-' || !zhHasNonZeroDigit(amount) {
		return "body/amount must be > 0"
	}
	return ""
}

func zhHasNonZeroDigit(s string) bool {
	for _, c := range s {
		if c >= '1' && c <= '9' {
			return true
		}
	}
	return false
}
