package saferetrytest_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

const zhDuplicateBody = `{"error":true,"message":"Request does not contain an unique client_transfer_id"}`

var zhUUIDv4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

var zhStart = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func zhServer(t *testing.T, faults ...saferetrytest.Fault) (*saferetrytest.ZeroHashServer, *testClock) {
	t.Helper()
	s := saferetrytest.NewZeroHashServer()
	t.Cleanup(s.Close)
	clock := &testClock{now: zhStart}
	s.Now = clock.Now
	s.Script(faults...)
	return s, clock
}

// zhSign is the documented algorithm, written from the docs alone.
func zhSign(t *testing.T, secret, ts, method, target, body string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, ts+method+target+body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// zhSignedAs replaces the timestamp and signature with ones computed over
// the given inputs.
func zhSignedAs(t *testing.T, secret string, ts int64, method, target, body string) func(http.Header) {
	return func(h http.Header) {
		stamp := strconv.FormatInt(ts, 10)
		h.Set("X-SCX-TIMESTAMP", stamp)
		h.Set("X-SCX-SIGNED", zhSign(t, secret, stamp, method, target, body))
	}
}

func zhWithRequestID(id string) func(http.Header) {
	return func(h http.Header) { h.Set("X-REQUEST-ID", id) }
}

// zhDo sends a correctly signed request (timestamp from the server clock,
// "{}" as the signed body of a GET), then applies edits to its headers.
func zhDo(t *testing.T, s *saferetrytest.ZeroHashServer, c *http.Client, method, target, body string, edits ...func(http.Header)) outcome {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	signedBody := body
	if method == http.MethodGet {
		signedBody = "{}"
	}
	req.Header.Set("X-SCX-API-KEY", s.APIKey)
	req.Header.Set("X-SCX-PASSPHRASE", s.Passphrase)
	zhSignedAs(t, s.Secret, s.Now().Unix(), method, target, signedBody)(req.Header)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, edit := range edits {
		edit(req.Header)
	}
	return roundTrip(c, req)
}

func zhBody(cid string) string {
	b := `{"from_participant_code":"PLAT01","from_account_group":"PLAT01",` +
		`"to_participant_code":"CUST01","to_account_group":"PLAT01","asset":"USD","amount":"1.00"`
	if cid != "" {
		b += `,"client_transfer_id":` + strconv.Quote(cid)
	}
	return b + "}"
}

func zhCreate(t *testing.T, s *saferetrytest.ZeroHashServer, c *http.Client, cid string, edits ...func(http.Header)) outcome {
	t.Helper()
	return zhDo(t, s, c, http.MethodPost, "/transfers", zhBody(cid), edits...)
}

// zhEntity returns the "message" object of a create or get answer.
func zhEntity(t *testing.T, o outcome) map[string]any {
	t.Helper()
	m, ok := decode(t, o.body)["message"].(map[string]any)
	if !ok {
		t.Fatalf("body %s has no message object", o.body)
	}
	return m
}

type zhList struct {
	Message    []map[string]any `json:"message"`
	Page       int              `json:"page"`
	PageSize   int              `json:"page_size"`
	TotalPages int              `json:"total_pages"`
	Count      int              `json:"count"`
}

func zhLookup(t *testing.T, s *saferetrytest.ZeroHashServer, c *http.Client, query string) zhList {
	t.Helper()
	o := zhDo(t, s, c, http.MethodGet, "/transfers?"+query, "")
	wantStatus(t, o, http.StatusOK)
	if !strings.Contains(string(o.body), `"message":[`) {
		t.Errorf("message is not an array in %s", o.body)
	}
	var l zhList
	if err := json.Unmarshal(o.body, &l); err != nil {
		t.Fatalf("list body %s: %v", o.body, err)
	}
	return l
}

func zhIDs(l zhList) []int {
	var ids []int
	for _, m := range l.Message {
		id, _ := m["id"].(float64)
		ids = append(ids, int(id))
	}
	return ids
}

func TestZeroHashDefaults(t *testing.T) {
	a := saferetrytest.NewZeroHashServer()
	defer a.Close()
	b := saferetrytest.NewZeroHashServer()
	defer b.Close()
	if a.APIKey == "" || a.Passphrase == "" || a.APIKey == b.APIKey || a.Passphrase == b.Passphrase || a.Secret == b.Secret {
		t.Errorf("credentials not random: %+v / %+v", a, b)
	}
	if key, err := base64.StdEncoding.DecodeString(a.Secret); err != nil || len(key) != 32 {
		t.Errorf("Secret %q decodes to %d bytes, err %v; want 32", a.Secret, len(key), err)
	}
	if a.SlowDelay != 300*time.Millisecond || a.RetryAfterSeconds != 0 || a.Now == nil {
		t.Errorf("SlowDelay %v, RetryAfterSeconds %d, Now nil %v", a.SlowDelay, a.RetryAfterSeconds, a.Now == nil)
	}
	if !strings.HasPrefix(a.URL, "http://127.0.0.1:") {
		t.Errorf("URL %q", a.URL)
	}
}

func TestZeroHashCreateTransfer(t *testing.T) {
	s, clock := zhServer(t)
	c := rawClient(t)
	body := `{"from_participant_code":"PLAT01","from_account_group":"PLAT01","from_account_label":"general",` +
		`"to_participant_code":"CUST01","to_account_group":"PLAT01","to_account_label":"acc:1_a-b",` +
		`"asset":"USDC.ETH","amount":"20.1","client_transfer_id":"k1","prefunded":true}`
	o := zhDo(t, s, c, http.MethodPost, "/transfers", body)
	wantStatus(t, o, http.StatusCreated)
	if ct := o.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	want := map[string]any{
		"id": 1152000.0, "created_at": "2025-03-14T15:09:26.535Z", "updated_at": "2025-03-14T15:09:26.535Z",
		"status": "approved", "from_participant_code": "PLAT01", "from_account_group": "PLAT01",
		"from_account_label": "general", "to_participant_code": "CUST01", "to_account_group": "PLAT01",
		"to_account_label": "acc:1_a-b", "asset": "USDC.ETH", "amount": "20.1", "movement_id": nil,
		"client_transfer_id": "k1", "admin_transfer": false, "parent_link_id": nil,
		"parent_link_id_source": nil, "prefunded": true,
	}
	created := zhEntity(t, o)
	if !reflect.DeepEqual(created, want) {
		t.Errorf("transfer =\n%v\nwant\n%v", created, want)
	}

	clock.Advance(time.Second)
	o = zhCreate(t, s, c, "")
	wantStatus(t, o, http.StatusCreated)
	second := zhEntity(t, o)
	for field, v := range map[string]any{
		"id": 1152001.0, "created_at": "2025-03-14T15:09:27.535Z", "client_transfer_id": nil,
		"from_account_label": nil, "to_account_label": nil, "prefunded": false,
	} {
		if got, ok := second[field]; !ok || got != v {
			t.Errorf("second transfer %s = %v (present %v), want %v", field, got, ok, v)
		}
	}
	if s.Created() != 2 || s.CreatedWithClientTransferID("k1") != 1 || s.CreatedWithClientTransferID("") != 1 {
		t.Errorf("Created %d, with k1 %d, without id %d", s.Created(),
			s.CreatedWithClientTransferID("k1"), s.CreatedWithClientTransferID(""))
	}

	got := zhDo(t, s, c, http.MethodGet, "/transfers/1152000", "")
	wantStatus(t, got, http.StatusOK)
	if e := zhEntity(t, got); !reflect.DeepEqual(e, want) {
		t.Errorf("GET /transfers/1152000 =\n%v\nwant\n%v", e, want)
	}
}

func TestZeroHashAuthFailures(t *testing.T) {
	tests := []struct {
		name  string
		check string // what the message must name
		edit  func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header)
	}{
		{"missing api key", "X-SCX-API-KEY", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Del("X-SCX-API-KEY") }
		}},
		{"wrong api key", "X-SCX-API-KEY", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Set("X-SCX-API-KEY", "nope") }
		}},
		{"missing passphrase", "X-SCX-PASSPHRASE", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Del("X-SCX-PASSPHRASE") }
		}},
		{"wrong passphrase", "X-SCX-PASSPHRASE", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Set("X-SCX-PASSPHRASE", "nope") }
		}},
		{"missing timestamp", "X-SCX-TIMESTAMP", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Del("X-SCX-TIMESTAMP") }
		}},
		{"timestamp in milliseconds", "X-SCX-TIMESTAMP", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().UnixMilli(), "POST", "/transfers", zhBody("k1"))
		}},
		{"timestamp not a number", "X-SCX-TIMESTAMP", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Set("X-SCX-TIMESTAMP", "yesterday") }
		}},
		{"timestamp 61s old", "X-SCX-TIMESTAMP", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().Unix()-61, "POST", "/transfers", zhBody("k1"))
		}},
		{"timestamp 61s ahead", "X-SCX-TIMESTAMP", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().Unix()+61, "POST", "/transfers", zhBody("k1"))
		}},
		{"missing signature", "X-SCX-SIGNED", func(*testing.T, *saferetrytest.ZeroHashServer) func(http.Header) {
			return func(h http.Header) { h.Del("X-SCX-SIGNED") }
		}},
		{"other secret", "X-SCX-SIGNED", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			other := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
			return zhSignedAs(t, other, s.Now().Unix(), "POST", "/transfers", zhBody("k1"))
		}},
		{"secret not decoded", "X-SCX-SIGNED", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			raw := base64.StdEncoding.EncodeToString([]byte(s.Secret)) // HMAC keyed with the base64 text
			return zhSignedAs(t, raw, s.Now().Unix(), "POST", "/transfers", zhBody("k1"))
		}},
		{"other body signed", "X-SCX-SIGNED", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().Unix(), "POST", "/transfers", zhBody("k2"))
		}},
		{"other method signed", "X-SCX-SIGNED", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().Unix(), "GET", "/transfers", zhBody("k1"))
		}},
		{"lower-case method signed", "X-SCX-SIGNED", func(t *testing.T, s *saferetrytest.ZeroHashServer) func(http.Header) {
			return zhSignedAs(t, s.Secret, s.Now().Unix(), "post", "/transfers", zhBody("k1"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := zhServer(t)
			s.Script(saferetrytest.FaultInternalError) // must not be consumed
			o := zhCreate(t, s, rawClient(t), "k1", tt.edit(t, s), zhWithRequestID("r-1"))
			wantStatus(t, o, http.StatusForbidden)
			body := decode(t, o.body)
			msg, _ := body["message"].(string)
			if len(body) != 2 || body["error"] != true || !strings.Contains(msg, tt.check) {
				t.Errorf("body %s: want {error:true, message naming %s}", o.body, tt.check)
			}
			if got := o.header.Get("X-Request-Id"); got != "r-1" {
				t.Errorf("X-Request-Id = %q, want r-1", got)
			}
			if s.Created() != 0 {
				t.Errorf("Created() = %d, want 0", s.Created())
			}
			wantRecords(t, s.Requests(), saferetrytest.RequestRecord{Method: "POST", Path: "/transfers", Key: "r-1", Status: 403})
			// The scripted fault is still there for the next valid request.
			wantStatus(t, zhCreate(t, s, rawClient(t), "k1"), http.StatusInternalServerError)
		})
	}
}

func TestZeroHashTimestampWindow(t *testing.T) {
	s, clock := zhServer(t)
	c := rawClient(t)
	now := s.Now().Unix()
	for _, ts := range []int64{now - 60, now + 60} {
		o := zhCreate(t, s, c, "", zhSignedAs(t, s.Secret, ts, "POST", "/transfers", zhBody("")))
		wantStatus(t, o, http.StatusCreated)
	}
	// A request signed now is stale once the server clock has moved on.
	stale := zhSignedAs(t, s.Secret, now, "POST", "/transfers", zhBody(""))
	clock.Advance(61 * time.Second)
	wantStatus(t, zhCreate(t, s, c, "", stale), http.StatusForbidden)
	wantStatus(t, zhCreate(t, s, c, ""), http.StatusCreated) // re-signed with the new time
}

func TestZeroHashGetIsSignedWithEmptyObject(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	now := s.Now().Unix()
	for _, target := range []string{"/transfers", "/transfers/1152000"} {
		o := zhDo(t, s, c, "GET", target, "", zhSignedAs(t, s.Secret, now, "GET", target, ""))
		wantStatus(t, o, http.StatusForbidden)
		o = zhDo(t, s, c, "GET", target, "", zhSignedAs(t, s.Secret, now, "GET", target, "{}"))
		wantStatus(t, o, http.StatusOK)
	}
}

func TestZeroHashQueryIsSigned(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	now := s.Now().Unix()
	target := "/transfers?client_transfer_id=k1&page=1"
	for _, signed := range []string{"/transfers", "/transfers?page=1&client_transfer_id=k1"} {
		o := zhDo(t, s, c, "GET", target, "", zhSignedAs(t, s.Secret, now, "GET", signed, "{}"))
		if o.status != http.StatusForbidden {
			t.Errorf("signed as %s: status %d, want 403", signed, o.status)
		}
	}
	o := zhDo(t, s, c, "GET", target, "", zhSignedAs(t, s.Secret, now, "GET", target, "{}"))
	wantStatus(t, o, http.StatusOK)
	if n := decode(t, o.body)["count"]; n != 1.0 {
		t.Errorf("count %v, want 1", n)
	}
}

func TestZeroHashRequestID(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	const id = "4b5ef19e-4ad5-4750-8bf6-3e5238b976ec"
	o := zhCreate(t, s, c, "", func(h http.Header) { h["x-request-id"] = []string{id} })
	wantStatus(t, o, http.StatusCreated)
	if got := o.header.Get("X-Request-Id"); got != id {
		t.Errorf("echoed X-Request-Id %q, want %q", got, id)
	}

	var generated []string
	for range 2 {
		o = zhCreate(t, s, c, "")
		wantStatus(t, o, http.StatusCreated)
		generated = append(generated, o.header.Get("X-Request-Id"))
	}
	resp, err := c.Get(s.URL + "/nope") // unauthenticated: 403, still with an id
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	generated = append(generated, resp.Header.Get("X-Request-Id"))
	for i, g := range generated {
		if !zhUUIDv4.MatchString(g) {
			t.Errorf("generated X-Request-Id %q is not a UUIDv4", g)
		}
		if slices.Contains(generated[:i], g) {
			t.Errorf("generated X-Request-Id %q repeats", g)
		}
	}
	var keys []string
	for _, r := range s.Requests() {
		keys = append(keys, r.Key)
	}
	if want := []string{id, "", "", ""}; !reflect.DeepEqual(keys, want) {
		t.Errorf("recorded keys %q, want %q", keys, want)
	}
}

func TestZeroHashTimeNeedsNoAuth(t *testing.T) {
	s, _ := zhServer(t)
	resp, err := rawClient(t).Get(s.URL + "/time")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := fmt.Sprintf(`{"epoch":%d}`, zhStart.Unix()); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("GET /time: %d %s, want 200 %s", resp.StatusCode, body, want)
	}
	if !zhUUIDv4.MatchString(resp.Header.Get("X-Request-Id")) {
		t.Errorf("X-Request-Id %q", resp.Header.Get("X-Request-Id"))
	}
}

func TestZeroHashNotFound(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	for _, r := range []struct{ method, target string }{
		{"GET", "/nope"}, {"DELETE", "/transfers"}, {"POST", "/time"},
		{"GET", "/transfers/1152000"}, {"GET", "/transfers/abc"},
	} {
		o := zhDo(t, s, c, r.method, r.target, "")
		if o.status != http.StatusNotFound || string(o.body) != `{"error":"Not Found"}` {
			t.Errorf("%s %s: %d %s, want 404 Not Found", r.method, r.target, o.status, o.body)
		}
	}
	resp, err := c.Get(s.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("unsigned unknown route: %d, want 403", resp.StatusCode)
	}
}

func TestZeroHashDuplicateWithin72Hours(t *testing.T) {
	s, clock := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	dup := zhCreate(t, s, c, "k1")
	wantBody(t, dup, http.StatusBadRequest, zhDuplicateBody)

	clock.Advance(71*time.Hour + 59*time.Minute)
	dup = zhCreate(t, s, c, "k1")
	wantBody(t, dup, http.StatusBadRequest, zhDuplicateBody)

	s.AgeTransfer("k1", 73*time.Hour)
	again := zhCreate(t, s, c, "k1")
	wantStatus(t, again, http.StatusCreated)
	if id := zhEntity(t, again)["id"]; id != 1152001.0 {
		t.Errorf("new transfer id %v, want 1152001", id)
	}
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusBadRequest) // the new one now guards the id
	if n := s.CreatedWithClientTransferID("k1"); n != 2 {
		t.Errorf("CreatedWithClientTransferID = %d, want 2", n)
	}

	// Moving the clock past 72 h frees the id as well.
	clock.Advance(72 * time.Hour)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	if l := zhLookup(t, s, c, "client_transfer_id=k1"); l.Count != 3 {
		t.Errorf("lookup count %d, want 3", l.Count)
	}
}

func TestZeroHashValidation(t *testing.T) {
	const base = `"from_participant_code":"PLAT01","from_account_group":"PLAT01",` +
		`"to_participant_code":"CUST01","to_account_group":"PLAT01","asset":"USD"`
	tests := []struct {
		body string
		want []string // nil: accepted
	}{
		{`{}`, []string{
			"body/from_participant_code is required", "body/from_account_group is required",
			"body/to_participant_code is required", "body/to_account_group is required",
			"body/asset is required", "body/amount is required",
		}},
		{`{` + base + `,"amount":"1","memo":"x","extra":1}`, []string{
			"body/extra is not allowed", "body/memo is not allowed",
		}},
		{`{` + base + `,"amount":"0"}`, []string{"body/amount must be > 0"}},
		{`{` + base + `,"amount":"0.000"}`, []string{"body/amount must be > 0"}},
		{`{` + base + `,"amount":"-1.5"}`, []string{"body/amount must be > 0"}},
		{`{` + base + `,"amount":"1e3"}`, []string{"body/amount must be a decimal string"}},
		{`{` + base + `,"amount":""}`, []string{"body/amount must NOT have fewer than 1 characters"}},
		{`{` + base + `,"amount":5}`, []string{"body/amount must be string"}},
		{`{` + base + `,"amount":"1","to_account_label":"bad label"}`,
			[]string{`body/to_account_label must match pattern "^[A-Za-z0-9:_-]+$"`}},
		{`{` + base + `,"amount":"1","from_account_label":7}`, []string{"body/from_account_label must be string"}},
		{`{` + base + `,"amount":"1","prefunded":"yes"}`, []string{"body/prefunded must be boolean"}},
		{`{` + base + `,"amount":"1","client_transfer_id":7}`, []string{"body/client_transfer_id must be string"}},
		{`{` + base + `,"amount":"1","asset":""}`, []string{"body/asset must NOT have fewer than 1 characters"}},
		{`[]`, []string{"body must be object"}},
		{`null`, []string{"body must be object"}},
		{`{"amount":`, []string{"body must be object"}},
		{``, []string{"body must be object"}},
		{`{` + base + `,"amount":"0.01","from_account_label":null,"client_transfer_id":null,"prefunded":null}`, nil},
	}
	s, _ := zhServer(t)
	c := rawClient(t)
	created := 0
	for _, tt := range tests {
		o := zhDo(t, s, c, http.MethodPost, "/transfers", tt.body)
		if tt.want == nil {
			if o.status != http.StatusCreated {
				t.Errorf("%s: %d %s, want 201", tt.body, o.status, o.body)
			}
			created++
			continue
		}
		var got struct{ Errors []string }
		if o.status != http.StatusBadRequest || json.Unmarshal(o.body, &got) != nil || !reflect.DeepEqual(got.Errors, tt.want) {
			t.Errorf("%s:\ngot  %d %s\nwant 400 errors %q", tt.body, o.status, o.body, tt.want)
		}
	}
	if s.Created() != created {
		t.Errorf("Created() = %d, want %d", s.Created(), created)
	}
}

func TestZeroHashChecksComeBeforeFaults(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	s.Script(saferetrytest.FaultInternalError)
	wantStatus(t, zhCreate(t, s, c, "k2", func(h http.Header) { h.Set("X-SCX-SIGNED", "x") }), http.StatusForbidden)
	wantStatus(t, zhDo(t, s, c, "POST", "/transfers", `{"amount":"1"}`), http.StatusBadRequest)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusBadRequest)
	wantStatus(t, zhCreate(t, s, c, "k2"), http.StatusInternalServerError)
	wantFaults(t, s.Requests(), 0, 0, 0, 0, saferetrytest.FaultInternalError)
}

func TestZeroHashLookupByClientTransferID(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "a"), http.StatusCreated)
	other := `{"from_participant_code":"CUST02","from_account_group":"GRP002","from_account_label":"l1",` +
		`"to_participant_code":"CUST03","to_account_group":"GRP003","to_account_label":"l2",` +
		`"asset":"BTC","amount":"0.5","client_transfer_id":"b"}`
	wantStatus(t, zhDo(t, s, c, "POST", "/transfers", other), http.StatusCreated)

	found := zhLookup(t, s, c, "client_transfer_id=a")
	if found.Count != 1 || found.TotalPages != 1 || found.Page != 1 || found.PageSize != 50 ||
		len(found.Message) != 1 || found.Message[0]["client_transfer_id"] != "a" {
		t.Errorf("lookup a = %+v", found)
	}
	empty := zhLookup(t, s, c, "client_transfer_id=zzz")
	if empty.Count != 0 || empty.TotalPages != 0 || len(empty.Message) != 0 {
		t.Errorf("lookup zzz = %+v, want empty", empty)
	}
	for query, wantIDs := range map[string][]int{
		"":                                   {1152001, 1152000},
		"currency=BTC":                       {1152001},
		"currency=USD":                       {1152000},
		"from_participant_code=CUST02":       {1152001},
		"to_participant_code=CUST01":         {1152000},
		"from_account_group=PLAT01":          {1152000},
		"to_account_group=GRP003":            {1152001},
		"from_account_label=l1":              {1152001},
		"to_account_label=l2":                {1152001},
		"to_account_label=l2&currency=USD":   nil,
		"client_transfer_id=b&currency=BTC":  {1152001},
		"requested_timestamp%5Bgte%5D=12345": {1152001, 1152000}, // not modelled: ignored
	} {
		if got := zhIDs(zhLookup(t, s, c, query)); !reflect.DeepEqual(got, wantIDs) {
			t.Errorf("?%s: ids %v, want %v", query, got, wantIDs)
		}
	}
	o := zhDo(t, s, c, "GET", "/transfers?client_transfer_id=", "")
	wantStatus(t, o, http.StatusBadRequest)
	wantBodyText(t, o, `{"errors":["query/client_transfer_id must NOT have fewer than 1 characters"]}`)
}

func TestZeroHashPaging(t *testing.T) {
	s, clock := zhServer(t)
	c := rawClient(t)
	for i := range 35 {
		wantStatus(t, zhCreate(t, s, c, fmt.Sprint("p", i)), http.StatusCreated)
		clock.Advance(time.Second)
	}
	var all []int
	for page := 1; page <= 5; page++ {
		l := zhLookup(t, s, c, fmt.Sprintf("page=%d&page_size=10", page))
		wantLen := min(10, max(0, 35-(page-1)*10))
		if l.Count != 35 || l.TotalPages != 4 || l.Page != page || l.PageSize != 10 || len(l.Message) != wantLen {
			t.Errorf("page %d: count %d, total_pages %d, page %d, page_size %d, %d items; want 35, 4, %d, 10, %d",
				page, l.Count, l.TotalPages, l.Page, l.PageSize, len(l.Message), page, wantLen)
		}
		all = append(all, zhIDs(l)...)
	}
	var want []int
	for id := 1152034; id >= 1152000; id-- {
		want = append(want, id)
	}
	if !reflect.DeepEqual(all, want) {
		t.Errorf("ids across pages %v, want newest first %v", all, want)
	}
	if l := zhLookup(t, s, c, ""); l.PageSize != 50 || l.TotalPages != 1 || len(l.Message) != 35 {
		t.Errorf("default paging: page_size %d, total_pages %d, %d items", l.PageSize, l.TotalPages, len(l.Message))
	}
	if l := zhLookup(t, s, c, "page_size=100"); len(l.Message) != 35 {
		t.Errorf("page_size=100: %d items", len(l.Message))
	}

	// An aged transfer sorts by its created_at, not its id.
	s.AgeTransfer("p34", time.Hour)
	if ids := zhIDs(zhLookup(t, s, c, "page=4&page_size=10")); ids[len(ids)-1] != 1152034 {
		t.Errorf("aged transfer not last: %v", ids)
	}

	for query, want := range map[string]string{
		"page_size=101":         `{"errors":["query/page_size must be <= 100"]}`,
		"page_size=0":           `{"errors":["query/page_size must be >= 1"]}`,
		"page_size=ten":         `{"errors":["query/page_size must be integer"]}`,
		"page=0":                `{"errors":["query/page must be >= 1"]}`,
		"page=-1&page_size=1.5": `{"errors":["query/page must be >= 1","query/page_size must be integer"]}`,
	} {
		o := zhDo(t, s, c, "GET", "/transfers?"+query, "")
		if o.status != http.StatusBadRequest || string(o.body) != want {
			t.Errorf("?%s: %d %s, want 400 %s", query, o.status, o.body, want)
		}
	}
}

func TestZeroHashListIsLimitedToTwoMonths(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	wantStatus(t, zhCreate(t, s, c, "old"), http.StatusCreated)
	wantStatus(t, zhCreate(t, s, c, "recent"), http.StatusCreated)
	s.AgeTransfer("old", 70*24*time.Hour)
	s.AgeTransfer("recent", 50*24*time.Hour)
	if ids := zhIDs(zhLookup(t, s, c, "")); !reflect.DeepEqual(ids, []int{1152001}) {
		t.Errorf("listed ids %v, want only the recent one", ids)
	}
	o := zhDo(t, s, c, "GET", "/transfers/1152000", "")
	wantStatus(t, o, http.StatusOK)
	if created := zhEntity(t, o)["created_at"]; created != "2025-01-03T15:09:26.535Z" {
		t.Errorf("aged created_at %v", created)
	}
}

// TestZeroHashVisibilityDelay checks the hidden state under a delay no run
// outlasts, and its end under a short one, so that neither races the clock.
func TestZeroHashVisibilityDelay(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	s.SetVisibilityDelay(time.Hour)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	if s.Created() != 1 {
		t.Fatalf("Created() = %d, want 1", s.Created())
	}
	if l := zhLookup(t, s, c, "client_transfer_id=k1"); l.Count != 0 {
		t.Errorf("visible at once: %+v", l)
	}
	if o := zhDo(t, s, c, "GET", "/transfers/1152000", ""); o.status != http.StatusNotFound {
		t.Errorf("GET by id before visible: %d, want 404", o.status)
	}
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusBadRequest) // still a duplicate

	const delay = 100 * time.Millisecond
	s.SetVisibilityDelay(delay)
	start := time.Now()
	wantStatus(t, zhCreate(t, s, c, "k2"), http.StatusCreated)
	waitFor(t, "the transfer to become visible", func() bool {
		return zhLookup(t, s, c, "client_transfer_id=k2").Count == 1
	})
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("visible after %v, want at least %v", elapsed, delay)
	}
	wantStatus(t, zhDo(t, s, c, "GET", "/transfers/1152001", ""), http.StatusOK)
}

func TestZeroHashFaults(t *testing.T) {
	tests := []struct {
		fault       saferetrytest.Fault
		wantStatus  int  // 0: no response
		wantErr     bool // round trip or body read fails
		wantCreated int
		check       func(t *testing.T, o outcome)
	}{
		{saferetrytest.FaultNone, 201, false, 1, nil},
		{saferetrytest.FaultDropBeforeProcessing, 0, true, 0, nil},
		{saferetrytest.FaultDropAfterProcessing, 0, true, 1, nil},
		{saferetrytest.FaultSlowCommit, 201, false, 1, nil},
		{saferetrytest.FaultResetMidBody, 201, true, 1, zhCheckCutBody},
		{saferetrytest.FaultInternalError, 500, false, 0, checkProxyPage("500 Internal Server Error")},
		{saferetrytest.FaultBadGateway, 502, false, 0, checkProxyPage("502 Bad Gateway")},
		{saferetrytest.FaultUnavailable, 503, false, 0, zhCheckUnavailable},
		{saferetrytest.FaultRateLimited, 429, false, 0, zhCheckRateLimited("")},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s, _ := zhServer(t, tt.fault)
			s.SlowDelay = 20 * time.Millisecond
			c := rawClient(t)

			o := zhCreate(t, s, c, "k1", zhWithRequestID("r-1"))
			wantResult(t, o, tt.wantStatus, tt.wantErr)
			if o.status != 0 && o.header.Get("X-Request-Id") != "r-1" {
				t.Errorf("X-Request-Id = %q, want r-1", o.header.Get("X-Request-Id"))
			}
			if tt.check != nil {
				tt.check(t, o)
			}
			if s.Created() != tt.wantCreated {
				t.Errorf("Created() = %d, want %d", s.Created(), tt.wantCreated)
			}
			// The documented recipe: look up, then repost only if absent.
			if l := zhLookup(t, s, c, "client_transfer_id=k1"); l.Count != tt.wantCreated {
				t.Errorf("lookup count %d, want %d", l.Count, tt.wantCreated)
			}
			retry := zhCreate(t, s, c, "k1", zhWithRequestID("r-1"))
			retryStatus := http.StatusCreated
			if tt.wantCreated == 1 {
				retryStatus = http.StatusBadRequest
				wantBodyText(t, retry, zhDuplicateBody)
			}
			wantStatus(t, retry, retryStatus)
			if n := s.CreatedWithClientTransferID("k1"); n != 1 {
				t.Errorf("CreatedWithClientTransferID = %d after retry, want exactly 1", n)
			}
			wantRecords(t, s.Requests(),
				saferetrytest.RequestRecord{Method: "POST", Path: "/transfers", Key: "r-1", Fault: tt.fault, Status: tt.wantStatus},
				saferetrytest.RequestRecord{Method: "GET", Path: "/transfers", Status: 200},
				saferetrytest.RequestRecord{Method: "POST", Path: "/transfers", Key: "r-1", Status: retryStatus})
		})
	}
}

func zhCheckCutBody(t *testing.T, o outcome) {
	t.Helper()
	checkCutBody(t, o)
	if !strings.HasPrefix(string(o.body), `{"message":{"id":1152000,`) {
		t.Errorf("body %q should be a non-empty prefix of the created transfer", o.body)
	}
}

func zhCheckUnavailable(t *testing.T, o outcome) {
	t.Helper()
	if got := o.header.Get("zh-allow-retry"); got != "true" {
		t.Errorf("zh-allow-retry = %q, want true", got)
	}
	wantBodyText(t, o, `{"error":"Service Unavailable"}`)
}

func zhCheckRateLimited(retryAfter string) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		got, present := o.header["Retry-After"]
		if present != (retryAfter != "") || present && got[0] != retryAfter {
			t.Errorf("Retry-After = %q, want %q (none if empty)", got, retryAfter)
		}
		wantBodyText(t, o, "Too Many Requests")
	}
}

func TestZeroHashRetryAfterFollowsSetting(t *testing.T) {
	s, _ := zhServer(t, saferetrytest.FaultRateLimited)
	s.RetryAfterSeconds = 3
	o := zhCreate(t, s, rawClient(t), "k1")
	wantStatus(t, o, http.StatusTooManyRequests)
	zhCheckRateLimited("3")(t, o)
}

func TestZeroHashLookupFaults(t *testing.T) {
	tests := []struct {
		fault      saferetrytest.Fault
		wantStatus int
		wantErr    bool
		check      func(t *testing.T, o outcome)
	}{
		{saferetrytest.FaultDropBeforeProcessing, 0, true, nil},
		{saferetrytest.FaultInternalError, 500, false, checkProxyPage("500 Internal Server Error")},
		{saferetrytest.FaultBadGateway, 502, false, checkProxyPage("502 Bad Gateway")},
		{saferetrytest.FaultUnavailable, 503, false, zhCheckUnavailable},
		{saferetrytest.FaultRateLimited, 429, false, zhCheckRateLimited("")},
		{saferetrytest.FaultResetMidBody, 200, true, nil},
		{saferetrytest.FaultDropAfterProcessing, 0, true, nil},
	}
	for _, tt := range tests {
		for _, target := range []string{"/transfers?client_transfer_id=k1", "/transfers/1152000"} {
			t.Run(tt.fault.String()+" "+target, func(t *testing.T) {
				s, _ := zhServer(t)
				c := rawClient(t)
				s.ScriptLookup(tt.fault)
				wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated) // does not consume it
				o := zhDo(t, s, c, "GET", target, "")
				wantResult(t, o, tt.wantStatus, tt.wantErr)
				if tt.check != nil {
					tt.check(t, o)
				}
				wantStatus(t, zhDo(t, s, c, "GET", target, ""), http.StatusOK)
				if got := s.Requests()[1].Fault; got != tt.fault {
					t.Errorf("recorded fault %v, want %v", got, tt.fault)
				}
			})
		}
	}
}

func TestZeroHashCreateScriptDoesNotApplyToLookups(t *testing.T) {
	s, _ := zhServer(t, saferetrytest.FaultInternalError)
	c := rawClient(t)
	zhLookup(t, s, c, "")
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusInternalServerError)
}

func TestZeroHashSlowLookup(t *testing.T) {
	s, _ := zhServer(t)
	s.SlowDelay = 100 * time.Millisecond
	s.ScriptLookup(saferetrytest.FaultSlowCommit)
	start := time.Now()
	zhLookup(t, s, rawClient(t), "")
	if elapsed := time.Since(start); elapsed < s.SlowDelay {
		t.Errorf("slow lookup answered after %v, want at least %v", elapsed, s.SlowDelay)
	}
}

func TestZeroHashFaultFuncSeesAttempts(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	var calls faultCalls
	s.SetFaultFunc(func(cid string, attempt int) saferetrytest.Fault {
		calls.add(cid, attempt)
		if attempt == 1 && cid != "" {
			return saferetrytest.FaultDropBeforeProcessing
		}
		return saferetrytest.FaultNone
	})
	if o := zhCreate(t, s, c, "k1"); o.err == nil {
		t.Errorf("first attempt answered %d, want a dropped connection", o.status)
	}
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusCreated)
	wantStatus(t, zhCreate(t, s, c, "k1"), http.StatusBadRequest) // duplicate: no fault asked
	s.Script(saferetrytest.FaultBadGateway)
	wantStatus(t, zhCreate(t, s, c, "k2"), http.StatusBadGateway) // scripted: func not asked
	wantStatus(t, zhCreate(t, s, c, "k2"), http.StatusCreated)
	wantStatus(t, zhCreate(t, s, c, ""), http.StatusCreated)
	calls.want(t, "k1#1", "k1#2", "k2#2", "#1")
}

func TestZeroHashDuplicateDuringSlowCommit(t *testing.T) {
	s, _ := zhServer(t, saferetrytest.FaultSlowCommit)
	s.SlowDelay = time.Hour // until ReleaseSlowCommits
	c := rawClient(t)
	first := make(chan outcome, 1)
	go func() { first <- zhCreate(t, s, c, "k1") }()
	waitFor(t, "the slow commit to start", func() bool {
		reqs := s.Requests()
		return len(reqs) == 1 && reqs[0].Fault == saferetrytest.FaultSlowCommit
	})
	if l := zhLookup(t, s, c, "client_transfer_id=k1"); l.Count != 0 {
		t.Errorf("transfer visible during the slow commit: %+v", l)
	}

	second := make(chan outcome, 1)
	go func() { second <- zhCreate(t, s, c, "k1") }()
	waitFor(t, "the duplicate to arrive", func() bool { return len(s.Requests()) == 3 })
	select {
	case o := <-second:
		t.Fatalf("duplicate answered %d while the first still held the id", o.status)
	default:
	}
	s.ReleaseSlowCommits()
	dup := <-second
	// The duplicate waited for the commit: by the time it is answered the
	// transfer exists.
	if s.Created() != 1 {
		t.Errorf("duplicate answered before the commit: Created() = %d", s.Created())
	}
	wantBody(t, dup, http.StatusBadRequest, zhDuplicateBody)
	wantStatus(t, <-first, http.StatusCreated)
	if s.Created() != 1 || s.CreatedWithClientTransferID("k1") != 1 {
		t.Errorf("Created() = %d, with k1 %d; want exactly 1", s.Created(), s.CreatedWithClientTransferID("k1"))
	}
	if got := s.Requests()[2].Fault; got != saferetrytest.FaultNone {
		t.Errorf("duplicate consumed fault %v", got)
	}
}

func TestZeroHashCloseCutsSlowCommitShort(t *testing.T) {
	s := saferetrytest.NewZeroHashServer()
	s.SlowDelay = time.Minute
	s.Script(saferetrytest.FaultSlowCommit, saferetrytest.FaultDropBeforeProcessing,
		saferetrytest.FaultDropAfterProcessing, saferetrytest.FaultResetMidBody)
	c := rawClient(t)
	var clients sync.WaitGroup
	for _, cid := range []string{"k0", "k1", "k2", "k0"} { // the second k0 waits for the first
		clients.Go(func() { zhCreate(t, s, c, cid) })
	}
	waitFor(t, "all four requests", func() bool { return len(s.Requests()) == 4 })
	wantReturns(t, "Close", func() { s.Close(); clients.Wait() })
}

func TestZeroHashConcurrentCreates(t *testing.T) {
	s, _ := zhServer(t)
	tr := &http.Transport{MaxIdleConnsPerHost: 200}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	const n = 200
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { outs[i] = zhCreate(t, s, c, fmt.Sprint("c", i)) })
	}
	wg.Wait()
	ids := map[float64]bool{}
	for i, o := range outs {
		if o.err != nil || o.status != http.StatusCreated {
			t.Fatalf("request %d: %d %v %s", i, o.status, o.err, o.body)
		}
		ids[zhEntity(t, o)["id"].(float64)] = true
		if got := s.CreatedWithClientTransferID(fmt.Sprint("c", i)); got != 1 {
			t.Errorf("c%d created %d times", i, got)
		}
	}
	if len(ids) != n || s.Created() != n || len(s.Requests()) != n {
		t.Errorf("%d distinct ids, Created() = %d, %d requests; want %d", len(ids), s.Created(), len(s.Requests()), n)
	}
	if l := zhLookup(t, s, c, "page_size=100&page=2"); l.Count != n || l.TotalPages != 2 || len(l.Message) != 100 {
		t.Errorf("page 2 of 100: count %d, total_pages %d, %d items", l.Count, l.TotalPages, len(l.Message))
	}
}

func TestZeroHashConcurrentDuplicatesCreateOnce(t *testing.T) {
	s, _ := zhServer(t)
	c := rawClient(t)
	const n = 50
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { statuses[i] = zhCreate(t, s, c, "same").status })
	}
	wg.Wait()
	slices.Sort(statuses)
	want := slices.Repeat([]int{400}, n-1)
	want = append(want, 201)
	slices.Sort(want)
	if !reflect.DeepEqual(statuses, want) {
		t.Errorf("statuses %v, want one 201 and %d 400s", statuses, n-1)
	}
	if s.Created() != 1 {
		t.Errorf("Created() = %d, want 1", s.Created())
	}
}
