package saferetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode"
	"unicode/utf8"
)

// Fuzz targets for the decoders that read what servers send: error bodies,
// Retry-After, idempotency keys, zerohash transfers, Chift tokens and
// Chift transactions. The seed corpora live in testdata/fuzz/<FuzzName>/;
// a failing input a fuzzer finds is kept there so the failure stays visible.

// fzNoPanic turns a panic into a failure of this input alone, so one
// crashing corpus entry does not stop the other targets' seeds.
func fzNoPanic(t *testing.T) {
	if r := recover(); r != nil {
		t.Errorf("panic: %v\n%s", r, debug.Stack())
	}
}

// fzNow is the clock the time-dependent targets read.
var fzNow = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// fzAlreadyProcessed is Chift's message for REQUEST_ALREADY_PROCESSED.
var fzAlreadyProcessed = regexp.MustCompile(`^Request already processed: ([1-9][0-9]{2})$`)

func FuzzParseAPIError(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{409, `{"status":"error","message":"Request already processed: 200","detail":"Request with same client request id {client_request_id} was already successfully processed","error_code":"REQUEST_ALREADY_PROCESSED"}`},
		{409, `{"status":"error","message":"Request is in processing","detail":"Request with same client request id {client_request_id} is currently processed","error_code":"REQUEST_IN_PROCESS"}`},
		{400, `{"error":true,"message":"Request does not contain an unique client_transfer_id"}`},
		{400, `{"errors":["body/amount must be >= 0","body/asset is required"]}`},
		{404, `{"error":"Not Found"}`},
		{502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"},
		{500, ``},
		{409, `{"status":"error","message":"Request already proc`},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}

	// The 1 MiB bound, once per process: a body of exactly 1 MiB is kept
	// whole, one byte more is truncated, and either way the caller can
	// still read every byte afterwards.
	for _, size := range []int{maxErrorBody, maxErrorBody + 1} {
		body := bytes.Repeat([]byte("<p>x</p>"), size/8+1)[:size]
		e, restored := fzCheckResponse(f, 502, body)
		if e == nil {
			f.Fatalf("CheckResponse(502, %d bytes) = nil", size)
		}
		if want := size > maxErrorBody; e.Truncated != want || len(e.Body) != min(size, maxErrorBody) {
			f.Errorf("body of %d bytes: Truncated = %v, len(Body) = %d; want %v, %d", size, e.Truncated, len(e.Body), want, min(size, maxErrorBody))
		}
		if !bytes.Equal(restored, body) {
			f.Errorf("body of %d bytes: %d bytes readable after CheckResponse, not the same body", size, len(restored))
		}
	}

	f.Fuzz(func(t *testing.T, status int, body []byte) {
		defer fzNoPanic(t)
		in := bytes.Clone(body)

		e := parseAPIError(status, body, false)
		fzCheckAPIError(t, e, status, in)
		if !bytes.Equal(e.Body, in) || e.Truncated {
			t.Errorf("parseAPIError: Body = %q, Truncated = %v; want the input, false", e.Body, e.Truncated)
		}

		got, restored := fzCheckResponse(t, status, in)
		if status >= 200 && status < 300 {
			if got != nil {
				t.Errorf("CheckResponse(%d) = %v; want nil", status, got)
			}
		} else {
			if got == nil {
				t.Fatalf("CheckResponse(%d) = nil; want an *APIError", status)
			}
			fzCheckAPIError(t, got, status, in)
			if !bytes.Equal(got.Body, in) || got.Truncated {
				t.Errorf("CheckResponse: Body = %q, Truncated = %v; want the input, false", got.Body, got.Truncated)
			}
			if got.ServerRequestID != "srv-1" || got.RequestID != "" {
				t.Errorf("CheckResponse: ServerRequestID = %q, RequestID = %q; want %q, %q", got.ServerRequestID, got.RequestID, "srv-1", "")
			}
		}
		if !bytes.Equal(restored, in) {
			t.Errorf("body after CheckResponse = %q; want %q", restored, in)
		}

		// The same bound on a smaller scale: peekBody truncates exactly
		// when the body is longer than the limit and always restores it.
		for _, limit := range []int{0, len(in) / 2, len(in) - 1, len(in)} {
			if limit < 0 {
				continue
			}
			resp := &http.Response{Body: io.NopCloser(iotest.DataErrReader(bytes.NewReader(in)))}
			head, truncated, err := peekBody(resp, int64(limit))
			if err != nil {
				t.Fatalf("peekBody(limit %d): %v", limit, err)
			}
			if truncated != (len(in) > limit) || !bytes.Equal(head, in[:min(len(in), limit)]) {
				t.Errorf("peekBody(limit %d) = %q, %v; want %q, %v", limit, head, truncated, in[:min(len(in), limit)], len(in) > limit)
			}
			if all, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(all, in) {
				t.Errorf("body after peekBody(limit %d) = %q, %v; want %q", limit, all, err, in)
			}
		}
	})
}

// fzCheckResponse runs CheckResponse over body and returns its error and
// what the caller can read from the body afterwards.
func fzCheckResponse(tb testing.TB, status int, body []byte) (*APIError, []byte) {
	tb.Helper()
	resp := &http.Response{
		StatusCode: status,
		Header:     http.Header{"X-Request-Id": {"srv-1"}},
		Body:       io.NopCloser(iotest.OneByteReader(bytes.NewReader(body))),
	}
	if len(body) > 1<<16 {
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	err := CheckResponse(resp)
	var apiErr *APIError
	if err != nil && !errors.As(err, &apiErr) {
		tb.Fatalf("CheckResponse returned %T %v; want *APIError", err, err)
	}
	restored, rerr := io.ReadAll(resp.Body)
	if rerr != nil {
		tb.Fatalf("reading the body after CheckResponse: %v", rerr)
	}
	if err := resp.Body.Close(); err != nil {
		tb.Errorf("closing the body after CheckResponse: %v", err)
	}
	return apiErr, restored
}

// fzCheckAPIError asserts what holds for every APIError decoded from body.
func fzCheckAPIError(t *testing.T, e *APIError, status int, body []byte) {
	t.Helper()
	if e.StatusCode != status {
		t.Errorf("StatusCode = %d; want %d", e.StatusCode, status)
	}
	msg := e.Error()
	if prefix := "saferetry: HTTP " + strconv.Itoa(status); !strings.HasPrefix(msg, prefix) {
		t.Errorf("Error() = %q; want it to start with %q", msg, prefix)
	}
	if e.Code != "" && !strings.Contains(msg, e.Code) {
		t.Errorf("Error() = %q does not name the code %q", msg, e.Code)
	}

	// OriginalStatus: only for REQUEST_ALREADY_PROCESSED, and a status.
	if os := e.OriginalStatus; os != 0 && (os < 100 || os > 999 || e.Code != codeAlreadyProcessed) {
		t.Errorf("OriginalStatus = %d with code %q; want 0, or 100..999 with %s", os, e.Code, codeAlreadyProcessed)
	}
	if m := fzAlreadyProcessed.FindStringSubmatch(e.Message); m != nil && e.Code == codeAlreadyProcessed {
		if want, _ := strconv.Atoi(m[1]); e.OriginalStatus != want {
			t.Errorf("OriginalStatus = %d for message %q; want %d", e.OriginalStatus, e.Message, want)
		}
	}

	// The sentinel follows from Code and Message alone.
	alreadyProcessed := e.Code == codeAlreadyProcessed
	inProcess := e.Code == codeInProcess
	duplicate := !alreadyProcessed && !inProcess && strings.Contains(e.Message, "unique client_transfer_id")
	for _, s := range []struct {
		sentinel error
		want     bool
	}{
		{ErrRequestAlreadyProcessed, alreadyProcessed},
		{ErrRequestInProcess, inProcess},
		{ErrDuplicateClientTransferID, duplicate},
		{ErrOutcomeUnknown, false},
		{ErrInvalidKey, false},
		{ErrTransactionNotFound, false},
	} {
		if got := errors.Is(e, s.sentinel); got != s.want {
			t.Errorf("errors.Is(%q, %v) = %v; want %v (code %q, message %q)", msg, s.sentinel, got, s.want, e.Code, e.Message)
		}
	}

	shape, kind := fzErrorShape(body)
	switch kind {
	case fzAmbiguous:
		return
	case fzUndecodable:
		// Not an error body the SDK can decode (HTML, text, truncated or
		// mistyped JSON): only a short, printable excerpt remains.
		if e.Code != "" || e.Detail != "" || len(e.Details) != 0 || e.OriginalStatus != 0 {
			t.Errorf("non-JSON body %q: Code %q, Detail %q, %d details, OriginalStatus %d; want none", body, e.Code, e.Detail, len(e.Details), e.OriginalStatus)
		}
		if len(e.Message) > 256 {
			t.Errorf("non-JSON body: Message is %d bytes; want at most 256", len(e.Message))
		}
		if !utf8.ValidString(e.Message) || strings.IndexFunc(e.Message, unicode.IsControl) >= 0 {
			t.Errorf("non-JSON body %q: Message %q holds invalid UTF-8 or a control character", body, e.Message)
		}
		if strings.TrimSpace(e.Message) != e.Message {
			t.Errorf("non-JSON body: Message %q has surrounding space", e.Message)
		}
		return
	}
	if e.Code != shape.code {
		t.Errorf("Code = %q; want %q", e.Code, shape.code)
	}
	if e.Message != shape.message {
		t.Errorf("Message = %q; want %q", e.Message, shape.message)
	}
	if e.Detail != shape.detail {
		t.Errorf("Detail = %q; want %q", e.Detail, shape.detail)
	}
	if len(e.Details) != shape.details {
		t.Errorf("%d details; want %d", len(e.Details), shape.details)
	}
	for i, d := range e.Details {
		if len(d.Raw) == 0 {
			t.Errorf("Details[%d].Raw is empty", i)
		}
	}
}

// fzShape is what an error body says, read independently of parseAPIError.
type fzShape struct {
	code, message, detail string
	details               int
}

// fzKind says how an error body should be read.
type fzKind int

const (
	fzUndecodable fzKind = iota // not an error object: only an excerpt is left
	fzDecoded                   // a JSON error object (or null)
	fzAmbiguous                 // known keys repeated or differing in case only
)

var fzErrorKeys = []string{"status", "message", "detail", "error_code", "error", "errors", "title"}

// fzErrorShape reads body as the SDK should: a JSON object (or null) whose
// message, title and error_code are strings or null. Anything else is
// undecodable. An object naming a known key twice, in any case, is left
// out: encoding/json's last-wins and case folding decide those.
func fzErrorShape(body []byte) (fzShape, fzKind) {
	var s fzShape
	if !json.Valid(body) {
		return s, fzUndecodable
	}
	if string(bytes.TrimSpace(body)) == "null" {
		return s, fzDecoded
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return s, fzUndecodable // an array, a string, a number, true or false
	}
	m := map[string]json.RawMessage{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return s, fzAmbiguous
		}
		key := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return s, fzAmbiguous
		}
		for _, name := range fzErrorKeys {
			if strings.EqualFold(key, name) {
				if key != name || seen[name] {
					return s, fzAmbiguous
				}
				seen[name] = true
			}
		}
		m[key] = raw
	}
	str := func(name string) (string, bool) {
		raw, present := m[name]
		if !present || string(raw) == "null" {
			return "", true
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return "", false
		}
		return v, true
	}
	message, ok1 := str("message")
	title, ok2 := str("title")
	code, ok3 := str("error_code")
	if !ok1 || !ok2 || !ok3 {
		return s, fzUndecodable // a mistyped field fails the whole decode
	}
	s.code = code
	var errStr string
	if raw, ok := m["error"]; ok {
		_ = json.Unmarshal(raw, &errStr)
	}
	switch {
	case message != "":
		s.message = message
	case title != "":
		s.message = title
	default:
		s.message = errStr
	}
	var items []json.RawMessage
	if raw, ok := m["detail"]; ok {
		if json.Unmarshal(raw, &s.detail) != nil && json.Unmarshal(raw, &items) == nil {
			s.details += len(items)
		}
	}
	items = nil
	if raw, ok := m["errors"]; ok && json.Unmarshal(raw, &items) == nil {
		s.details += len(items)
	}
	return s, fzDecoded
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, v := range []string{"120", "0", "-1", "Sun, 06 Nov 1994 08:49:37 GMT", "99999999999999999999", " 3 ", "1.5", ""} {
		f.Add(v)
	}
	digits := regexp.MustCompile(`^[0-9]+$`)
	negative := regexp.MustCompile(`^-0*[1-9][0-9]*$`)
	signed := regexp.MustCompile(`^[+-]?[0-9]+$`)
	const day = 24 * time.Hour

	f.Fuzz(func(t *testing.T, v string) {
		defer fzNoPanic(t)
		d, ok := parseRetryAfter(v, fzNow)
		if !ok && d != 0 {
			t.Errorf("parseRetryAfter(%q) = %v, false; want 0 when not ok", v, d)
		}
		if ok && (d < 0 || d > day) {
			t.Errorf("parseRetryAfter(%q) = %v, true; want a wait within 0..24h", v, d)
		}
		s := strings.TrimSpace(v)
		switch {
		case digits.MatchString(s):
			want := day
			if n, err := strconv.ParseUint(s, 10, 64); err == nil && n < uint64(day/time.Second) {
				want = time.Duration(n) * time.Second
			}
			if !ok || d != want {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, true", v, d, ok, want)
			}
		case negative.MatchString(s):
			if ok {
				t.Errorf("parseRetryAfter(%q) = %v, true; want not ok for a negative delay", v, d)
			}
		case signed.MatchString(s):
			// "+5", "-0": integers strconv reads; only the bounds apply.
		default:
			at, isDate := fzHTTPDate(s)
			if !isDate {
				if ok {
					t.Errorf("parseRetryAfter(%q) = %v, true; want not ok for neither an integer nor an HTTP date", v, d)
				}
				return
			}
			want := min(max(at.Sub(fzNow), 0), day)
			if !ok || d != want {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, true (date %v, now %v)", v, d, ok, want, at, fzNow)
			}
		}
	})
}

// fzHTTPDate parses the three date formats of RFC 9110 section 5.6.7.
func fzHTTPDate(s string) (time.Time, bool) {
	for _, layout := range []string{http.TimeFormat, time.RFC850, time.ANSIC} {
		if at, err := time.Parse(layout, s); err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}

func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"4b5ef19e-4ad5-4750-8bf6-3e5238b976ec", "123456", "", " ", "abc\x00def", "clé", strings.Repeat("k", 255), strings.Repeat("k", 256)} {
		f.Add(k)
	}
	tr, err := NewTransport(http.DefaultTransport)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, key string) {
		defer fzNoPanic(t)
		want := fzKeyAcceptable(key)
		for _, c := range []struct {
			name string
			err  error
		}{
			{"ValidateKey", ValidateKey(key)},
			{"Transport.validateKey", tr.validateKey(key)},
		} {
			if (c.err == nil) != want {
				t.Errorf("%s(%q) = %v; want accepted = %v", c.name, key, c.err, want)
			}
			if c.err == nil {
				continue
			}
			if !errors.Is(c.err, ErrInvalidKey) {
				t.Errorf("%s(%q) = %v; want an error matching ErrInvalidKey", c.name, key, c.err)
			}
			if !strings.HasPrefix(c.err.Error(), "saferetry: ") {
				t.Errorf("%s(%q) = %q; want the saferetry: prefix", c.name, key, c.err)
			}
		}
	})
}

// fzKeyAcceptable: 1..255 bytes of printable ASCII, not all spaces.
func fzKeyAcceptable(key string) bool {
	if len(key) == 0 || len(key) > 255 {
		return false
	}
	blank := true
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
		if key[i] != ' ' {
			blank = false
		}
	}
	// net/http trims spaces at either end on the wire.
	return !blank && key[0] != ' ' && key[len(key)-1] != ' '
}

func FuzzDecodeTransfer(f *testing.F) {
	for _, b := range []string{
		`{"message":{"id":48598,"client_transfer_id":"b8aa391c-6da9-4991-b123-f8d64976c92e","created_at":"2022-10-13T20:06:29.276Z","updated_at":"2022-10-13T20:06:29.276Z","status":"approved","from_participant_code":"PLAT01","from_account_group":"PLAT01","from_account_label":null,"to_participant_code":"CUST01","to_account_group":"PLAT01","to_account_label":null,"amount":"1.00","movement_id":null,"admin_transfer":false,"asset":"USD"}}`,
		`{"id":1106955,"client_transfer_id":null,"created_at":"2024-12-03T16:00:38.972Z","status":"approved","amount":"500","asset":"USDC.ETH","prefunded":false}`,
		`{"id":"7","amount":20.1}`,
		`{"message":"Not Found"}`,
	} {
		f.Add([]byte(b))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		defer fzNoPanic(t)
		tr, err := decodeTransfer(body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "saferetry: decoding transfer: ") {
				t.Errorf("decodeTransfer error %q lacks its prefix", err)
			}
			return
		}
		if tr.Outcome != 0 {
			t.Errorf("decoded Outcome = %v; want zero", tr.Outcome)
		}

		// The object decoded: the "message" object, else the body itself.
		var probe struct {
			Message json.RawMessage `json:"message"`
		}
		if err := json.Unmarshal(body, &probe); err != nil {
			t.Fatalf("decodeTransfer accepted %q, which is not a JSON object: %v", body, err)
		}
		inner := body
		if len(probe.Message) > 0 && probe.Message[0] == '{' {
			inner = probe.Message
		} else {
			wrapped := append(append([]byte(`{"message":`), body...), '}')
			fzSameTransfer(t, "wrapped form", wrapped, tr)
		}
		fzCheckTransferFields(t, inner, tr)

		// Round trip through encoding/json, bare and wrapped.
		out, err := json.Marshal(tr)
		if err != nil {
			if strings.Contains(err.Error(), "year outside of range") {
				return // a time encoding/json cannot write, not the SDK's
			}
			t.Fatalf("json.Marshal(%+v): %v", *tr, err)
		}
		fzSameTransfer(t, "re-encoded", out, tr)
		fzSameTransfer(t, "re-encoded and wrapped", append(append([]byte(`{"message":`), out...), '}'), tr)
	})
}

// fzSameTransfer decodes body and compares it with want.
func fzSameTransfer(t *testing.T, what string, body []byte, want *Transfer) {
	t.Helper()
	got, err := decodeTransfer(body)
	if err != nil {
		t.Errorf("%s %s: %v; want %+v", what, body, err, *want)
		return
	}
	a, b := *got, *want
	if !a.CreatedAt.Equal(b.CreatedAt) || !a.UpdatedAt.Equal(b.UpdatedAt) {
		t.Errorf("%s %s: times %v, %v; want %v, %v", what, body, a.CreatedAt, a.UpdatedAt, b.CreatedAt, b.UpdatedAt)
	}
	a.CreatedAt, a.UpdatedAt, b.CreatedAt, b.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if a != b {
		t.Errorf("%s %s:\n got  %+v\n want %+v", what, body, a, b)
	}
}

// fzCheckTransferFields compares id and amount with the JSON literals of
// obj, when its keys are unambiguous.
func fzCheckTransferFields(t *testing.T, obj []byte, tr *Transfer) {
	t.Helper()
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return
	}
	for k := range m {
		for _, name := range []string{"id", "amount"} {
			if k != name && strings.EqualFold(k, name) {
				return
			}
		}
	}
	if raw, ok := m["id"]; ok && string(raw) != "null" {
		if id, err := strconv.ParseInt(fzUnquote(raw), 10, 64); err != nil || id != tr.ID {
			t.Errorf("ID = %d; the body says %s", tr.ID, m["id"])
		}
	}
	if raw, ok := m["amount"]; ok && string(raw) != "null" && tr.Amount != fzUnquote(raw) {
		t.Errorf("Amount = %q; the body says %s", tr.Amount, raw)
	}
}

// fzUnquote returns a JSON string's value, or any other literal as written.
func fzUnquote(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func FuzzDecodeChiftToken(f *testing.F) {
	for _, b := range []string{
		`{"access_token":"eyJhbGciOiJIUzI1NiJ9.e30.x","token_type":"bearer","expires_in":1800,"expires_on":1741946213}`,
		`{"access_token":"tok","token_type":null,"expires_in":null,"expires_on":null}`,
		`{"access_token":null,"expires_in":1800}`,
		`{"detail":[{"loc":["body","clientId"],"msg":"field required","type":"value_error.missing"}]}`,
	} {
		f.Add([]byte(b))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		defer fzNoPanic(t)
		tok, err := decodeChiftToken(bytes.NewReader(body), fzNow)
		if err != nil {
			if tok != nil {
				t.Errorf("decodeChiftToken returned a token and the error %v", err)
			}
			return
		}
		var probe struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int64  `json:"expires_in"`
			ExpiresOn   int64  `json:"expires_on"`
		}
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&probe); err != nil {
			t.Fatalf("decodeChiftToken accepted %q, which does not decode: %v", body, err)
		}
		if tok.AccessToken == "" || tok.AccessToken != probe.AccessToken || tok.TokenType != "Bearer" {
			t.Errorf("token %q type %q; want %q (non-empty), Bearer", tok.AccessToken, tok.TokenType, probe.AccessToken)
		}
		if want := probe.ExpiresIn > 0 || probe.ExpiresOn > 0; tok.Expiry.IsZero() == want {
			t.Errorf("Expiry = %v for expires_in %d, expires_on %d; want it set = %v", tok.Expiry, probe.ExpiresIn, probe.ExpiresOn, want)
		}
		switch {
		case probe.ExpiresIn > 0:
			// A lifetime counts from when the request was sent: the
			// expiry is later, never earlier, whatever its size.
			if !tok.Expiry.After(fzNow) {
				t.Errorf("Expiry = %v for expires_in %d sent at %v; want a later time", tok.Expiry, probe.ExpiresIn, fzNow)
			}
			// Lifetimes beyond a year are taken as a year: that bound keeps
			// the arithmetic from overflowing.
			want := time.Duration(min(probe.ExpiresIn, int64(365*24*time.Hour/time.Second))) * time.Second
			if got := tok.Expiry.Sub(fzNow); got != want {
				t.Errorf("Expiry is %v after sending; want %v", got, want)
			}
		case probe.ExpiresOn > 0:
			if tok.Expiry.Unix() != probe.ExpiresOn {
				t.Errorf("Expiry = %v; want unix %d", tok.Expiry, probe.ExpiresOn)
			}
		}
	})
}

func FuzzTransactionUnmarshal(f *testing.F) {
	for _, b := range []string{
		`{"created_on":"2024-05-15T12:34:56Z","method":"POST","route":"/consumers/a65f95f4-0000-4000-8000-000000000001/accounting/suppliers","status_code":200,"created_entity_id":"inv_123"}`,
		`{"created_on":"2024-05-15T12:34:56Z","method":"POST","route":"/x","status_code":null,"created_entity_id":null}`,
		`{"message":"The specified transaction could not be found","status":"error"}`,
		`null`,
	} {
		f.Add([]byte(b))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		defer fzNoPanic(t)
		var tx Transaction
		if err := json.Unmarshal(body, &tx); err != nil {
			return
		}
		if tx.InProcess() != (tx.StatusCode == 0) {
			t.Errorf("InProcess() = %v with status %d", tx.InProcess(), tx.StatusCode)
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil && fzPlainKeys(m, "status_code", "created_entity_id") {
			if raw, ok := m["status_code"]; !ok || string(raw) == "null" {
				if tx.StatusCode != 0 {
					t.Errorf("StatusCode = %d for status_code %s; want 0", tx.StatusCode, raw)
				}
			} else if n, err := strconv.Atoi(string(raw)); err == nil && n != tx.StatusCode {
				t.Errorf("StatusCode = %d; the body says %s", tx.StatusCode, raw)
			}
			if raw := m["created_entity_id"]; tx.CreatedEntityID != fzUnquoteOrEmpty(raw) {
				t.Errorf("CreatedEntityID = %q; the body says %s", tx.CreatedEntityID, raw)
			}
		}

		out, err := json.Marshal(tx)
		if err != nil {
			if strings.Contains(err.Error(), "year outside of range") {
				return
			}
			t.Fatalf("json.Marshal(%+v): %v", tx, err)
		}
		var back Transaction
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if !back.CreatedOn.Equal(tx.CreatedOn) {
			t.Errorf("CreatedOn %v after a round trip; want %v", back.CreatedOn, tx.CreatedOn)
		}
		back.CreatedOn, tx.CreatedOn = time.Time{}, time.Time{}
		if back != tx {
			t.Errorf("round trip of %s:\n got  %+v\n want %+v", out, back, tx)
		}
	})
}

// fzPlainKeys: no key of m differs from one of names only in case.
func fzPlainKeys(m map[string]json.RawMessage, names ...string) bool {
	for k := range m {
		for _, name := range names {
			if k != name && strings.EqualFold(k, name) {
				return false
			}
		}
	}
	return true
}

// fzUnquoteOrEmpty returns a JSON string's value, "" for anything else.
func fzUnquoteOrEmpty(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
