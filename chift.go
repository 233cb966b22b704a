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
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// ErrTransactionNotFound: Chift's monitoring endpoint knows no request with
// that client request id (yet).
var ErrTransactionNotFound = errors.New("saferetry: Chift transaction not found")

// ChiftService is Chift's monitoring lookup and creates that survive a
// lost response.
type ChiftService struct {
	client *Client
}

// Transaction is what Chift's monitoring endpoint says about a request.
type Transaction struct {
	CreatedOn  time.Time `json:"created_on"`
	Method     string    `json:"method"`
	Route      string    `json:"route"`
	StatusCode int       `json:"status_code"` // 0 while the request is still in process
	// CreatedEntityID is the id of the entity the request created; empty
	// when it created none.
	CreatedEntityID string `json:"created_entity_id"`
}

// InProcess: the request is recorded but has no status yet.
func (t *Transaction) InProcess() bool { return t.StatusCode == 0 }

// UnmarshalJSON takes null status_code and created_entity_id as zero.
func (t *Transaction) UnmarshalJSON(data []byte) error {
	type plain Transaction
	var raw struct {
		plain
		StatusCode      *int    `json:"status_code"`
		CreatedEntityID *string `json:"created_entity_id"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*t = Transaction(raw.plain)
	if raw.StatusCode != nil {
		t.StatusCode = *raw.StatusCode
	}
	t.CreatedEntityID = deref(raw.CreatedEntityID)
	return nil
}

// LookupTransaction asks GET /consumers/{consumer}/connections/{connection}/
// transactions?client_request_id= what became of a request. An unknown id
// is an *APIError that matches ErrTransactionNotFound.
func (s *ChiftService) LookupTransaction(ctx context.Context, consumerID, connectionID, clientRequestID string) (*Transaction, error) {
	if err := requireIDs(map[string]string{"consumer id": consumerID, "connection id": connectionID}); err != nil {
		return nil, err
	}
	if err := ValidateKey(clientRequestID); err != nil {
		return nil, err
	}
	path := "consumers/" + url.PathEscape(consumerID) + "/connections/" + url.PathEscape(connectionID) +
		"/transactions?client_request_id=" + url.QueryEscape(clientRequestID)
	var t Transaction
	_, err := s.client.DoJSON(ctx, http.MethodGet, path, nil, &t)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		apiErr.kind = ErrTransactionNotFound
	}
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func requireIDs(ids map[string]string) error {
	for name, v := range ids {
		if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "/?#") {
			return fmt.Errorf("saferetry: %s %q must be a non-empty path segment", name, v)
		}
	}
	return nil
}

// ChiftCreate is one create call: a POST of Body to Path, under the
// consumer and connection whose monitoring log can tell its outcome.
type ChiftCreate struct {
	Path string // relative to the base URL, e.g. "consumers/{id}/invoicing/invoices"
	// Body is the JSON body: a value that encoding/json encodes (a struct,
	// a map), or JSON already encoded, as json.RawMessage or []byte, sent
	// as it is. Create refuses, before anything is sent, a nil Body, one
	// that encodes to JSON null, bytes that are not valid JSON, a string
	// (it would go as a JSON string: pass encoded JSON as json.RawMessage)
	// and an io.Reader (encoding/json would send "{}"). Chift would answer
	// each with a 422, which spends the request id.
	Body         any
	ConsumerID   string // needed to look the request up after a lost answer
	ConnectionID string
	// RequestID is the X-Chift-Client-RequestId; empty: a UUIDv4. Reuse
	// one on purpose to finish a create an earlier process began.
	RequestID string
	// FirstSentAt is, when this call resumes such a create, when it was
	// first sent. Chift keeps request ids for 6 months; past that a
	// repost could create a second entity, so Create refuses it. A
	// FirstSentAt more than a minute ahead of the clock is refused as a
	// mistake.
	FirstSentAt time.Time
}

// ChiftRequestIDRetention is how long Chift remembers a request id.
// Create refuses to resume a create first sent longer ago, less a day.
const ChiftRequestIDRetention = 180 * 24 * time.Hour

// chiftFutureTolerance is how far ahead of the clock FirstSentAt may be:
// clocks step back by a little, a create is not sent an hour from now.
const chiftFutureTolerance = time.Minute

// ChiftCreated is the result of Create.
type ChiftCreated struct {
	RequestID  string
	StatusCode int             // the create's status, or the original status when recovered
	EntityID   string          // the answer's "id", or the created_entity_id when recovered
	Body       json.RawMessage // the answer's body; nil when recovered
	// Recovered: the answer was lost (or the request id had been used
	// before), and the outcome was read from the monitoring endpoint.
	Recovered bool
}

// chiftPollLimit bounds the monitoring polls of one Create beside its
// context: longer than Chift's own ~31 s connector back-off.
const chiftPollLimit = 2 * time.Minute

// Create posts a create request exactly once. When the answer of the first
// attempt is lost and a retry hears 409 REQUEST_ALREADY_PROCESSED (or the
// request id was used before), it asks the monitoring endpoint for the
// outcome and returns the created entity's id and the original status,
// marked Recovered. While the request is still in process it polls with
// backoff. When the transport's retries end on a server error, it posts
// again with the same request id (at most 3 posts: the id makes that
// safe). If the outcome cannot be learned, the error matches
// ErrOutcomeUnknown and carries the request id.
func (s *ChiftService) Create(ctx context.Context, in ChiftCreate) (*ChiftCreated, error) {
	body, err := in.prepare(time.Now())
	if err != nil {
		return nil, err
	}
	wait := s.client.transport.cfg.backOff(0)
	for posts := 1; ; posts++ {
		created, again, err := s.post(ctx, in, body)
		if !again || posts == maxChiftPosts {
			return s.settle(ctx, in, created, err)
		}
		if sleep(ctx, wait.NextBackOff()) != nil {
			return nil, err
		}
	}
}

// settle asks the monitoring log before giving up on a post whose outcome
// the transport could not learn (a timeout after sending, say): the log may
// know it was processed.
func (s *ChiftService) settle(ctx context.Context, in ChiftCreate, created *ChiftCreated, err error) (*ChiftCreated, error) {
	var asked *OutcomeError
	if !errors.Is(err, ErrOutcomeUnknown) || errors.As(err, &asked) || ctx.Err() != nil {
		return created, err
	}
	created, _, logErr := s.recover(ctx, in, false)
	if logErr != nil && errors.Is(logErr, ErrTransactionNotFound) {
		return nil, &OutcomeError{Key: in.RequestID, Reason: "the post may have reached Chift, whose log does not know the request (yet)", Err: err}
	}
	return created, logErr
}

// maxChiftPosts bounds the posts of one Create when the transport's own
// retries end on a server error or a 429: the key makes each repost safe.
const maxChiftPosts = 3

// post sends the create once (the transport retries within) and says
// whether posting again with the same key is worth it.
func (s *ChiftService) post(ctx context.Context, in ChiftCreate, reqBody json.RawMessage) (created *ChiftCreated, again bool, err error) {
	req, err := s.client.NewRequest(ctx, http.MethodPost, in.Path, reqBody)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set(ChiftRequestIDHeader, in.RequestID)
	var body json.RawMessage
	resp, err := s.client.Do(req, &body)
	var apiErr *APIError
	switch {
	case err == nil:
		return &ChiftCreated{RequestID: in.RequestID, StatusCode: resp.StatusCode, EntityID: entityID(body), Body: body}, false, nil
	case errors.Is(err, ErrRequestAlreadyProcessed):
		return s.recover(ctx, in, true)
	case errors.Is(err, ErrRequestInProcess):
		return s.recover(ctx, in, false)
	case resp != nil && resp.StatusCode < 300:
		// Created, but the answer was cut off: the log has the outcome.
		return s.recover(ctx, in, true)
	case errors.As(err, &apiErr):
		notProcessed := apiErr.StatusCode >= 500 || apiErr.StatusCode == http.StatusTooManyRequests
		return nil, notProcessed && ctx.Err() == nil, err
	}
	var reqErr *RequestError
	return nil, errors.As(err, &reqErr) && ctx.Err() == nil, err
}

// prepare checks the call before anything is sent, draws a request id when
// none was given, and returns the body's bytes, the same on every post.
func (in *ChiftCreate) prepare(now time.Time) (json.RawMessage, error) {
	if strings.TrimSpace(in.Path) == "" {
		return nil, errors.New("saferetry: ChiftCreate: Path is empty")
	}
	if err := requireIDs(map[string]string{"ChiftCreate ConsumerID": in.ConsumerID, "ChiftCreate ConnectionID": in.ConnectionID}); err != nil {
		return nil, err
	}
	body, err := encodeChiftBody(in.Body)
	if err != nil {
		return nil, err
	}
	switch {
	case in.FirstSentAt.IsZero():
	case in.FirstSentAt.After(now.Add(chiftFutureTolerance)):
		return nil, fmt.Errorf("saferetry: ChiftCreate: FirstSentAt %s is %s ahead of the clock; it says when the create was first sent",
			in.FirstSentAt.Format(time.RFC3339), in.FirstSentAt.Sub(now).Round(time.Second))
	case now.Sub(in.FirstSentAt) > ChiftRequestIDRetention-24*time.Hour:
		return nil, &OutcomeError{Key: in.RequestID, Reason: fmt.Sprintf("first sent %s ago: Chift may have forgotten the request id (it keeps them 6 months), so posting again could create a second entity", now.Sub(in.FirstSentAt).Round(time.Hour))}
	}
	if in.RequestID == "" {
		id, err := newUUIDKey()
		if err != nil {
			return nil, fmt.Errorf("saferetry: generating request id: %w", err)
		}
		in.RequestID = id
	}
	return body, ValidateKey(in.RequestID)
}

// encodeChiftBody gives the bytes of ChiftCreate.Body: JSON already
// encoded (json.RawMessage, []byte) as it is, any other value as
// encoding/json encodes it. It refuses what Chift would answer with a 422.
func encodeChiftBody(body any) (json.RawMessage, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
		return nil, errors.New("saferetry: ChiftCreate: Body is nil; Chift's creates take a JSON object")
	case string:
		return nil, errors.New("saferetry: ChiftCreate: Body is a string, which would be sent as a JSON string; pass encoded JSON as json.RawMessage")
	case io.Reader:
		return nil, fmt.Errorf("saferetry: ChiftCreate: Body is an io.Reader (%T), which encoding/json does not read; pass its bytes as json.RawMessage", body)
	case json.RawMessage:
		raw = b
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("saferetry: ChiftCreate: encoding Body: %w", err)
		}
	}
	switch {
	case !json.Valid(raw):
		return nil, errors.New("saferetry: ChiftCreate: Body is not valid JSON")
	case bytes.Equal(bytes.TrimSpace(raw), []byte("null")):
		return nil, fmt.Errorf("saferetry: ChiftCreate: Body (%T) is JSON null; Chift's creates take a JSON object", body)
	}
	return raw, nil
}

// entityID reads the "id" of a created entity, string or number.
func entityID(body json.RawMessage) string {
	var out struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(body, &out) != nil || len(out.ID) == 0 {
		return ""
	}
	if s := jsonString(out.ID); s != "" {
		return s
	}
	return strings.TrimSpace(string(out.ID))
}

// recover polls the monitoring endpoint until it gives the request's
// status. A request known to be processed that the log does not show yet
// is polled for; one only said to be in process that the log does not
// know was never recorded, and is worth posting again (again): the key
// keeps a repost from creating twice.
func (s *ChiftService) recover(ctx context.Context, in ChiftCreate, processed bool) (created *ChiftCreated, again bool, err error) {
	b := s.client.transport.cfg.backOff(chiftPollLimit)
	var last error
	t, err := backoff.RetryWithData(func() (*Transaction, error) {
		t, err := s.LookupTransaction(ctx, in.ConsumerID, in.ConnectionID, in.RequestID)
		last = err
		switch {
		case err == nil && t.InProcess():
			last = ErrRequestInProcess
			return nil, last
		case err == nil:
			return t, nil
		case errors.Is(err, ErrTransactionNotFound) && !processed:
			return nil, backoff.Permanent(err)
		case isDefiniteRejection(err): // 404 is not: the log may lag
			return nil, backoff.Permanent(err)
		}
		return nil, err
	}, backoff.WithContext(b, ctx))
	if errors.Is(err, ErrTransactionNotFound) && !processed && ctx.Err() == nil {
		return nil, true, &OutcomeError{Key: in.RequestID, Reason: "Chift answered REQUEST_IN_PROCESS but its log does not know the request", Err: err}
	}
	if err != nil {
		return nil, false, &OutcomeError{Key: in.RequestID, Reason: "the monitoring endpoint did not tell the outcome in time", Err: last}
	}
	if t.StatusCode >= 300 {
		return nil, false, &APIError{
			StatusCode: t.StatusCode, RequestID: in.RequestID,
			Message: fmt.Sprintf("the request with this id was answered %d; Chift's log keeps the status, not the body", t.StatusCode),
		}
	}
	return &ChiftCreated{RequestID: in.RequestID, StatusCode: t.StatusCode, EntityID: t.CreatedEntityID, Recovered: true}, false, nil
}
