package saferetrytest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

const (
	invoicingPath  = "/consumers/c1/invoicing/invoices"
	accountingPath = "/consumers/c1/accounting/invoices"
	invoiceBody    = `{"currency":"EUR","total":121}`
	alreadyCode    = "REQUEST_ALREADY_PROCESSED"
	inProcessCode  = "REQUEST_IN_PROCESS"
)

func newServer(t *testing.T, faults ...saferetrytest.Fault) *saferetrytest.ChiftServer {
	t.Helper()
	s := saferetrytest.NewChiftServer()
	t.Cleanup(s.Close)
	s.Script(faults...)
	return s
}

func post(t *testing.T, c *http.Client, url, key, body string) outcome {
	t.Helper()
	header := http.Header{}
	if key != "" {
		header.Set("X-Chift-Client-RequestId", key)
	}
	return send(t, c, http.MethodPost, url, header, body)
}

func errorCode(t *testing.T, o outcome) string {
	t.Helper()
	code, _ := decode(t, o.body)["error_code"].(string)
	return code
}

func TestFirstRequestCreatesInvoice(t *testing.T) {
	for _, path := range []string{invoicingPath, accountingPath} {
		t.Run(path, func(t *testing.T) {
			s := newServer(t)
			o := post(t, rawClient(t), s.URL+path, "k1", invoiceBody)
			wantStatus(t, o, http.StatusOK)
			if ct := o.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			want := map[string]any{"currency": "EUR", "total": 121.0, "id": "inv_1"}
			if got := decode(t, o.body); !reflect.DeepEqual(got, want) {
				t.Errorf("body = %v, want %v", got, want)
			}
			if s.Created() != 1 || s.CreatedWithKey("k1") != 1 {
				t.Errorf("Created() = %d, CreatedWithKey = %d; want 1, 1", s.Created(), s.CreatedWithKey("k1"))
			}
			inv, ok := s.Entity("inv_1")
			wantInv := saferetrytest.Invoice{ID: "inv_1", Key: "k1", Body: map[string]any{"currency": "EUR", "total": 121.0}}
			if !ok || !reflect.DeepEqual(inv, wantInv) {
				t.Errorf("Entity = %+v, %v; want %+v", inv, ok, wantInv)
			}
		})
	}
}

func TestRepeatedKeyIsAlreadyProcessed(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k<&>1", invoiceBody), http.StatusOK)
	o := post(t, c, s.URL+invoicingPath, "k<&>1", invoiceBody)
	wantStatus(t, o, http.StatusConflict)
	wantBodyText(t, o, `{"status":"error","message":"Request already processed: 200",`+
		`"detail":"Request with same client request id k<&>1 was already successfully processed",`+
		`"error_code":"REQUEST_ALREADY_PROCESSED"}`)
	if s.Created() != 1 {
		t.Errorf("Created() = %d, want 1", s.Created())
	}
}

func TestKeyIsReadCaseInsensitively(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	lower := http.Header{"x-chift-client-requestid": {"k1"}}
	wantStatus(t, send(t, c, http.MethodPost, s.URL+invoicingPath, lower, invoiceBody), http.StatusOK)
	o := post(t, c, s.URL+invoicingPath, "k1", invoiceBody)
	if errorCode(t, o) != alreadyCode {
		t.Errorf("repeat in canonical case: %d %s", o.status, o.body)
	}
	if got := s.Requests()[0].Key; got != "k1" {
		t.Errorf("recorded key %q, want k1", got)
	}
}

func TestUnkeyedRequestsAlwaysProcess(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	for i := 1; i <= 3; i++ {
		o := post(t, c, s.URL+invoicingPath, "", invoiceBody)
		wantStatus(t, o, http.StatusOK)
		if id := decode(t, o.body)["id"]; id != fmt.Sprintf("inv_%d", i) {
			t.Errorf("request %d: id %v", i, id)
		}
	}
	if s.Created() != 3 || s.CreatedWithKey("") != 3 {
		t.Errorf("Created() = %d, CreatedWithKey(\"\") = %d; want 3, 3", s.Created(), s.CreatedWithKey(""))
	}
}

func TestDuplicateDuringSlowCommitIsInProcess(t *testing.T) {
	s := newServer(t, saferetrytest.FaultSlowCommit)
	s.SlowDelay = time.Hour // until ReleaseSlowCommits
	c := rawClient(t)
	first := make(chan outcome, 1)
	go func() { first <- post(t, c, s.URL+invoicingPath, "k1", invoiceBody) }()
	waitFor(t, "the slow commit to start", func() bool {
		reqs := s.Requests()
		return len(reqs) == 1 && reqs[0].Fault == saferetrytest.FaultSlowCommit
	})

	dup := post(t, c, s.URL+invoicingPath, "k1", invoiceBody)
	wantStatus(t, dup, http.StatusConflict)
	want := `{"status":"error","message":"Request is in processing",` +
		`"detail":"Request with same client request id k1 is currently processed",` +
		`"error_code":"REQUEST_IN_PROCESS"}`
	if string(dup.body) != want {
		t.Errorf("duplicate body =\n%s\nwant\n%s", dup.body, want)
	}
	s.ReleaseSlowCommits()
	wantStatus(t, <-first, http.StatusOK)
	if s.Created() != 1 {
		t.Errorf("Created() = %d, want 1", s.Created())
	}
}

// TestReleaseSlowCommits: a release ends the holds under way, not one that
// starts after it.
func TestReleaseSlowCommits(t *testing.T) {
	s := newServer(t, saferetrytest.FaultSlowCommit, saferetrytest.FaultSlowCommit)
	s.SlowDelay = time.Hour
	c := rawClient(t)
	held := func(key string) <-chan outcome {
		t.Helper()
		out := make(chan outcome, 1)
		go func() { out <- post(t, c, s.URL+invoicingPath, key, invoiceBody) }()
		waitFor(t, key+"'s slow commit to start", func() bool {
			reqs := s.Requests()
			return len(reqs) > 0 && reqs[len(reqs)-1].Key == key && reqs[len(reqs)-1].Fault == saferetrytest.FaultSlowCommit
		})
		return out
	}
	first := held("k1")
	s.ReleaseSlowCommits()
	wantStatus(t, <-first, http.StatusOK)

	second := held("k2")
	select {
	case o := <-second:
		t.Fatalf("k2 answered %d: the earlier release ended a hold that began after it", o.status)
	default:
	}
	if s.CreatedWithKey("k2") != 0 {
		t.Fatal("k2 committed while held")
	}
	s.ReleaseSlowCommits()
	wantStatus(t, <-second, http.StatusOK)
	if s.Created() != 2 {
		t.Errorf("Created() = %d, want 2", s.Created())
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		fault       saferetrytest.Fault
		wantStatus  int  // 0: no response
		wantErr     bool // round trip or body read fails
		wantCreated int
		retryStatus int
		retryCode   string
		check       func(t *testing.T, o outcome)
	}{
		{saferetrytest.FaultNone, 200, false, 1, 409, alreadyCode, nil},
		{saferetrytest.FaultDropBeforeProcessing, 0, true, 0, 200, "", nil},
		{saferetrytest.FaultDropAfterProcessing, 0, true, 1, 409, alreadyCode, nil},
		{saferetrytest.FaultSlowCommit, 200, false, 1, 409, alreadyCode, nil},
		{saferetrytest.FaultResetMidBody, 200, true, 1, 409, alreadyCode, checkCutBody},
		{saferetrytest.FaultInternalError, 500, false, 0, 200, "", checkProxyPage("500 Internal Server Error")},
		{saferetrytest.FaultBadGateway, 502, false, 0, 200, "", checkProxyPage("502 Bad Gateway")},
		{saferetrytest.FaultUnavailable, 503, false, 0, 200, "", checkProxyPage("503 Service Unavailable")},
		{saferetrytest.FaultRateLimited, 429, false, 0, 200, "", checkRateLimited("1")},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s := newServer(t, tt.fault)
			s.SlowDelay = 20 * time.Millisecond
			c := rawClient(t)

			o := post(t, c, s.URL+invoicingPath, "k1", invoiceBody)
			wantResult(t, o, tt.wantStatus, tt.wantErr)
			if tt.check != nil {
				tt.check(t, o)
			}
			if s.Created() != tt.wantCreated {
				t.Errorf("Created() = %d, want %d", s.Created(), tt.wantCreated)
			}

			retry := post(t, c, s.URL+invoicingPath, "k1", invoiceBody)
			wantStatus(t, retry, tt.retryStatus)
			if code, _ := decode(t, retry.body)["error_code"].(string); code != tt.retryCode {
				t.Errorf("retry error_code %q, want %q", code, tt.retryCode)
			}
			if n := s.CreatedWithKey("k1"); n != 1 {
				t.Errorf("CreatedWithKey = %d after retry, want exactly 1", n)
			}
			wantRecords(t, s.Requests(),
				saferetrytest.RequestRecord{Method: "POST", Path: invoicingPath, Key: "k1", Fault: tt.fault, Status: tt.wantStatus},
				saferetrytest.RequestRecord{Method: "POST", Path: invoicingPath, Key: "k1", Status: tt.retryStatus})
		})
	}
}

func checkRateLimited(retryAfter string) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if got := o.header.Get("Retry-After"); got != retryAfter {
			t.Errorf("Retry-After = %q, want %q", got, retryAfter)
		}
		if body := decode(t, o.body); body["status"] != "error" || body["error_code"] == "" {
			t.Errorf("body %s is not a Chift error", o.body)
		}
	}
}

func TestRetryAfterFollowsSetting(t *testing.T) {
	s := newServer(t, saferetrytest.FaultRateLimited)
	s.RetryAfterSeconds = 7
	o := post(t, rawClient(t), s.URL+invoicingPath, "k1", invoiceBody)
	wantStatus(t, o, http.StatusTooManyRequests)
	checkRateLimited("7")(t, o)
}

func TestCloseDoesNotHangAfterDroppedConnections(t *testing.T) {
	s := saferetrytest.NewChiftServer()
	s.Script(saferetrytest.FaultDropBeforeProcessing, saferetrytest.FaultDropAfterProcessing,
		saferetrytest.FaultResetMidBody)
	c := rawClient(t)
	for i := range 3 {
		if o := post(t, c, s.URL+invoicingPath, fmt.Sprint("k", i), invoiceBody); o.err == nil {
			t.Errorf("request %d: no error", i)
		}
	}
	wantReturns(t, "Close", s.Close)
}

func TestFaultFuncSeesAttempts(t *testing.T) {
	s := newServer(t, saferetrytest.FaultUnavailable)
	c := rawClient(t)
	var calls faultCalls
	s.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault {
		calls.add(key, attempt)
		if attempt == 2 {
			return saferetrytest.FaultDropBeforeProcessing
		}
		return saferetrytest.FaultNone
	})

	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), 503) // scripted: attempt 1
	if o := post(t, c, s.URL+invoicingPath, "k1", invoiceBody); o.err == nil {
		t.Errorf("attempt 2 should be dropped, got %d", o.status)
	}
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), 200)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), 409) // key check: no call
	wantStatus(t, post(t, c, s.URL+invoicingPath, "", invoiceBody), 200)

	calls.want(t, "k1#2", "k1#3", "#1")
}

func TestInvoiceNumberConflict(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	body := `{"invoice_number":"F-1","total":10}`
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", body), http.StatusOK)

	o := post(t, c, s.URL+accountingPath, "k2", body)
	wantStatus(t, o, http.StatusConflict)
	wantBodyText(t, o, `{"status":"error","message":"The invoice number is already used in the accounting system.",`+
		`"error_code":"ERROR_INVOICE_NUMBER_ALREADY_USED"}`)

	wantStatus(t, post(t, c, s.URL+"/consumers/c2/invoicing/invoices", "k3", body), http.StatusOK)
	retry := post(t, c, s.URL+accountingPath, "k2", body)
	if msg := decode(t, retry.body)["message"]; errorCode(t, retry) != alreadyCode || msg != "Request already processed: 409" {
		t.Errorf("retry of the conflicting key: %s", retry.body)
	}
	if s.Created() != 2 {
		t.Errorf("Created() = %d, want 2", s.Created())
	}
}

func TestInvalidBodyIsValidationError(t *testing.T) {
	tests := []struct{ name, body, wantType string }{
		{"not JSON", `{"total":`, "json_invalid"},
		{"array", `[1,2]`, "dict_type"},
		{"null", `null`, "dict_type"},
		{"string", `"invoice"`, "dict_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			c := rawClient(t)
			o := post(t, c, s.URL+invoicingPath, "k1", tt.body)
			wantStatus(t, o, http.StatusUnprocessableEntity)
			var got struct {
				Status, Message string
				Detail          []struct {
					Loc       []any
					Msg, Type string
				}
			}
			if err := json.Unmarshal(o.body, &got); err != nil || len(got.Detail) != 1 {
				t.Fatalf("body %s: %v", o.body, err)
			}
			if got.Message != "Validation error" || got.Detail[0].Loc[0] != "body" || got.Detail[0].Type != tt.wantType {
				t.Errorf("body %s, want loc body and type %s", o.body, tt.wantType)
			}
			retry := post(t, c, s.URL+invoicingPath, "k1", invoiceBody)
			if msg := decode(t, retry.body)["message"]; msg != "Request already processed: 422" {
				t.Errorf("retry message %v", msg)
			}
			if s.Created() != 0 {
				t.Errorf("Created() = %d, want 0", s.Created())
			}
		})
	}
}

func TestKeyLength(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		refused bool
	}{
		{"255 characters", strings.Repeat("k", 255), false},
		{"256 characters", strings.Repeat("k", 256), true},
		{"255 two-byte characters", strings.Repeat("é", 255), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t)
			c := rawClient(t)
			o := post(t, c, s.URL+invoicingPath, tt.key, invoiceBody)
			if tt.refused {
				wantStatus(t, o, http.StatusUnprocessableEntity)
				if loc := decode(t, o.body)["detail"]; !strings.Contains(fmt.Sprint(loc), "x-chift-client-requestid") {
					t.Errorf("detail %v does not name the header", loc)
				}
				if s.Created() != 0 {
					t.Errorf("Created() = %d, want 0", s.Created())
				}
				return
			}
			wantStatus(t, o, http.StatusOK)
			if code := errorCode(t, post(t, c, s.URL+invoicingPath, tt.key, invoiceBody)); code != alreadyCode {
				t.Errorf("repeat got %q, want %s", code, alreadyCode)
			}
		})
	}
}

// TestChecksComeBeforeFaults pins the order in the package doc: a refused key
// and a key answered 409 leave the scripted fault for the next request.
func TestChecksComeBeforeFaults(t *testing.T) {
	s := newServer(t)
	c := rawClient(t)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusOK)
	s.Script(saferetrytest.FaultBadGateway)

	wantStatus(t, post(t, c, s.URL+invoicingPath, strings.Repeat("k", 256), invoiceBody), http.StatusUnprocessableEntity)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k1", invoiceBody), http.StatusConflict)
	wantStatus(t, post(t, c, s.URL+invoicingPath, "k2", invoiceBody), http.StatusBadGateway)

	wantFaults(t, s.Requests(), 0, 0, 0, saferetrytest.FaultBadGateway)
}

func TestUnsupportedRoutes(t *testing.T) {
	tests := []struct {
		method, path string
		wantStatus   int
	}{
		{http.MethodGet, invoicingPath, http.StatusMethodNotAllowed},
		{http.MethodPut, accountingPath, http.StatusMethodNotAllowed},
		{http.MethodPost, "/consumers/c1/invoicing/contacts", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			s := newServer(t)
			o := send(t, rawClient(t), tt.method, s.URL+tt.path, nil, invoiceBody)
			wantStatus(t, o, tt.wantStatus)
			if allow := o.header.Get("Allow"); tt.wantStatus == http.StatusMethodNotAllowed && allow != "POST" {
				t.Errorf("Allow = %q, want POST", allow)
			}
			body := decode(t, o.body)
			wantMsg := fmt.Sprintf("The resource %s - %s is not supported", tt.method, tt.path)
			if body["error_code"] != "ERROR_RESOURCE_NOT_SUPPORTED" || body["message"] != wantMsg {
				t.Errorf("body %s", o.body)
			}
			wantRecords(t, s.Requests(), saferetrytest.RequestRecord{Method: tt.method, Path: tt.path, Status: tt.wantStatus})
			if s.Created() != 0 {
				t.Errorf("Created() = %d", s.Created())
			}
		})
	}
}

// postAll sends one create per key at once; t.Fatal must not run on the
// spawned goroutines, so outcomes are checked by the caller.
func postAll(t *testing.T, url string, keys []string) []outcome {
	t.Helper()
	c := rawClient(t)
	outs := make([]outcome, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() { outs[i] = post(t, c, url, key, invoiceBody) })
	}
	wg.Wait()
	return outs
}

func TestConcurrentDistinctKeys(t *testing.T) {
	const n = 200
	s := newServer(t)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	seen := map[any]bool{}
	for i, o := range postAll(t, s.URL+invoicingPath, keys) {
		wantStatus(t, o, http.StatusOK)
		id := decode(t, o.body)["id"]
		if seen[id] {
			t.Fatalf("request %d: id %v repeated", i, id)
		}
		seen[id] = true
	}
	if s.Created() != n || len(s.Requests()) != n {
		t.Errorf("Created() = %d, Requests = %d; want %d", s.Created(), len(s.Requests()), n)
	}
}

func TestConcurrentDuplicatesCreateOnce(t *testing.T) {
	const n = 50
	s := newServer(t)
	count := map[string]int{}
	for _, o := range postAll(t, s.URL+invoicingPath, slices.Repeat([]string{"same"}, n)) {
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.status == http.StatusOK {
			count["ok"]++
			continue
		}
		count[errorCode(t, o)]++
	}
	if count["ok"] != 1 || count["ok"]+count[alreadyCode]+count[inProcessCode] != n {
		t.Errorf("outcomes %v, want one ok and the rest 409", count)
	}
	if s.Created() != 1 {
		t.Errorf("Created() = %d, want 1", s.Created())
	}
}

func TestFaultString(t *testing.T) {
	tests := map[saferetrytest.Fault]string{
		saferetrytest.FaultNone:                 "none",
		saferetrytest.FaultDropBeforeProcessing: "drop-before",
		saferetrytest.FaultDropAfterProcessing:  "drop-after",
		saferetrytest.FaultSlowCommit:           "slow-commit",
		saferetrytest.FaultResetMidBody:         "reset-mid-body",
		saferetrytest.FaultInternalError:        "500",
		saferetrytest.FaultBadGateway:           "502",
		saferetrytest.FaultUnavailable:          "503",
		saferetrytest.FaultRateLimited:          "429",
		saferetrytest.Fault(42):                 "Fault(42)",
	}
	for f, want := range tests {
		if got := f.String(); got != want {
			t.Errorf("Fault(%d).String() = %q, want %q", int(f), got, want)
		}
	}
}

// A create whose connection is lost after the server acted: the retry with
// the same key is told the request was already processed, and only one
// invoice exists.
func ExampleChiftServer_Script() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	create := func() string {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/c1/invoicing/invoices",
			strings.NewReader(`{"total":10}`))
		req.Header.Set("X-Chift-Client-RequestId", "order-42")
		resp, err := client.Do(req)
		if err != nil {
			return "connection lost"
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprint(resp.StatusCode, " ", string(body))
	}
	fmt.Println(create())
	fmt.Println(create())
	fmt.Println("invoices:", srv.Created())
	// Output:
	// connection lost
	// 409 {"status":"error","message":"Request already processed: 200","detail":"Request with same client request id order-42 was already successfully processed","error_code":"REQUEST_ALREADY_PROCESSED"}
	// invoices: 1
}
