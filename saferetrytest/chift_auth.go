package saferetrytest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"time"
)

const transactionsPath = "/consumers/{consumer_id}/connections/{connection_id}/transactions"

// tokenHash is how the server remembers a token: a SHA-256, so that the
// token itself is kept nowhere a test could print it.
type tokenHash [sha256.Size]byte

// ScriptToken appends faults to the FIFO queue of POST /token; each token
// request consumes one, before its body is looked at. Faults that strike
// before processing (drop-before, 500, 502, 503, 429) issue no token;
// drop-after and reset-mid-body issue one and lose or cut the answer;
// slow-commit waits SlowDelay first.
func (s *ChiftServer) ScriptToken(faults ...Fault) {
	s.enqueue(&s.tokenScript, faults)
}

// ScriptLookup appends faults to the FIFO queue of the transactions endpoint;
// each lookup that passes authentication consumes one, before its query is
// looked at. Lookups consume no fault when the queue is empty (SetFaultFunc
// does not apply to them). The faults that make sense are those that strike
// before processing: FaultDropBeforeProcessing, FaultInternalError,
// FaultBadGateway, FaultUnavailable and FaultRateLimited. For a read,
// drop-after behaves like drop-before, reset-mid-body cuts the answer in
// half and slow-commit delays it by SlowDelay.
func (s *ChiftServer) ScriptLookup(faults ...Fault) {
	s.enqueue(&s.lookupScript, faults)
}

// SetLookupDelay makes the transaction log lag by d, on the Now clock: a
// lookup at time t sees each key as it stood at t-d. A key processed less
// than d ago is therefore unknown (404), or in process if its request
// started at least d ago. The default is 0.
func (s *ChiftServer) SetLookupDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookupDelay = d
}

// TokensIssued returns how many tokens POST /token has issued, counting
// those whose answer a fault lost.
func (s *ChiftServer) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

// ExpireTokens makes every token issued so far expired at once; tokens
// issued later are valid as usual.
func (s *ChiftServer) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for h := range s.tokens {
		s.tokens[h] = time.Time{}
	}
}

func (s *ChiftServer) now() time.Time { return nowOf(s.Now) }

// faulted records f on the request and applies it around answer, the same
// way on every endpoint: a fault that strikes before processing replaces the
// answer (key goes into a REQUEST_IN_PROCESS refusal), slow-commit delays it
// by SlowDelay, the others damage its sending.
func (s *ChiftServer) faulted(rec int, f Fault, key string, answer func() reply) reply {
	return s.fakeServer.faulted(rec, f, s.SlowDelay, func() reply { return s.refusal(f, key) }, answer)
}

// authed refuses a request without a valid token when RequireAuth is set.
// The refusal comes before anything else: no key is checked and no fault is
// consumed.
func (s *ChiftServer) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.RequireAuth && !s.validToken(r.Header.Get("Authorization")) {
			rec := s.logRequest(r, r.Header.Get(keyHeader))
			s.record(rec, jsonReply(http.StatusUnauthorized, invalidToken)).send(w)
			return
		}
		h(w, r)
	}
}

func (s *ChiftServer) validToken(authorization string) bool {
	scheme, token, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "bearer") || token == "" {
		return false
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	expiry, ok := s.tokens[sha256.Sum256([]byte(token))]
	return ok && now.Before(expiry)
}

var invalidToken = chiftError{
	Status:    "error",
	Message:   "Invalid or expired token",
	ErrorCode: "ERROR_CHIFT_AUTHENTICATION_ERROR",
}

var wrongCredentials = chiftError{
	Status:    "error",
	Message:   "The provided credentials are not correct",
	ErrorCode: "ERROR_CHIFT_AUTHENTICATION_ERROR",
}

// tokenOut is Chift's Token schema.
type tokenOut struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresOn   int64  `json:"expires_on"`
}

func (s *ChiftServer) token(w http.ResponseWriter, r *http.Request) {
	rec := s.logRequest(r, r.Header.Get(keyHeader))
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
	f := s.pop(&s.tokenScript)
	s.record(rec, s.faulted(rec, f, "", func() reply { return s.issueToken(body) })).send(w)
}

// issueToken checks the AuthItem body and the credentials, then issues a
// token valid until expires_on, which is whole seconds.
func (s *ChiftServer) issueToken(raw []byte) reply {
	fields, invalid := decodeObject(raw)
	if invalid != nil {
		return jsonReply(http.StatusUnprocessableEntity, invalid)
	}
	if issues := checkAuthItem(fields); len(issues) > 0 {
		return jsonReply(http.StatusUnprocessableEntity, validationError{
			Status: "error", Message: "Validation error", Detail: issues,
		})
	}
	if !s.credentialsMatch(fields) {
		return jsonReply(http.StatusUnauthorized, wrongCredentials)
	}
	token := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	expiry := time.Unix(s.now().Add(s.TokenLifetime).Unix(), 0)
	s.mu.Lock()
	s.tokens[sha256.Sum256([]byte(token))] = expiry
	s.tokensIssued++
	s.mu.Unlock()
	return jsonReply(http.StatusOK, tokenOut{
		AccessToken: token,
		TokenType:   "bearer",
		ExpiresIn:   int64(s.TokenLifetime / time.Second),
		ExpiresOn:   expiry.Unix(),
	})
}

// checkAuthItem validates the body against Chift's AuthItem schema: three
// required strings, accountId a UUID, and the optional envId (a string) and
// marketplaceId (a UUID), either of which may be null.
func checkAuthItem(fields map[string]any) []validationIssue {
	var issues []validationIssue
	check := func(name string, required, uuid bool) {
		v, present := fields[name]
		loc := []string{"body", name}
		switch str, isString := v.(string); {
		case !present && required:
			issues = append(issues, validationIssue{loc, "Field required", "missing"})
		case !present || (v == nil && !required):
		case !isString:
			issues = append(issues, validationIssue{loc, "Input should be a valid string", "string_type"})
		case uuid && normalUUID(str) == "":
			issues = append(issues, validationIssue{loc, "Input should be a valid UUID", "uuid_parsing"})
		}
	}
	check("clientId", true, false)
	check("clientSecret", true, false)
	check("accountId", true, true)
	check("envId", false, false)
	check("marketplaceId", false, true)
	return issues
}

// credentialsMatch compares in constant time; the account id is compared
// as a UUID, so case and hyphens do not matter.
func (s *ChiftServer) credentialsMatch(fields map[string]any) bool {
	id, _ := fields["clientId"].(string)
	secret, _ := fields["clientSecret"].(string)
	account, _ := fields["accountId"].(string)
	ok := subtle.ConstantTimeCompare([]byte(id), []byte(s.ClientID))
	ok &= subtle.ConstantTimeCompare([]byte(secret), []byte(s.ClientSecret))
	ok &= subtle.ConstantTimeCompare([]byte(normalUUID(account)), []byte(normalUUID(s.AccountID)))
	return ok == 1 && normalUUID(s.AccountID) != ""
}

// normalUUID returns the 32 lower-case hex digits of a UUID written with or
// without its four hyphens, or "" when s is not one.
func normalUUID(s string) string {
	if len(s) == 36 {
		for _, i := range []int{8, 13, 18, 23} {
			if s[i] != '-' {
				return ""
			}
		}
		s = strings.ReplaceAll(s, "-", "")
	}
	if len(s) != 32 {
		return ""
	}
	if _, err := hex.DecodeString(s); err != nil {
		return ""
	}
	return strings.ToLower(s)
}

// transactionOut is Chift's ApiTransactionLookupOut. StatusCode is null
// while the request is in process, CreatedEntityID when nothing was created.
type transactionOut struct {
	CreatedOn       string  `json:"created_on"`
	Method          string  `json:"method"`
	Route           string  `json:"route"`
	StatusCode      *int    `json:"status_code"`
	CreatedEntityID *string `json:"created_entity_id"`
}

// transactionNotFound is the 404 body, in the documents' field order.
var transactionNotFound = struct {
	Message string `json:"message"`
	Status  string `json:"status"`
}{"The specified transaction could not be found", "error"}

func (s *ChiftServer) transactions(w http.ResponseWriter, r *http.Request) {
	rec := s.logRequest(r, r.Header.Get(keyHeader))
	f := s.pop(&s.lookupScript)
	s.record(rec, s.faulted(rec, f, "", func() reply { return s.lookup(r) })).send(w)
}

func (s *ChiftServer) lookup(r *http.Request) reply {
	query := r.URL.Query()
	if !query.Has("client_request_id") {
		return jsonReply(http.StatusUnprocessableEntity,
			validation([]string{"query", "client_request_id"}, "Field required", "missing"))
	}
	cutoff := s.now()
	s.mu.Lock()
	state, ok := s.keys[query.Get("client_request_id")]
	cutoff = cutoff.Add(-s.lookupDelay)
	s.mu.Unlock()
	if !ok || state.consumer != r.PathValue("consumer_id") ||
		r.PathValue("connection_id") != s.ConnectionID || state.started.After(cutoff) {
		return jsonReply(http.StatusNotFound, transactionNotFound)
	}
	out := transactionOut{
		CreatedOn: state.started.UTC().Format(time.RFC3339),
		Method:    state.method,
		Route:     state.route,
	}
	if state.done && !state.processed.After(cutoff) {
		out.StatusCode = &state.status
		if state.entityID != "" {
			out.CreatedEntityID = &state.entityID
		}
	}
	return jsonReply(http.StatusOK, out)
}
