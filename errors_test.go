package saferetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// countingBody is a response body that records how often it was closed.
type countingBody struct {
	io.Reader
	closes int
}

func (b *countingBody) Close() error {
	b.closes++
	return nil
}

func newResponse(status int, body []byte) (*http.Response, *countingBody) {
	cb := &countingBody{Reader: bytes.NewReader(body)}
	resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: cb}
	return resp, cb
}

// assertBodyRestored checks that resp.Body still yields the whole original
// body and that closing it closes the original exactly once.
func assertBodyRestored(t *testing.T, resp *http.Response, orig *countingBody, want []byte) {
	t.Helper()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading restored body: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("restored body: got %d bytes, want %d bytes (equal=%v)", len(got), len(want), bytes.Equal(got, want))
	}
	if orig.closes != 0 {
		t.Errorf("original body closed %d times before the caller closed it", orig.closes)
	}
	if err := resp.Body.Close(); err != nil {
		t.Errorf("closing restored body: %v", err)
	}
	if orig.closes != 1 {
		t.Errorf("original body closed %d times after Close, want 1", orig.closes)
	}
}

var allSentinels = []error{ErrRequestAlreadyProcessed, ErrRequestInProcess, ErrDuplicateClientTransferID, ErrOutcomeUnknown}

func TestCheckResponseSuccess(t *testing.T) {
	for _, status := range []int{200, 201, 204} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			body := []byte(`{"id":"inv_1"}`)
			resp, orig := newResponse(status, body)
			if err := CheckResponse(resp); err != nil {
				t.Fatalf("CheckResponse(%d) = %v, want nil", status, err)
			}
			assertBodyRestored(t, resp, orig, body)
		})
	}
}

func TestCheckResponseErrors(t *testing.T) {
	const chiftAlreadyProcessed = `{
    "status": "error",
    "message": "Request already processed: 200",
    "detail": "Request with same client request id {client_request_id} was already successfully processed",
    "error_code": "REQUEST_ALREADY_PROCESSED"
}`
	const chiftInProcess = `{
    "status": "error",
    "message": "Request is in processing",
    "detail": "Request with same client request id {client_request_id} is currently processed",
    "error_code": "REQUEST_IN_PROCESS"
}`
	validationItems := []string{
		`{"loc":["body","amount"],"msg":"field required","type":"value_error.missing","input":null}`,
		`{"loc": ["body", "lines", 0, "tax_rate"], "msg": "value is not a valid float", "type": "type_error.float", "input": "x"}`,
	}
	chift422 := `{"message":"Validation error","status":"error","detail":[` + strings.Join(validationItems, ",") + `]}`
	html502 := "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n" +
		strings.Repeat("<p>upstream connect error or disconnect/reset before headers</p>\n", 20) + "</body>\n</html>\n"
	huge := bytes.Repeat([]byte("x"), maxErrorBody+4096)
	exact := bytes.Repeat([]byte("y"), maxErrorBody)

	tests := []struct {
		name   string
		status int
		body   []byte
		check  func(t *testing.T, e *APIError)
		is     error // the one sentinel that must match; nil: none
	}{
		{
			name: "chift already processed", status: 409, body: []byte(chiftAlreadyProcessed),
			is: ErrRequestAlreadyProcessed,
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Code", e.Code, "REQUEST_ALREADY_PROCESSED")
				wantField(t, "Message", e.Message, "Request already processed: 200")
				wantField(t, "Detail", e.Detail, "Request with same client request id {client_request_id} was already successfully processed")
				wantInt(t, "OriginalStatus", e.OriginalStatus, 200)
				wantInt(t, "len(Details)", len(e.Details), 0)
			},
		},
		{
			name: "chift already processed 201", status: 409,
			body: []byte(`{"status":"error","message":"Request already processed: 201","error_code":"REQUEST_ALREADY_PROCESSED"}`),
			is:   ErrRequestAlreadyProcessed,
			check: func(t *testing.T, e *APIError) {
				wantInt(t, "OriginalStatus", e.OriginalStatus, 201)
			},
		},
		{
			name: "chift in process", status: 409, body: []byte(chiftInProcess),
			is: ErrRequestInProcess,
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Code", e.Code, "REQUEST_IN_PROCESS")
				wantField(t, "Message", e.Message, "Request is in processing")
				wantInt(t, "OriginalStatus", e.OriginalStatus, 0)
			},
		},
		{
			name: "chift business 409", status: 409,
			body: []byte(`{"message": "The invoice number is already used in the accounting system.", "status": "error", "error_code": "ERROR_INVOICE_NUMBER_ALREADY_USED"}`),
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Code", e.Code, "ERROR_INVOICE_NUMBER_ALREADY_USED")
				wantField(t, "Message", e.Message, "The invoice number is already used in the accounting system.")
				wantInt(t, "OriginalStatus", e.OriginalStatus, 0)
			},
		},
		{
			name: "chift 422 validation", status: 422, body: []byte(chift422),
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, "Validation error")
				wantField(t, "Detail", e.Detail, "")
				if len(e.Details) != 2 {
					t.Fatalf("len(Details) = %d, want 2: %+v", len(e.Details), e.Details)
				}
				wantDetail(t, e.Details[0], []any{"body", "amount"}, "field required", "value_error.missing", validationItems[0])
				wantDetail(t, e.Details[1], []any{"body", "lines", float64(0), "tax_rate"}, "value is not a valid float", "type_error.float", validationItems[1])
				if s := e.Details[1].String(); s != "body.lines.0.tax_rate: value is not a valid float" {
					t.Errorf("Details[1].String() = %q", s)
				}
			},
		},
		{
			name: "zerohash duplicate client_transfer_id", status: 400,
			body: []byte(`{"error":true,"message":"Request does not contain an unique client_transfer_id"}`),
			is:   ErrDuplicateClientTransferID,
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, "Request does not contain an unique client_transfer_id")
				wantField(t, "Code", e.Code, "")
			},
		},
		{
			name: "zerohash 400 errors list", status: 400,
			body: []byte(`{"errors":["body/amount must be >= 0","body/asset is required"]}`),
			check: func(t *testing.T, e *APIError) {
				if len(e.Details) != 2 {
					t.Fatalf("len(Details) = %d, want 2: %+v", len(e.Details), e.Details)
				}
				wantField(t, "Details[0].Msg", e.Details[0].Msg, "body/amount must be >= 0")
				wantField(t, "Details[1].Msg", e.Details[1].Msg, "body/asset is required")
				wantField(t, "Details[1].Raw", string(e.Details[1].Raw), `"body/asset is required"`)
			},
		},
		{
			name: "zerohash 404 string error", status: 404, body: []byte(`{"error":"Not Found"}`),
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, "Not Found")
			},
		},
		{
			name: "rfc 7807 problem", status: 409,
			body: []byte(`{"type":"https://example.com/idempotency","title":"A request is outstanding for this Idempotency-Key","status":409,"detail":"retry later"}`),
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, "A request is outstanding for this Idempotency-Key")
				wantField(t, "Detail", e.Detail, "retry later")
				wantField(t, "Code", e.Code, "")
			},
		},
		{
			name: "html 502", status: 502, body: []byte(html502),
			check: func(t *testing.T, e *APIError) {
				if strings.ContainsAny(e.Message, "\r\n\t") {
					t.Errorf("Message has control characters: %q", e.Message)
				}
				if len(e.Message) == 0 || len(e.Message) > 200 {
					t.Errorf("len(Message) = %d, want 1..200: %q", len(e.Message), e.Message)
				}
				if e.Message != "502 Bad Gateway" {
					t.Errorf("Message = %q, want the page's title", e.Message)
				}
			},
		},
		{
			name: "empty body", status: 500, body: nil,
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, "")
				wantInt(t, "len(Body)", len(e.Body), 0)
				if e.Truncated {
					t.Error("Truncated = true for an empty body")
				}
			},
		},
		{
			name: "truncated json", status: 500, body: []byte(`{"status":"error","mess`),
			check: func(t *testing.T, e *APIError) {
				wantField(t, "Message", e.Message, `{"status":"error","mess`)
				wantField(t, "Code", e.Code, "")
			},
		},
		{
			name: "body larger than 1 MiB", status: 500, body: huge,
			check: func(t *testing.T, e *APIError) {
				wantInt(t, "len(Body)", len(e.Body), 1<<20)
				if !e.Truncated {
					t.Error("Truncated = false, want true")
				}
				if len(e.Message) > 200 {
					t.Errorf("len(Message) = %d, want <= 200", len(e.Message))
				}
			},
		},
		{
			name: "body of exactly 1 MiB", status: 500, body: exact,
			check: func(t *testing.T, e *APIError) {
				wantInt(t, "len(Body)", len(e.Body), 1<<20)
				if e.Truncated {
					t.Error("Truncated = true for a body of exactly 1 MiB")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, orig := newResponse(tt.status, tt.body)
			err := CheckResponse(resp)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("CheckResponse = %#v, want *APIError", err)
			}
			wantInt(t, "StatusCode", apiErr.StatusCode, tt.status)
			if len(tt.body) <= maxErrorBody && !bytes.Equal(apiErr.Body, tt.body) {
				t.Errorf("APIError.Body differs from the response body")
			}
			for _, sentinel := range allSentinels {
				if got, want := errors.Is(err, sentinel), sentinel == tt.is; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", sentinel, got, want)
				}
			}
			tt.check(t, apiErr)
			assertBodyRestored(t, resp, orig, tt.body)
		})
	}
}

func TestCheckResponseRequestIDs(t *testing.T) {
	resp, orig := newResponse(500, []byte(`{"error":"Internal Server Error"}`))
	resp.Header.Set("X-Request-Id", "srv-123")
	req, err := http.NewRequest(http.MethodPost, "https://api.example/transfers", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(DefaultRequestIDHeader, "key-abc")
	resp.Request = req

	var apiErr *APIError
	if !errors.As(CheckResponse(resp), &apiErr) {
		t.Fatal("CheckResponse did not return an *APIError")
	}
	wantField(t, "ServerRequestID", apiErr.ServerRequestID, "srv-123")
	wantField(t, "Key", apiErr.Key, "key-abc")
	wantField(t, "RequestID", apiErr.RequestID, "")
	wantField(t, "Message", apiErr.Message, "Internal Server Error")
	if !strings.Contains(apiErr.Error(), `[key "key-abc"]`) {
		t.Errorf("Error() = %q, want it to carry the key", apiErr.Error())
	}
	assertBodyRestored(t, resp, orig, []byte(`{"error":"Internal Server Error"}`))
}

func TestAPIErrorMessage(t *testing.T) {
	details := func(n int) []ErrorDetail {
		ds := make([]ErrorDetail, n)
		for i := range ds {
			ds[i] = ErrorDetail{Msg: fmt.Sprintf("problem %d", i+1)}
		}
		return ds
	}
	tests := []struct {
		name    string
		err     *APIError
		want    []string
		notWant []string
	}{
		{
			name: "code and message",
			err:  &APIError{StatusCode: 409, Code: "REQUEST_IN_PROCESS", Message: "Request is in processing"},
			want: []string{"REQUEST_IN_PROCESS", "Request is in processing"},
		},
		{
			name:    "five details show three",
			err:     &APIError{StatusCode: 400, Details: details(5)},
			want:    []string{"problem 1", "problem 2", "problem 3", "and 2 more"},
			notWant: []string{"problem 4", "problem 5"},
		},
		{
			name:    "three details show all",
			err:     &APIError{StatusCode: 400, Details: details(3)},
			want:    []string{"problem 1", "problem 2", "problem 3"},
			notWant: []string{"more"},
		},
		{
			name:    "key",
			err:     &APIError{StatusCode: 500, Message: "boom", Key: "K-1"},
			want:    []string{"boom", `[key "K-1"]`},
			notWant: []string{"[request id"},
		},
		{
			name:    "request id",
			err:     &APIError{StatusCode: 500, Message: "boom", RequestID: "R-1"},
			want:    []string{"boom", `[request id "R-1"]`},
			notWant: []string{"[key"},
		},
		{
			name:    "neither",
			err:     &APIError{StatusCode: 500, Message: "boom"},
			notWant: []string{"[request id", "[key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			prefix := fmt.Sprintf("saferetry: HTTP %d", tt.err.StatusCode)
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("Error() = %q, want prefix %q", msg, prefix)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Error() = %q, want it to contain %q", msg, w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("Error() = %q, want it not to contain %q", msg, w)
				}
			}
		})
	}
}

func TestOriginalStatus(t *testing.T) {
	tests := []struct {
		msg  string
		want int
	}{
		{"Request already processed: 200", 200},
		{"Request already processed: 201", 201},
		{"Request already processed:204 ", 204},
		{"Request already processed: abc", 0},
		{"no colon", 0},
		{"Request already processed: 99999", 0},
		{"Request already processed: 42", 0},
		{"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			if got := originalStatus(tt.msg); got != tt.want {
				t.Errorf("originalStatus(%q) = %d, want %d", tt.msg, got, tt.want)
			}
		})
	}
}

func TestRequestError(t *testing.T) {
	tests := []struct {
		name      string
		err       *RequestError
		wantIs    []error
		wantNotIs []error
	}{
		{
			name: "maybe sent",
			err: &RequestError{Method: "POST", URL: "https://api.example/transfers", Key: "key-1",
				Attempts: 3, MaybeSent: true, Err: context.DeadlineExceeded},
			wantIs: []error{ErrOutcomeUnknown, context.DeadlineExceeded},
		},
		{
			name: "not sent",
			err: &RequestError{Method: "POST", URL: "https://api.example/transfers", Key: "key-1",
				Attempts: 1, MaybeSent: false, Err: context.DeadlineExceeded},
			wantIs:    []error{context.DeadlineExceeded},
			wantNotIs: []error{ErrOutcomeUnknown},
		},
		{
			name: "not sent, other cause",
			err: &RequestError{Method: "GET", URL: "https://api.example/x", Key: "key-1",
				Attempts: 2, Err: io.ErrUnexpectedEOF},
			wantIs:    []error{io.ErrUnexpectedEOF},
			wantNotIs: []error{ErrOutcomeUnknown, context.DeadlineExceeded},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			if !strings.HasPrefix(msg, "saferetry: ") {
				t.Errorf("Error() = %q, want prefix %q", msg, "saferetry: ")
			}
			for _, w := range []string{fmt.Sprintf("%d attempt", tt.err.Attempts), tt.err.Key, tt.err.Err.Error()} {
				if !strings.Contains(msg, w) {
					t.Errorf("Error() = %q, want it to contain %q", msg, w)
				}
			}
			for _, target := range tt.wantIs {
				if !errors.Is(tt.err, target) {
					t.Errorf("errors.Is(err, %v) = false, want true", target)
				}
				if !errors.Is(fmt.Errorf("wrapped: %w", tt.err), target) {
					t.Errorf("errors.Is(wrapped err, %v) = false, want true", target)
				}
			}
			for _, target := range tt.wantNotIs {
				if errors.Is(tt.err, target) {
					t.Errorf("errors.Is(err, %v) = true, want false", target)
				}
			}
		})
	}
}

func TestKeyFromError(t *testing.T) {
	reqErr := &RequestError{Method: "POST", URL: "https://api.example", Key: "req-key", Attempts: 1, Err: io.EOF}
	apiErr := &APIError{StatusCode: 409, Key: "api-key", RequestID: "not-a-key"}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"request error", reqErr, "req-key"},
		{"api error", apiErr, "api-key"},
		{"wrapped request error", fmt.Errorf("creating invoice: %w", reqErr), "req-key"},
		{"wrapped api error", fmt.Errorf("creating invoice: %w", apiErr), "api-key"},
		{"request error in url.Error", &url.Error{Op: "Post", URL: "https://api.example", Err: reqErr}, "req-key"},
		{"api error in url.Error", &url.Error{Op: "Post", URL: "https://api.example", Err: apiErr}, "api-key"},
		{"plain error", errors.New("boom"), ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KeyFromError(tt.err); got != tt.want {
				t.Errorf("KeyFromError(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestValidateKey(t *testing.T) {
	valid := []struct{ name, key string }{
		{"uuid", "8e03978e-40d5-43e8-bc93-6894a57f9324"},
		{"255 chars", strings.Repeat("k", 255)},
		{"printable punctuation", `inv_2024/01:#42!~"'()[]{}<>=?@\|^` + "`"},
		{"single char", "a"},
	}
	for _, tt := range valid {
		t.Run("valid "+tt.name, func(t *testing.T) {
			if err := ValidateKey(tt.key); err != nil {
				t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
			}
		})
	}
	invalid := []struct {
		name, key string
		problem   string // what the message must name
	}{
		{"empty", "", "empty"},
		{"blank", "   ", "empty"},
		{"256 chars", strings.Repeat("k", 256), "256 characters"},
		{"newline", "abc\ndef", "0xa"},
		{"nul", "abc\x00", "0x0"},
		{"del", "abc\x7f", "0x7f"},
		{"non-ascii", "café", "printable ASCII"},
	}
	for _, tt := range invalid {
		t.Run("invalid "+tt.name, func(t *testing.T) {
			err := ValidateKey(tt.key)
			if err == nil {
				t.Fatalf("ValidateKey(%q) = nil, want an error", tt.key)
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("errors.Is(%v, ErrInvalidKey) = false", err)
			}
			if !strings.HasPrefix(err.Error(), "saferetry: ") {
				t.Errorf("error %q does not start with %q", err, "saferetry: ")
			}
			if !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("error %q does not name the problem %q", err, tt.problem)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "3", 3 * time.Second, true},
		{"padded seconds", " 3 ", 3 * time.Second, true},
		{"zero", "0", 0, true},
		{"negative", "-1", 0, false},
		{"garbage", "abc", 0, false},
		{"empty", "", 0, false},
		{"fraction", "1.5", 0, false},
		{"http date in 5s", now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, true},
		{"http date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"large number capped", "100000000", 24 * time.Hour, true},
		{"number beyond int64 capped", "99999999999999999999", 24 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.value, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.value, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func wantField(t *testing.T, name, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func wantInt(t *testing.T, name string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %d, want %d", name, got, want)
	}
}

func wantDetail(t *testing.T, d ErrorDetail, loc []any, msg, typ, raw string) {
	t.Helper()
	if !reflect.DeepEqual(d.Loc, loc) {
		t.Errorf("Loc = %#v, want %#v", d.Loc, loc)
	}
	wantField(t, "Msg", d.Msg, msg)
	wantField(t, "Type", d.Type, typ)
	if !bytes.Equal(d.Raw, json.RawMessage(raw)) {
		t.Errorf("Raw = %s, want %s", d.Raw, raw)
	}
}
