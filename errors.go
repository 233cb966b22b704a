package saferetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

// Sentinels for errors.Is. Every error the SDK returns for one of these
// cases is an *APIError or a *RequestError that matches the sentinel.
var (
	// ErrRequestAlreadyProcessed: Chift answered 409 REQUEST_ALREADY_PROCESSED;
	// the request with this key was processed before. APIError.OriginalStatus
	// holds the status the original request produced.
	ErrRequestAlreadyProcessed = errors.New("saferetry: request already processed")

	// ErrRequestInProcess: Chift still reported the original request with
	// this key as in process (409 REQUEST_IN_PROCESS) after the retries were
	// spent. A bare 409 is never read this way: it comes back as the
	// response.
	ErrRequestInProcess = errors.New("saferetry: request still in process")

	// ErrDuplicateClientTransferID: zerohash holds a transfer under this
	// client_transfer_id that is not this create's: other accounts, asset or
	// amount, created before this id was first sent (less
	// TransferClockSkewMargin), or no POST of this create can have been
	// processed. *TransferMismatchError says which. A duplicate answer for
	// this very transfer is resolved by a lookup (OutcomeRecovered).
	ErrDuplicateClientTransferID = errors.New("saferetry: client_transfer_id is not unique")

	// ErrOutcomeUnknown: a request that may have reached the server failed in
	// a way that leaves its effect unknown. Keep the key (or client
	// transfer id) the error carries and reconcile with it.
	ErrOutcomeUnknown = errors.New("saferetry: outcome unknown")

	// ErrInvalidKey: the idempotency key on the request is not acceptable.
	ErrInvalidKey = errors.New("saferetry: invalid idempotency key")

	// ErrKeyExpired: the create was first sent so long ago that the server
	// may have forgotten its key (zerohash keeps a client_transfer_id
	// unique for 72 h, its request-ids guide; Chift keeps request ids for
	// 6 months), so sending it again could create a second one. It comes
	// inside an *OutcomeError with the key, and so also matches
	// ErrOutcomeUnknown; retrying cannot settle it. Reconcile by hand: look
	// the key up in the API's own records (Transfers.FindByClientTransferID,
	// Chift.LookupTransaction) before creating anything under a new key.
	ErrKeyExpired = errors.New("saferetry: idempotency key may have expired")
)

// maxErrorBody bounds how much of a response body the SDK reads to build an
// APIError or to classify a response.
const maxErrorBody = 1 << 20

// APIError is a non-2xx answer from the server, decoded from the body shapes
// of Chift, zerohash and RFC 7807 problem documents.
type APIError struct {
	StatusCode int    // HTTP status
	Code       string // Chift "error_code", e.g. "REQUEST_ALREADY_PROCESSED"
	Message    string // "message", or a problem document's "title", or zerohash's string "error"
	Detail     string // "detail" when it is a string
	// Details holds "detail" when it is an array of validation items (Chift
	// 422) and zerohash's "errors" array, one entry per item.
	Details []ErrorDetail
	// Key is the idempotency key the request carried (Chift's
	// X-Chift-Client-RequestId, the Idempotency-Key header), "" if none.
	Key string
	// RequestID is the request id the request carried when its header is
	// not deduplicated on (zerohash's X-REQUEST-ID), "" otherwise.
	RequestID string
	// ServerRequestID is the X-Request-Id header of the answer, if any
	// (zerohash echoes the request's).
	ServerRequestID string
	// OriginalStatus is, for REQUEST_ALREADY_PROCESSED, the status in
	// "Request already processed: 200"; 0 otherwise.
	OriginalStatus int
	// Body is the response body as read, at most 1 MiB; Truncated says
	// whether more was there.
	Body      []byte
	Truncated bool

	kind error // the sentinel this error matches, if any
}

// ErrorDetail is one validation item: Chift's {loc, msg, type} or one
// message of zerohash's "errors" array (Msg only).
type ErrorDetail struct {
	Loc  []any           `json:"loc,omitempty"`
	Msg  string          `json:"msg"`
	Type string          `json:"type,omitempty"`
	Raw  json.RawMessage `json:"-"` // the item as received
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "saferetry: HTTP %d", e.StatusCode)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Detail != "" {
		b.WriteString(" (" + e.Detail + ")")
	}
	for i, d := range e.Details {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Details)-i)
			break
		}
		b.WriteString("; " + d.String())
	}
	writeIDs(&b, e.Key, e.RequestID)
	return b.String()
}

func (d ErrorDetail) String() string {
	if len(d.Loc) == 0 {
		return d.Msg
	}
	parts := make([]string, len(d.Loc))
	for i, p := range d.Loc {
		parts[i] = fmt.Sprint(p)
	}
	return strings.Join(parts, ".") + ": " + d.Msg
}

// Unwrap lets errors.Is match the sentinel for this error's kind.
func (e *APIError) Unwrap() error { return e.kind }

// CheckResponse returns nil for a 2xx response and an *APIError otherwise.
// It reads at most 1 MiB of the body and restores it, so the caller can read
// the whole body afterwards.
func CheckResponse(resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	body, truncated, err := peekBody(resp, maxErrorBody)
	apiErr := parseAPIError(resp.StatusCode, body, truncated)
	apiErr.ServerRequestID = resp.Header.Get("X-Request-Id")
	if resp.Request != nil {
		apiErr.Key, apiErr.RequestID = keysOfRequest(resp.Request)
	}
	if err != nil && len(body) == 0 {
		apiErr.Message = "reading error body: " + err.Error()
	}
	return apiErr
}

// peekBody reads up to limit bytes of resp.Body and puts them back in front
// of whatever is left, so the body stays readable from the start.
func peekBody(resp *http.Response, limit int64) (body []byte, truncated bool, err error) {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil, false, nil
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if int64(len(body)) > limit {
		truncated = true
	}
	rest := resp.Body
	resp.Body = &replayBody{Reader: io.MultiReader(bytes.NewReader(body), rest), closer: rest}
	if truncated {
		body = body[:limit]
	}
	return body, truncated, err
}

type replayBody struct {
	io.Reader
	closer io.Closer
}

func (r *replayBody) Close() error { return r.closer.Close() }

// errorBody is the union of the error shapes of Chift, zerohash and RFC 7807.
type errorBody struct {
	Status    json.RawMessage `json:"status"`
	Message   string          `json:"message"`
	Detail    json.RawMessage `json:"detail"`
	ErrorCode string          `json:"error_code"`
	Error     json.RawMessage `json:"error"`  // zerohash: true, or a string
	Errors    json.RawMessage `json:"errors"` // zerohash: ["...", ...]
	Title     string          `json:"title"`  // RFC 7807
}

// parseAPIError decodes what it can; a body that is not JSON (an HTML error
// page, say) leaves only the status and a short excerpt as the message.
func parseAPIError(status int, body []byte, truncated bool) *APIError {
	e := &APIError{StatusCode: status, Body: body, Truncated: truncated}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		e.Message = excerpt(body)
		e.kind = kindOf(e)
		return e
	}
	e.Code = eb.ErrorCode
	e.Message = firstNonEmpty(eb.Message, eb.Title, jsonString(eb.Error))
	e.Detail, e.Details = parseDetail(eb.Detail)
	e.Details = append(e.Details, parseStringList(eb.Errors)...)
	if e.Code == codeAlreadyProcessed {
		e.OriginalStatus = originalStatus(e.Message)
	}
	e.kind = kindOf(e)
	return e
}

const (
	codeAlreadyProcessed = "REQUEST_ALREADY_PROCESSED"
	codeInProcess        = "REQUEST_IN_PROCESS"
)

func kindOf(e *APIError) error {
	switch {
	case e.Code == codeAlreadyProcessed:
		return ErrRequestAlreadyProcessed
	case e.Code == codeInProcess:
		return ErrRequestInProcess
	case strings.Contains(e.Message, "unique client_transfer_id"):
		return ErrDuplicateClientTransferID
	}
	return nil
}

// originalStatus reads the status out of "Request already processed: 200".
func originalStatus(msg string) int {
	i := strings.LastIndexByte(msg, ':')
	if i < 0 {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(msg[i+1:]))
	if err != nil || n < 100 || n > 999 {
		return 0
	}
	return n
}

func parseDetail(raw json.RawMessage) (string, []ErrorDetail) {
	if s := jsonString(raw); s != "" {
		return s, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return "", nil
	}
	details := make([]ErrorDetail, 0, len(items))
	for _, item := range items {
		var d ErrorDetail
		if json.Unmarshal(item, &d) != nil {
			d.Msg = jsonString(item)
		}
		d.Raw = item
		details = append(details, d)
	}
	return "", details
}

func parseStringList(raw json.RawMessage) []ErrorDetail {
	var msgs []json.RawMessage
	if json.Unmarshal(raw, &msgs) != nil {
		return nil
	}
	details := make([]ErrorDetail, 0, len(msgs))
	for _, m := range msgs {
		details = append(details, ErrorDetail{Msg: jsonString(m), Raw: m})
	}
	return details
}

// jsonString returns raw as a Go string if it is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// excerpt keeps an error string short and printable when the body is not
// JSON: an HTML error page becomes its title, anything else its first 200
// printable bytes.
func excerpt(body []byte) string {
	const max = 200
	if title := htmlTitle(body); title != "" {
		body = []byte(title)
	}
	s := strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' ' // control characters (C0 and C1) must not reach a terminal
		}
		return r
	}, strings.ToValidUTF8(string(body[:min(len(body), max)]), ""))
	return strings.Join(strings.Fields(s), " ")
}

// htmlTitle returns the text of the first <title> element, if any.
func htmlTitle(body []byte) string {
	lower := asciiLower(body)
	start := bytes.Index(lower, []byte("<title>"))
	if start < 0 {
		return ""
	}
	start += len("<title>")
	end := bytes.Index(lower[start:], []byte("</title>"))
	if end < 0 {
		return ""
	}
	return string(body[start : start+end])
}

// asciiLower lowers ASCII letters only, so every index into the result is
// an index into b (bytes.ToLower can change the length of invalid UTF-8).
func asciiLower(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// RequestError is a failure of the transport itself: the request could not
// be carried to an answer. It says which key the request carried, how many
// attempts were made and whether any of them may have reached the server.
// Its message leaves out Method and URL, which the *url.Error that
// http.Client.Do wraps it in names.
type RequestError struct {
	Method string
	URL    string // without user info, query values REDACTED
	Key    string // the idempotency key the request carried, "" if none
	// RequestID is the request id the request carried when its header is
	// not deduplicated on (zerohash's X-REQUEST-ID), "" otherwise.
	RequestID string
	Attempts  int
	MaybeSent bool // true if an attempt may have reached the server
	// BudgetExhausted: a retry was due but the retry budget was spent.
	BudgetExhausted bool
	Err             error
}

func (e *RequestError) Error() string {
	var b strings.Builder
	// No method nor URL: http.Client.Do wraps this error in a *url.Error
	// that names both, and a message should name the URL once.
	fmt.Fprintf(&b, "saferetry: request failed after %d attempt(s)", e.Attempts)
	writeIDs(&b, e.Key, e.RequestID)
	if e.MaybeSent {
		b.WriteString(", outcome unknown")
	}
	if e.BudgetExhausted {
		b.WriteString(", retry budget exhausted")
	}
	b.WriteString(": " + e.Err.Error())
	return b.String()
}

// Timeout reports whether a deadline ended the request: the client's
// Timeout, a context deadline or the attempt timeout. With it
// *url.Error.Timeout and os.IsTimeout-style checks keep working.
func (e *RequestError) Timeout() bool {
	var te interface{ Timeout() bool }
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, ErrAttemptTimeout) ||
		(errors.As(e.Err, &te) && te.Timeout())
}

// Unwrap returns the cause, ErrOutcomeUnknown when an attempt may have
// reached the server, and ErrRetryBudgetExhausted when the budget cut the
// retries short.
func (e *RequestError) Unwrap() []error {
	errs := []error{e.Err}
	if e.MaybeSent {
		errs = append(errs, ErrOutcomeUnknown)
	}
	if e.BudgetExhausted {
		errs = append(errs, ErrRetryBudgetExhausted)
	}
	return errs
}

// provenUnsent: err comes from the Transport and says that no attempt can
// have reached the server. Any other error, one whose type a wrapper
// replaced included, proves nothing.
func provenUnsent(err error) bool {
	var reqErr *RequestError
	return errors.As(err, &reqErr) && !reqErr.MaybeSent
}

// createKeyed is an error of a create that knows the create's idempotency
// key: Chift's request id or zerohash's client_transfer_id.
type createKeyed interface{ createKey() string }

func (e *OutcomeError) createKey() string              { return e.Key }
func (e *NotCreatedError) createKey() string           { return e.ClientTransferID }
func (e *TransferMismatchError) createKey() string     { return e.ClientTransferID }
func (e *ChiftRequestIDReusedError) createKey() string { return e.RequestID }
func (e *ChiftRequestIDSpentError) createKey() string  { return e.RequestID }
func (e *ChiftRateLimitedError) createKey() string     { return e.RequestID }
func (e *refusedCreate) createKey() string             { return e.key }

// refusedCreate is a create's definite refusal, err as the server gave it,
// with the create's key for KeyFromError; its message is err's.
type refusedCreate struct {
	key string
	err error
}

func (e *refusedCreate) Error() string { return e.err.Error() }
func (e *refusedCreate) Unwrap() error { return e.err }

// KeyFromError returns the idempotency key carried by the request that
// produced err, or "" if err does not say. For an error of Chift.Create or
// Transfers.Create it is the create's key (request id, client_transfer_id).
func KeyFromError(err error) string {
	// A create's error first: it may wrap the error of one attempt, whose
	// key is that attempt's, not the create's (under zerohash, none).
	var create createKeyed
	if errors.As(err, &create) {
		return create.createKey()
	}
	var reqErr *RequestError
	if errors.As(err, &reqErr) && reqErr.Key != "" {
		return reqErr.Key
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Key
	}
	return ""
}

// RequestIDFromError returns the request id carried by the request that
// produced err when its header is not deduplicated on (zerohash's
// X-REQUEST-ID), or "" if err does not say. An idempotency key is
// KeyFromError's; a request carries one or the other, never both, but the
// error of a Transfers.Create names the create's client_transfer_id and
// holds the X-REQUEST-ID of its last request.
func RequestIDFromError(err error) string {
	var reqErr *RequestError
	if errors.As(err, &reqErr) && reqErr.RequestID != "" {
		return reqErr.RequestID
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.RequestID
	}
	return ""
}

// writeIDs appends the key or request id an error names, quoted.
func writeIDs(b *strings.Builder, key, requestID string) {
	if key != "" {
		fmt.Fprintf(b, " [key %q]", key)
	}
	if requestID != "" {
		fmt.Fprintf(b, " [request id %q]", requestID)
	}
}

// OutcomeError: a create could not learn whether it happened. It matches
// ErrOutcomeUnknown. Keep Key, the idempotency key (Chift's request id or
// zerohash's client_transfer_id), and look the outcome up with it later
// before trying again.
type OutcomeError struct {
	Key    string
	Reason string
	Err    error // the last failure, if any
}

func (e *OutcomeError) Error() string {
	msg := fmt.Sprintf("saferetry: outcome unknown for key %q: %s", e.Key, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *OutcomeError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrOutcomeUnknown}
	}
	return []error{ErrOutcomeUnknown, e.Err}
}
