package saferetrytest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

const (
	authCode       = "ERROR_CHIFT_AUTHENTICATION_ERROR"
	invalidTokenJS = `{"status":"error","message":"Invalid or expired token","error_code":"ERROR_CHIFT_AUTHENTICATION_ERROR"}`
	notFoundJS     = `{"message":"The specified transaction could not be found","status":"error"}`
)

// useClock gives s a clock stopped at a time outside UTC, so that a date
// the server forgets to convert shows.
func useClock(s *saferetrytest.ChiftServer) *testClock {
	c := &testClock{now: time.Date(2026, 3, 1, 13, 4, 5, 0, time.FixedZone("CET", 3600))}
	s.Now = c.Now
	return c
}

func credentials(s *saferetrytest.ChiftServer) map[string]any {
	return map[string]any{"clientId": s.ClientID, "clientSecret": s.ClientSecret, "accountId": s.AccountID}
}

func postToken(t *testing.T, c *http.Client, s *saferetrytest.ChiftServer, body map[string]any) outcome {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return send(t, c, http.MethodPost, s.URL+"/token", http.Header{"Content-Type": {"application/json"}}, string(raw))
}

type tokenBody struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresOn   int64  `json:"expires_on"`
}

func getToken(t *testing.T, c *http.Client, s *saferetrytest.ChiftServer) tokenBody {
	t.Helper()
	o := postToken(t, c, s, credentials(s))
	wantStatus(t, o, http.StatusOK)
	var tok tokenBody
	if err := json.Unmarshal(o.body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token body %s: %v", o.body, err)
	}
	return tok
}

func bearer(scheme, token string) http.Header {
	return http.Header{"Authorization": {scheme + " " + token}}
}

func lookupURL(s *saferetrytest.ChiftServer, consumer, connection, key string) string {
	return s.URL + "/consumers/" + consumer + "/connections/" + connection +
		"/transactions?client_request_id=" + url.QueryEscape(key)
}

func lookup(t *testing.T, c *http.Client, s *saferetrytest.ChiftServer, key string) outcome {
	t.Helper()
	return send(t, c, http.MethodGet, lookupURL(s, "c1", s.ConnectionID, key), nil, "")
}

// transaction decodes a 200 lookup keeping nulls apart from zero values.
type transaction struct {
	CreatedOn       string  `json:"created_on"`
	Method          string  `json:"method"`
	Route           string  `json:"route"`
	StatusCode      *int    `json:"status_code"`
	CreatedEntityID *string `json:"created_entity_id"`
}

func wantTransaction(t *testing.T, o outcome, status int, entity string) transaction {
	t.Helper()
	wantStatus(t, o, http.StatusOK)
	for _, field := range []string{"created_on", "method", "route", "status_code", "created_entity_id"} {
		if _, ok := decode(t, o.body)[field]; !ok {
			t.Errorf("lookup body %s lacks %q", o.body, field)
		}
	}
	var tx transaction
	if err := json.Unmarshal(o.body, &tx); err != nil {
		t.Fatalf("lookup body %s: %v", o.body, err)
	}
	gotStatus, gotEntity := 0, ""
	if tx.StatusCode != nil {
		gotStatus = *tx.StatusCode
	}
	if tx.CreatedEntityID != nil {
		gotEntity = *tx.CreatedEntityID
	}
	if gotStatus != status || gotEntity != entity {
		t.Errorf("lookup body %s: want status_code %d and created_entity_id %q (0 and \"\" meaning null)",
			o.body, status, entity)
	}
	return tx
}

func TestChiftDefaultsAreRandom(t *testing.T) {
	a, b := newServer(t), newServer(t)
	for _, s := range []*saferetrytest.ChiftServer{a, b} {
		for _, id := range []string{s.AccountID, s.ConnectionID} {
			if len(id) != 36 || id[14] != '4' || !strings.ContainsAny(id[19:20], "89ab") {
				t.Errorf("%q is not a version 4 UUID", id)
			}
		}
		if s.ClientID == "" || s.ClientSecret == "" || s.TokenLifetime != 30*time.Minute || s.RequireAuth {
			t.Errorf("defaults: %q %q %v %v", s.ClientID, s.ClientSecret, s.TokenLifetime, s.RequireAuth)
		}
	}
	if a.ClientID == b.ClientID || a.ClientSecret == b.ClientSecret || a.AccountID == b.AccountID ||
		a.ConnectionID == b.ConnectionID {
		t.Error("two servers share credentials or connection id")
	}
}

func TestTokenIssued(t *testing.T) {
	s := newServer(t)
	clock := useClock(s)
	c := rawClient(t)
	o := postToken(t, c, s, credentials(s))
	wantStatus(t, o, http.StatusOK)
	if ct := o.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if keys := decode(t, o.body); len(keys) != 4 {
		t.Errorf("token body %s: want exactly the four Token fields", o.body)
	}
	var tok tokenBody
	if err := json.Unmarshal(o.body, &tok); err != nil {
		t.Fatal(err)
	}
	wantOn := clock.Now().Add(30 * time.Minute).Unix()
	if tok.AccessToken == "" || tok.TokenType != "bearer" || tok.ExpiresIn != 1800 || tok.ExpiresOn != wantOn {
		t.Errorf("token %+v; want bearer, expires_in 1800, expires_on %d", tok, wantOn)
	}

	// envId and marketplaceId are optional and may be null; the account id
	// is a UUID, so its case does not matter.
	body := credentials(s)
	body["accountId"] = strings.ToUpper(s.AccountID)
	body["envId"] = "env-1"
	body["marketplaceId"] = "00000000-0000-4000-8000-000000000000"
	second := postToken(t, c, s, body)
	wantStatus(t, second, http.StatusOK)
	body["envId"], body["marketplaceId"] = nil, nil
	wantStatus(t, postToken(t, c, s, body), http.StatusOK)
	if decode(t, second.body)["access_token"] == tok.AccessToken {
		t.Error("two tokens are equal")
	}
	if n := s.TokensIssued(); n != 3 {
		t.Errorf("TokensIssued() = %d, want 3", n)
	}
}

func TestTokenLifetimeFollowsSetting(t *testing.T) {
	s := newServer(t)
	clock := useClock(s)
	s.TokenLifetime = 90 * time.Second
	tok := getToken(t, rawClient(t), s)
	if tok.ExpiresIn != 90 || tok.ExpiresOn != clock.Now().Unix()+90 {
		t.Errorf("token %+v, want a 90 s lifetime", tok)
	}
}

func TestTokenWrongCredentials(t *testing.T) {
	for _, field := range []string{"clientId", "clientSecret", "accountId"} {
		t.Run(field, func(t *testing.T) {
			s := newServer(t)
			body := credentials(s)
			body[field] = "00000000-0000-4000-8000-000000000000" // a valid UUID, not the account's
			o := postToken(t, rawClient(t), s, body)
			wantStatus(t, o, http.StatusUnauthorized)
			got := decode(t, o.body)
			if got["status"] != "error" || got["error_code"] != authCode || got["message"] == "" || len(got) != 3 {
				t.Errorf("body %s, want status, message and error_code %s", o.body, authCode)
			}
			if s.TokensIssued() != 0 {
				t.Errorf("TokensIssued() = %d, want 0", s.TokensIssued())
			}
		})
	}
}

func TestTokenMalformedBody(t *testing.T) {
	tests := []struct {
		name     string
		body     func(s *saferetrytest.ChiftServer) string
		wantLoc  string
		wantType string
	}{
		{"not JSON", func(*saferetrytest.ChiftServer) string { return `{"clientId":` }, "body", "json_invalid"},
		{"array", func(*saferetrytest.ChiftServer) string { return `[]` }, "body", "dict_type"},
		{"form encoded", func(s *saferetrytest.ChiftServer) string {
			return "grant_type=client_credentials&client_id=" + s.ClientID
		}, "body", "json_invalid"},
		{"no clientId", without("clientId"), "body.clientId", "missing"},
		{"no clientSecret", without("clientSecret"), "body.clientSecret", "missing"},
		{"no accountId", without("accountId"), "body.accountId", "missing"},
		{"clientId a number", with("clientId", 7), "body.clientId", "string_type"},
		{"clientSecret null", with("clientSecret", nil), "body.clientSecret", "string_type"},
		{"accountId not a UUID", with("accountId", "acct-1"), "body.accountId", "uuid_parsing"},
		{"marketplaceId not a UUID", with("marketplaceId", "mp"), "body.marketplaceId", "uuid_parsing"},
		{"envId a number", with("envId", 3), "body.envId", "string_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			o := send(t, rawClient(t), http.MethodPost, s.URL+"/token", nil, tt.body(s))
			wantStatus(t, o, http.StatusUnprocessableEntity)
			var got struct {
				Status, Message string
				Detail          []struct {
					Loc  []string
					Type string
				}
			}
			if err := json.Unmarshal(o.body, &got); err != nil || len(got.Detail) != 1 {
				t.Fatalf("body %s: %v", o.body, err)
			}
			loc := strings.Join(got.Detail[0].Loc, ".")
			if got.Status != "error" || got.Message != "Validation error" || loc != tt.wantLoc || got.Detail[0].Type != tt.wantType {
				t.Errorf("body %s, want loc %s and type %s", o.body, tt.wantLoc, tt.wantType)
			}
			if s.TokensIssued() != 0 {
				t.Errorf("TokensIssued() = %d, want 0", s.TokensIssued())
			}
		})
	}
}

func with(field string, v any) func(*saferetrytest.ChiftServer) string {
	return func(s *saferetrytest.ChiftServer) string {
		body := credentials(s)
		body[field] = v
		raw, _ := json.Marshal(body)
		return string(raw)
	}
}

func without(field string) func(*saferetrytest.ChiftServer) string {
	return func(s *saferetrytest.ChiftServer) string {
		body := credentials(s)
		delete(body, field)
		raw, _ := json.Marshal(body)
		return string(raw)
	}
}

func TestAuthNotRequiredByDefault(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	o := send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", "not-a-token"), invoiceBody)
	wantStatus(t, o, http.StatusOK)
	wantStatus(t, lookup(t, c, s, "none"), http.StatusNotFound)
}

func TestRequireAuth(t *testing.T) {
	s := newServer(t)
	s.RequireAuth = true
	c := rawClient(t)
	target := s.URL + invoicingPath
	keyed := func(h http.Header) http.Header {
		h.Set("X-Chift-Client-RequestId", "k1")
		return h
	}

	s.Script(saferetrytest.FaultBadGateway)
	wantBody(t, send(t, c, http.MethodPost, target, keyed(http.Header{}), invoiceBody), http.StatusUnauthorized, invalidTokenJS)
	wantBody(t, send(t, c, http.MethodPost, target, keyed(bearer("Bearer", "forged")), invoiceBody), http.StatusUnauthorized, invalidTokenJS)
	tok := getToken(t, c, s).AccessToken // POST /token needs no token
	wantBody(t, send(t, c, http.MethodPost, target, keyed(bearer("Basic", tok)), invoiceBody), http.StatusUnauthorized, invalidTokenJS)
	wantBody(t, send(t, c, http.MethodPost, target, keyed(http.Header{"Authorization": {tok}}), invoiceBody), http.StatusUnauthorized, invalidTokenJS)
	if s.Created() != 0 {
		t.Fatalf("Created() = %d after refused requests", s.Created())
	}

	// The refusals consumed neither the scripted fault nor the key.
	wantStatus(t, send(t, c, http.MethodPost, target, keyed(bearer("Bearer", tok)), invoiceBody), http.StatusBadGateway)
	wantStatus(t, send(t, c, http.MethodPost, target, keyed(bearer("BEARER", tok)), invoiceBody), http.StatusOK)
	wantStatus(t, send(t, c, http.MethodPost, target, bearer("bearer", tok), invoiceBody), http.StatusOK)

	// Every other route is behind the token too.
	wantBody(t, lookup(t, c, s, "k1"), http.StatusUnauthorized, invalidTokenJS)
	wantBody(t, send(t, c, http.MethodGet, s.URL+"/", nil, ""), http.StatusUnauthorized, invalidTokenJS)
	wantStatus(t, send(t, c, http.MethodGet, lookupURL(s, "c1", s.ConnectionID, "k1"), bearer("BEARER", tok), ""), http.StatusOK)

	var statuses []int
	for _, r := range s.Requests() {
		statuses = append(statuses, r.Status)
	}
	want := []int{401, 401, 200, 401, 401, 502, 200, 200, 401, 401, 200}
	if !reflect.DeepEqual(statuses, want) {
		t.Errorf("recorded statuses %v, want %v", statuses, want)
	}
	if printed := fmt.Sprintf("%+v %+v", s.Requests(), s); strings.Contains(printed, tok) {
		t.Error("the token can be printed from the server or its records")
	}
}

func TestTokenExpiresPerNow(t *testing.T) {
	s := newServer(t)
	s.RequireAuth = true
	clock := useClock(s)
	c := rawClient(t)
	tok := getToken(t, c, s)
	authed := func() outcome {
		return send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", tok.AccessToken), invoiceBody)
	}

	clock.Advance(30*time.Minute - time.Second)
	wantStatus(t, authed(), http.StatusOK)
	clock.Advance(time.Second) // Now == expires_on
	if clock.Now().Unix() != tok.ExpiresOn {
		t.Fatalf("clock at %d, expires_on %d", clock.Now().Unix(), tok.ExpiresOn)
	}
	wantBody(t, authed(), http.StatusUnauthorized, invalidTokenJS)

	fresh := getToken(t, c, s)
	wantStatus(t, send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", fresh.AccessToken), invoiceBody), http.StatusOK)
}

func TestExpireTokens(t *testing.T) {
	s := newServer(t)
	s.RequireAuth = true
	c := rawClient(t)
	old := getToken(t, c, s).AccessToken
	wantStatus(t, send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", old), invoiceBody), http.StatusOK)

	s.ExpireTokens()
	wantBody(t, send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", old), invoiceBody), http.StatusUnauthorized, invalidTokenJS)
	fresh := getToken(t, c, s).AccessToken
	wantStatus(t, send(t, c, http.MethodPost, s.URL+invoicingPath, bearer("Bearer", fresh), invoiceBody), http.StatusOK)
	if s.TokensIssued() != 2 {
		t.Errorf("TokensIssued() = %d, want 2", s.TokensIssued())
	}
}

func TestScriptToken(t *testing.T) {
	s := newServer(t)
	s.ScriptToken(saferetrytest.FaultInternalError, saferetrytest.FaultUnavailable,
		saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing)
	s.Script(saferetrytest.FaultBadGateway) // the create queue is not the token queue
	c := rawClient(t)

	o := postToken(t, c, s, credentials(s))
	wantStatus(t, o, http.StatusInternalServerError)
	checkProxyPage("500 Internal Server Error")(t, o)
	wantStatus(t, postToken(t, c, s, credentials(s)), http.StatusServiceUnavailable)
	if o := postToken(t, c, s, credentials(s)); o.err == nil {
		t.Errorf("drop-before: got %d, want no response", o.status)
	}
	if s.TokensIssued() != 0 {
		t.Errorf("TokensIssued() = %d after faults before processing, want 0", s.TokensIssued())
	}
	if o := postToken(t, c, s, credentials(s)); o.err == nil {
		t.Errorf("drop-after: got %d, want no response", o.status)
	}
	if s.TokensIssued() != 1 {
		t.Errorf("TokensIssued() = %d after drop-after, want 1", s.TokensIssued())
	}
	getToken(t, c, s)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusBadGateway)

	wantFaults(t, s.Requests(), saferetrytest.FaultInternalError, saferetrytest.FaultUnavailable,
		saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing, 0, saferetrytest.FaultBadGateway)
}

func TestTransactionAfterCreate(t *testing.T) {
	s := newServer(t)
	clock := useClock(s)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+accountingPath, "k1", invoiceBody), http.StatusOK)
	clock.Advance(time.Hour) // created_on is when the request started

	tx := wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")
	if tx.CreatedOn != "2026-03-01T12:04:05Z" || tx.Method != "POST" || tx.Route != accountingPath {
		t.Errorf("transaction %+v; want created_on 2026-03-01T12:04:05Z, POST %s", tx, accountingPath)
	}
	wantRecords(t, s.Requests()[1:], saferetrytest.RequestRecord{
		Method: "GET", Path: "/consumers/c1/connections/" + s.ConnectionID + "/transactions", Status: 200,
	})
}

func TestTransactionRecordsOutcome(t *testing.T) {
	s := newServer(t, saferetrytest.FaultDropAfterProcessing)
	c := rawClient(t)
	body := `{"invoice_number":"F-1","total":10}`
	if o := post(t, c, s.URL+invoicingPath, "lost", body); o.err == nil {
		t.Fatalf("drop-after: got %d, want no response", o.status)
	}
	wantStatus(t, post(t, c, s.URL+invoicingPath, "conflict", body), http.StatusConflict)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "invalid", `[]`), http.StatusUnprocessableEntity)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "", invoiceBody), http.StatusOK)
	// A fault before processing leaves no trace of the key.
	s.Script(saferetrytest.FaultUnavailable)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "refused", invoiceBody), http.StatusServiceUnavailable)

	wantTransaction(t, lookup(t, c, s, "lost"), 200, "inv_1")
	wantTransaction(t, lookup(t, c, s, "conflict"), 409, "")
	wantTransaction(t, lookup(t, c, s, "invalid"), 422, "")
	wantBody(t, lookup(t, c, s, ""), http.StatusNotFound, notFoundJS)
	wantBody(t, lookup(t, c, s, "refused"), http.StatusNotFound, notFoundJS)
}

func TestTransactionNotFound(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusOK)
	wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")

	for name, u := range map[string]string{
		"unknown key":      lookupURL(s, "c1", s.ConnectionID, "k2"),
		"other connection": lookupURL(s, "c1", "00000000-0000-4000-8000-000000000000", "k1"),
		"other consumer":   lookupURL(s, "c2", s.ConnectionID, "k1"),
	} {
		t.Run(name, func(t *testing.T) {
			o := send(t, c, http.MethodGet, u, nil, "")
			wantBody(t, o, http.StatusNotFound, notFoundJS)
			if ct := o.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestTransactionNeedsClientRequestID(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	base := s.URL + "/consumers/c1/connections/" + s.ConnectionID + "/transactions"
	for _, u := range []string{base, base + "?client_request_idx=k1"} {
		o := send(t, c, http.MethodGet, u, nil, "")
		wantStatus(t, o, http.StatusUnprocessableEntity)
		if d := fmt.Sprint(decode(t, o.body)["detail"]); !strings.Contains(d, "query client_request_id") || !strings.Contains(d, "missing") {
			t.Errorf("detail %s does not name the query parameter", d)
		}
	}
	o := send(t, c, http.MethodPost, base+"?client_request_id=k1", nil, "")
	wantStatus(t, o, http.StatusMethodNotAllowed)
	if allow := o.header.Get("Allow"); allow != "GET" {
		t.Errorf("Allow = %q, want GET", allow)
	}
	if o := send(t, c, http.MethodGet, s.URL+"/token", nil, ""); o.status != http.StatusMethodNotAllowed || o.header.Get("Allow") != "POST" {
		t.Errorf("GET /token: %d, Allow %q", o.status, o.header.Get("Allow"))
	}
}

// startSlowCommit posts k1 with a slow commit and waits until the server
// holds it in process, which it does until ReleaseSlowCommits.
func startSlowCommit(t *testing.T, s *saferetrytest.ChiftServer, c *http.Client) <-chan outcome {
	t.Helper()
	s.SlowDelay = time.Hour
	s.Script(saferetrytest.FaultSlowCommit)
	first := make(chan outcome, 1)
	go func() { first <- post(t, c, s.URL+invoicingPath, "k1", invoiceBody) }()
	waitFor(t, "the slow commit to start", func() bool {
		reqs := s.Requests()
		return len(reqs) > 0 && reqs[len(reqs)-1].Fault == saferetrytest.FaultSlowCommit
	})
	return first
}

func TestTransactionInProcess(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	first := startSlowCommit(t, s, c)

	tx := wantTransaction(t, lookup(t, c, s, "k1"), 0, "")
	if tx.Method != "POST" || tx.Route != invoicingPath || tx.CreatedOn == "" {
		t.Errorf("in-process transaction %+v", tx)
	}
	if !strings.Contains(string(lookup(t, c, s, "k1").body), `"status_code":null`) {
		t.Error("status_code is not null while in process")
	}
	s.ReleaseSlowCommits()
	wantStatus(t, <-first, http.StatusOK)
	wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")
}

func TestLookupDelay(t *testing.T) {
	s := newServer(t)
	clock := useClock(s)
	s.SetLookupDelay(time.Minute)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusOK)

	wantBody(t, lookup(t, c, s, "k1"), http.StatusNotFound, notFoundJS)
	clock.Advance(time.Minute - time.Second)
	wantBody(t, lookup(t, c, s, "k1"), http.StatusNotFound, notFoundJS)
	clock.Advance(time.Second)
	wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")

	s.SetLookupDelay(0)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k2", invoiceBody), http.StatusOK)
	wantTransaction(t, lookup(t, c, s, "k2"), 200, "inv_2")
}

// TestLookupDelayShowsPastState pins the lag model: the log shows a key as
// it stood one delay ago, so a slow commit is first unknown, then in
// process, then processed.
func TestLookupDelayShowsPastState(t *testing.T) {
	s := newServer(t)
	clock := useClock(s)
	s.SetLookupDelay(time.Minute)
	c := rawClient(t)
	first := startSlowCommit(t, s, c) // started at T

	wantBody(t, lookup(t, c, s, "k1"), http.StatusNotFound, notFoundJS)
	clock.Advance(time.Minute)
	wantTransaction(t, lookup(t, c, s, "k1"), 0, "")
	s.ReleaseSlowCommits()
	wantStatus(t, <-first, http.StatusOK) // processed at T+1m
	wantTransaction(t, lookup(t, c, s, "k1"), 0, "")
	clock.Advance(time.Minute)
	wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")
}

func TestScriptLookup(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusOK)
	s.ScriptLookup(saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
		saferetrytest.FaultUnavailable, saferetrytest.FaultRateLimited, saferetrytest.FaultDropBeforeProcessing)

	for _, want := range []int{500, 502, 503} {
		o := lookup(t, c, s, "k1")
		wantStatus(t, o, want)
		checkProxyPage(fmt.Sprintf("%d %s", want, http.StatusText(want)))(t, o)
	}
	o := lookup(t, c, s, "k1")
	wantStatus(t, o, http.StatusTooManyRequests)
	checkRateLimited("1")(t, o)
	if o := lookup(t, c, s, "k1"); o.err == nil {
		t.Errorf("drop-before: got %d, want no response", o.status)
	}
	// The queue is empty: lookups answer again, and creates never used it.
	wantTransaction(t, lookup(t, c, s, "k1"), 200, "inv_1")
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k2", invoiceBody), http.StatusOK)

	wantFaults(t, s.Requests(), 0, saferetrytest.FaultInternalError, saferetrytest.FaultBadGateway,
		saferetrytest.FaultUnavailable, saferetrytest.FaultRateLimited, saferetrytest.FaultDropBeforeProcessing, 0, 0)
}

func TestLookupsConsumeNoCreateFault(t *testing.T) {
	s := newServer(t, saferetrytest.FaultBadGateway)
	s.SetFaultFunc(func(string, int) saferetrytest.Fault { return saferetrytest.FaultUnavailable })
	c := rawClient(t)
	wantBody(t, lookup(t, c, s, "k1"), http.StatusNotFound, notFoundJS)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusBadGateway)
}

// TestConcurrentTokensCreatesAndLookups runs under -race: each goroutine
// gets its own token, creates an invoice and looks its key up.
func TestConcurrentTokensCreatesAndLookups(t *testing.T) {
	const n = 100
	s := newServer(t)
	s.RequireAuth = true
	c := rawClient(t)
	errs := make(chan error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id, err := createAndLookUp(t, c, s, fmt.Sprint("key-", i))
			ids[i] = id
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("entity id %q looked up twice", id)
		}
		seen[id] = true
	}
	if s.TokensIssued() != n || s.Created() != n || len(s.Requests()) != 3*n {
		t.Errorf("TokensIssued %d, Created %d, Requests %d; want %d, %d, %d",
			s.TokensIssued(), s.Created(), len(s.Requests()), n, n, 3*n)
	}
}

// createAndLookUp must not call t.Fatal: it runs on its own goroutine.
func createAndLookUp(t *testing.T, c *http.Client, s *saferetrytest.ChiftServer, key string) (string, error) {
	creds, _ := json.Marshal(credentials(s))
	o := send(t, c, http.MethodPost, s.URL+"/token", nil, string(creds))
	var tok tokenBody
	if o.status != http.StatusOK || json.Unmarshal(o.body, &tok) != nil {
		return "", fmt.Errorf("%s: token: %d %v %s", key, o.status, o.err, o.body)
	}
	auth := bearer("Bearer", tok.AccessToken)
	create := auth.Clone()
	create.Set("X-Chift-Client-RequestId", key)
	o = send(t, c, http.MethodPost, s.URL+invoicingPath, create, invoiceBody)
	var created struct{ ID string }
	if o.status != http.StatusOK || json.Unmarshal(o.body, &created) != nil {
		return "", fmt.Errorf("%s: create: %d %v %s", key, o.status, o.err, o.body)
	}
	o = send(t, c, http.MethodGet, lookupURL(s, "c1", s.ConnectionID, key), auth, "")
	var tx transaction
	if o.status != http.StatusOK || json.Unmarshal(o.body, &tx) != nil || tx.StatusCode == nil ||
		*tx.StatusCode != 200 || tx.CreatedEntityID == nil || *tx.CreatedEntityID != created.ID {
		return "", fmt.Errorf("%s: lookup: %d %v %s, want entity %s", key, o.status, o.err, o.body, created.ID)
	}
	return created.ID, nil
}
