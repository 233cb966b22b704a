package saferetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TransferUniquenessWindow is how long zerohash keeps a client_transfer_id
// unique. Create never reposts an id it knows to be older than this, less
// a safety margin: past the window, a repost could create a second transfer.
const TransferUniquenessWindow = 72 * time.Hour

const transferRepostMargin = time.Hour

// TransferClockSkewMargin is how much earlier than this create's first
// POST (by the client's clock) zerohash's created_at of a transfer that
// POST made can read. zerohash refuses a request whose X-SCX-TIMESTAMP is
// more than 60 s from its own clock (its OpenAPI, Timestamp parameter), and
// Create takes the first-send time from the clock the signatures use
// (WithZeroHashClock, else time.Now, plus the offset SyncZeroHashClock
// measured) before it signs: a transfer zerohash made from one of our POSTs
// shows a created_at at most 60 s, plus 1 s of the timestamp's rounding to
// whole seconds, before that time; any wider margin would let another
// client's transfer made just before ours pass for ours. A transfer
// created earlier is not shown to be this create's (see Transfers.Create):
// with other fields it is someone else's; with the same fields the outcome
// is unknown.
const TransferClockSkewMargin = 61 * time.Second

// ZeroHashRateLimitWait is how long Create waits after a 429 that carries
// no Retry-After before it posts again: zerohash rate-limits per IP address
// and, once the limit is hit, refuses every request "for the next 10
// seconds" (docs.zerohash.com/changelog/rate-limits; its error-handling
// page says "429: Wait 10 seconds"). A Retry-After is obeyed instead,
// however long.
const ZeroHashRateLimitWait = 10 * time.Second

// ErrTransferNotCreated: Create stopped with proof that it created nothing
// under the client_transfer_id: every POST it made was answered in a way
// that shows it was not processed (429, 503 with zh-allow-retry: true), or
// never reached zerohash. Posting again later with the same id is safe.
// The error is a *NotCreatedError.
var ErrTransferNotCreated = errors.New("saferetry: transfer not created")

// ErrRateLimited: a *NotCreatedError whose last answer was zerohash's 429.
// Its RetryAfter says how long to wait before trying again.
var ErrRateLimited = errors.New("saferetry: rate limited")

// NotCreatedError is a definite failure of Transfers.Create: no transfer
// exists from it (see ErrTransferNotCreated). It matches
// ErrTransferNotCreated, ErrRateLimited when the last answer was a 429,
// Cause and Err; never ErrOutcomeUnknown.
type NotCreatedError struct {
	ClientTransferID string
	// Reason says why Create stopped, e.g. "the context ends within the
	// 1m0s wait before the next post" or "gave up after 4 posts".
	Reason string
	// RetryAfter is the wait the last answer asked for: its Retry-After,
	// or ZeroHashRateLimitWait for a 429 without one; 0 when none.
	RetryAfter time.Duration
	Posts      int   // POSTs this Create made (the Transport may have made several attempts of each)
	Cause      error // what stopped Create: the context's error or ErrRetryBudgetExhausted; nil otherwise
	Err        error // the last answer (an *APIError) or transport error; nil if no POST was made
}

func (e *NotCreatedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "saferetry: transfer with client_transfer_id %q not created: %s", e.ClientTransferID, e.Reason)
	switch {
	case e.rateLimited():
		fmt.Fprintf(&b, "; rate limited; retry after %v", e.RetryAfter)
	case e.RetryAfter > 0:
		fmt.Fprintf(&b, "; retry after %v", e.RetryAfter)
	}
	fmt.Fprintf(&b, " (%d post(s), none processed)", e.Posts)
	if e.Cause != nil {
		b.WriteString(": " + e.Cause.Error())
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *NotCreatedError) rateLimited() bool {
	var apiErr *APIError
	return errors.As(e.Err, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests
}

// Unwrap returns ErrTransferNotCreated, ErrRateLimited after a 429, Cause
// and Err.
func (e *NotCreatedError) Unwrap() []error {
	errs := []error{ErrTransferNotCreated}
	if e.rateLimited() {
		errs = append(errs, ErrRateLimited)
	}
	for _, err := range []error{e.Cause, e.Err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// TransferMismatchError: zerohash holds a transfer under ClientTransferID
// that is not this create's, found by a lookup (Transfers.Create takes a
// transfer found as its own only when it provably is: see Create). It
// matches ErrDuplicateClientTransferID, Err, and ErrOutcomeUnknown when
// MaybeCreated.
type TransferMismatchError struct {
	ClientTransferID string
	TransferID       int64 // zerohash's id of the transfer found; 0 when none was read
	// Differences names each reason the transfer is not this create's, a
	// field and both values, e.g. `asset "EUR", this create asks "USD"`,
	// or its created_at against this id's first send.
	Differences []string
	// MaybeCreated: a POST of this create may have been processed, and the
	// transfer found could not have kept zerohash from taking it (it was
	// made more than the 72 h uniqueness window before this id was first
	// sent): this create's own transfer may exist, not yet visible.
	// Reconcile with ClientTransferID before using another id.
	MaybeCreated bool
	Err          error // zerohash's "not unique" answer, when that is how it was learned

	fieldsDiffer bool
}

func (e *TransferMismatchError) Error() string {
	var b strings.Builder
	b.WriteString(ErrDuplicateClientTransferID.Error() + ": ")
	if e.TransferID != 0 {
		fmt.Fprintf(&b, "transfer %d holds client_transfer_id %q", e.TransferID, e.ClientTransferID)
	} else {
		fmt.Fprintf(&b, "client_transfer_id %q is held by another transfer", e.ClientTransferID)
	}
	if e.fieldsDiffer {
		b.WriteString(" with other accounts, asset or amount")
	}
	b.WriteString(", not this create's: " + strings.Join(e.Differences, "; "))
	if e.MaybeCreated {
		b.WriteString("; whether this create made a transfer as well is unknown")
	}
	return b.String()
}

// Unwrap returns ErrDuplicateClientTransferID, an *OutcomeError carrying
// the id when MaybeCreated, and Err.
func (e *TransferMismatchError) Unwrap() []error {
	errs := []error{ErrDuplicateClientTransferID}
	if e.MaybeCreated {
		errs = append(errs, &OutcomeError{Key: e.ClientTransferID, Reason: "the transfer found under this id is another's"})
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// TransfersService is zerohash's transfers API.
type TransfersService struct {
	client *Client
	// pause waits d or until ctx ends; nil: sleep. Tests replace it to
	// see the waits of Create without sitting them out.
	pause func(ctx context.Context, d time.Duration) error
}

// signingClock returns the clock zerohash signatures are made with
// (WithZeroHashClock, else time.Now) and the offset SyncZeroHashClock
// measured (zerohash's clock minus that one).
func (s *TransfersService) signingClock() (func() time.Time, time.Duration) {
	if signer := s.client.transport.cfg.signer; signer != nil {
		return signer.now, time.Duration(signer.offset.Load())
	}
	return time.Now, 0
}

// TransferRequest is the body of POST /transfers.
type TransferRequest struct {
	ClientTransferID    string `json:"client_transfer_id"` // empty: Create generates a UUIDv4
	FromParticipantCode string `json:"from_participant_code"`
	FromAccountGroup    string `json:"from_account_group"`
	FromAccountLabel    string `json:"from_account_label,omitempty"`
	ToParticipantCode   string `json:"to_participant_code"`
	ToAccountGroup      string `json:"to_account_group"`
	ToAccountLabel      string `json:"to_account_label,omitempty"`
	Asset               string `json:"asset"`
	// Amount is in the asset's own units (major units: "20.1" USD is
	// twenty dollars and ten cents, not cents), as a decimal string with
	// at most one point and no sign or exponent, as zerohash's POST
	// /transfers takes it (its documents show "20.1", and "1.00" for a
	// USD transfer); Create refuses anything else, and zero.
	Amount    string `json:"amount"`
	Prefunded *bool  `json:"prefunded,omitempty"`

	// FirstSentAt is, when this request resumes a create begun earlier (by
	// a process that crashed, say) with the same ClientTransferID, when
	// that create was first sent: record it before the first send, on the
	// clock the signatures use (WithZeroHashClock, else the local clock).
	// Create then looks the id up before any POST, takes a transfer found
	// as its own only if it was created after FirstSentAt (less
	// TransferClockSkewMargin), and refuses to repost once the uniqueness
	// window may have passed. Zero: this call is the first, and a transfer
	// from an earlier run is not taken as this one's. A FirstSentAt without
	// a ClientTransferID, or in the future, is refused before anything is
	// sent.
	FirstSentAt time.Time `json:"-"`
}

// Transfer is zerohash's transfer object.
type Transfer struct {
	ID                  int64     `json:"id"`
	ClientTransferID    string    `json:"client_transfer_id"`
	Status              string    `json:"status"`
	CreatedAt           time.Time `json:"created_at"`
	UpdatedAt           time.Time `json:"updated_at"`
	FromParticipantCode string    `json:"from_participant_code"`
	FromAccountGroup    string    `json:"from_account_group"`
	FromAccountLabel    string    `json:"from_account_label"`
	ToParticipantCode   string    `json:"to_participant_code"`
	ToAccountGroup      string    `json:"to_account_group"`
	ToAccountLabel      string    `json:"to_account_label"`
	Asset               string    `json:"asset"`
	Amount              string    `json:"amount"`
	MovementID          string    `json:"movement_id"` // empty until the transfer is settled
	AdminTransfer       bool      `json:"admin_transfer"`
	ParentLinkID        string    `json:"parent_link_id"`
	ParentLinkIDSource  string    `json:"parent_link_id_source"`
	Prefunded           bool      `json:"prefunded"`

	// Outcome says how Create obtained this transfer; zero for transfers
	// that were read, not created.
	Outcome CreateOutcome `json:"-"`
}

// CreateOutcome is the path Transfers.Create took to its result.
type CreateOutcome int

const (
	// OutcomeCreated: the first POST created the transfer and its answer
	// arrived.
	OutcomeCreated CreateOutcome = iota + 1
	// OutcomeReposted: a POST failed ambiguously, the lookup found nothing,
	// and a repost with the same client_transfer_id created the transfer.
	OutcomeReposted
	// OutcomeRecovered: the answer to a POST was lost (or zerohash said the
	// id exists), and the transfer was found by looking it up.
	OutcomeRecovered
)

func (o CreateOutcome) String() string {
	switch o {
	case OutcomeCreated:
		return "created"
	case OutcomeReposted:
		return "reposted"
	case OutcomeRecovered:
		return "recovered"
	}
	return "unknown"
}

// UnmarshalJSON accepts zerohash's nulls and a number or a string for id
// and amount.
func (t *Transfer) UnmarshalJSON(data []byte) error {
	type plain Transfer
	var raw struct {
		plain
		ID                 json.Number     `json:"id"`
		Amount             json.RawMessage `json:"amount"`
		ClientTransferID   *string         `json:"client_transfer_id"`
		FromAccountLabel   *string         `json:"from_account_label"`
		ToAccountLabel     *string         `json:"to_account_label"`
		MovementID         *string         `json:"movement_id"`
		ParentLinkID       *string         `json:"parent_link_id"`
		ParentLinkIDSource *string         `json:"parent_link_id_source"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	id, err := strconv.ParseInt(raw.ID.String(), 10, 64)
	if err != nil {
		return fmt.Errorf("transfer id %q is not an integer", raw.ID)
	}
	amount, err := decimalText(raw.Amount)
	if err != nil {
		return err
	}
	*t = Transfer(raw.plain)
	t.ID, t.Amount = id, amount
	t.ClientTransferID, t.FromAccountLabel, t.ToAccountLabel = deref(raw.ClientTransferID), deref(raw.FromAccountLabel), deref(raw.ToAccountLabel)
	t.MovementID, t.ParentLinkID, t.ParentLinkIDSource = deref(raw.MovementID), deref(raw.ParentLinkID), deref(raw.ParentLinkIDSource)
	return nil
}

// decimalText reads an amount sent as a string (zerohash's form) or as a
// JSON number, keeping its digits as they were; absent or null is "".
func decimalText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("transfer amount %s is neither a string nor a number", raw)
	}
	return n.String(), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// decodeTransfer reads a transfer with or without zerohash's
// {"message": ...} wrapper.
func decodeTransfer(body []byte) (*Transfer, error) {
	var wrapped struct {
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(body, &wrapped); err != nil {
		return nil, fmt.Errorf("saferetry: decoding transfer: %w", err)
	}
	if len(wrapped.Message) > 0 && wrapped.Message[0] == '{' {
		body = wrapped.Message
	}
	var t Transfer
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("saferetry: decoding transfer: %w", err)
	}
	return &t, nil
}

var (
	decimalAmount = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
	accountLabel  = regexp.MustCompile(`^[A-Za-z0-9:_-]+$`)
)

// validate checks what zerohash would refuse, and a FirstSentAt that
// cannot be true, before anything is sent; now is the clock FirstSentAt
// is read on.
func (r *TransferRequest) validate(now func() time.Time) error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"FromParticipantCode", r.FromParticipantCode}, {"FromAccountGroup", r.FromAccountGroup},
		{"ToParticipantCode", r.ToParticipantCode}, {"ToAccountGroup", r.ToAccountGroup}, {"Asset", r.Asset},
	} {
		if strings.TrimSpace(f.value) == "" {
			errs = append(errs, fmt.Errorf("field %s is required", f.name))
		}
	}
	if !decimalAmount.MatchString(r.Amount) || strings.Trim(r.Amount, "0.") == "" {
		errs = append(errs, fmt.Errorf("field Amount %q is not a positive decimal string", r.Amount))
	}
	for _, f := range []struct{ name, value string }{{"FromAccountLabel", r.FromAccountLabel}, {"ToAccountLabel", r.ToAccountLabel}} {
		if f.value != "" && !accountLabel.MatchString(f.value) {
			errs = append(errs, fmt.Errorf("field %s %q may hold only letters, digits, ':', '_' and '-'", f.name, f.value))
		}
	}
	if r.ClientTransferID != "" {
		if err := validateKey(r.ClientTransferID); err != nil {
			errs = append(errs, fmt.Errorf("ClientTransferID: %s", err))
		}
	}
	switch {
	case r.FirstSentAt.IsZero():
	case r.ClientTransferID == "":
		errs = append(errs, errors.New("field FirstSentAt is set but ClientTransferID is empty: a resumed create needs the id it was first sent with (a new id cannot have been sent before)"))
	default:
		if at := now(); r.FirstSentAt.After(at) {
			errs = append(errs, fmt.Errorf("field FirstSentAt %s is in the future (now %s): it must be when this id was first sent",
				r.FirstSentAt.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("saferetry: invalid transfer request: %w", err)
	}
	return nil
}

// fieldDifferences lists where an existing transfer differs from what r
// asks for, so a reused client_transfer_id is never taken for another
// transfer. Participant codes, account groups and the asset are codes,
// compared without regard to case (zerohash shows them upper-case; a
// request may not); labels are compared exactly, the amount by value.
func (r *TransferRequest) fieldDifferences(t *Transfer) []string {
	var diffs []string
	for _, f := range []struct {
		name, got, asked string
		same             func(a, b string) bool
	}{
		{"from_participant_code", t.FromParticipantCode, r.FromParticipantCode, strings.EqualFold},
		{"from_account_group", t.FromAccountGroup, r.FromAccountGroup, strings.EqualFold},
		{"from_account_label", t.FromAccountLabel, r.FromAccountLabel, sameString},
		{"to_participant_code", t.ToParticipantCode, r.ToParticipantCode, strings.EqualFold},
		{"to_account_group", t.ToAccountGroup, r.ToAccountGroup, strings.EqualFold},
		{"to_account_label", t.ToAccountLabel, r.ToAccountLabel, sameString},
		{"asset", t.Asset, r.Asset, strings.EqualFold},
		{"amount", t.Amount, r.Amount, sameDecimal},
	} {
		if !f.same(f.got, f.asked) {
			diffs = append(diffs, fmt.Sprintf("%s %q, this create asks %q", f.name, f.got, f.asked))
		}
	}
	return diffs
}

func sameString(a, b string) bool { return a == b }

// sameDecimal compares decimal strings by value ("1.50" is "1.5").
func sameDecimal(a, b string) bool {
	norm := func(s string) string {
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		s = strings.TrimLeft(s, "0")
		return s
	}
	return norm(a) == norm(b)
}

// ListTransfersOptions are the filters and paging of GET /transfers.
type ListTransfersOptions struct {
	ClientTransferID    string
	FromParticipantCode string
	ToParticipantCode   string
	FromAccountGroup    string
	ToAccountGroup      string
	FromAccountLabel    string
	ToAccountLabel      string
	Currency            string
	// RequestedAfter and RequestedBefore filter on the request time
	// (requested_timestamp[gte] and [lt]); zero: no bound. Both set,
	// RequestedAfter must be before RequestedBefore.
	RequestedAfter  time.Time
	RequestedBefore time.Time
	Page            int // from 1; 0: the first page
	PageSize        int // 1 to 100; 0: the server's default
}

// TransferPage is one page of GET /transfers.
type TransferPage struct {
	Transfers  []Transfer `json:"message"`
	Page       int        `json:"page"`
	PageSize   int        `json:"page_size"`
	TotalPages int        `json:"total_pages"`
	Count      int        `json:"count"`
}

func (o ListTransfersOptions) query() (url.Values, error) {
	if o.Page < 0 || o.PageSize < 0 || o.PageSize > 100 {
		return nil, fmt.Errorf("saferetry: ListTransfersOptions: page %d or page size %d out of range (page >= 1, page size 1..100)", o.Page, o.PageSize)
	}
	if !o.RequestedAfter.IsZero() && !o.RequestedBefore.IsZero() && !o.RequestedAfter.Before(o.RequestedBefore) {
		return nil, fmt.Errorf("saferetry: ListTransfersOptions: RequestedAfter %s is not before RequestedBefore %s: no transfer can match",
			o.RequestedAfter.UTC().Format(time.RFC3339), o.RequestedBefore.UTC().Format(time.RFC3339))
	}
	q := url.Values{}
	for name, v := range map[string]string{
		"client_transfer_id": o.ClientTransferID, "from_participant_code": o.FromParticipantCode,
		"to_participant_code": o.ToParticipantCode, "from_account_group": o.FromAccountGroup,
		"to_account_group": o.ToAccountGroup, "from_account_label": o.FromAccountLabel,
		"to_account_label": o.ToAccountLabel, "currency": o.Currency,
	} {
		if v != "" {
			q.Set(name, v)
		}
	}
	if !o.RequestedAfter.IsZero() {
		q.Set("requested_timestamp[gte]", strconv.FormatInt(o.RequestedAfter.Unix(), 10))
	}
	if !o.RequestedBefore.IsZero() {
		q.Set("requested_timestamp[lt]", strconv.FormatInt(o.RequestedBefore.Unix(), 10))
	}
	if o.Page > 0 {
		q.Set("page", strconv.Itoa(o.Page))
	}
	if o.PageSize > 0 {
		q.Set("page_size", strconv.Itoa(o.PageSize))
	}
	return q, nil
}

// List returns one page of transfers matching opts.
func (s *TransfersService) List(ctx context.Context, opts ListTransfersOptions) (*TransferPage, error) {
	if err := s.client.requireAPI("Transfers.List", "zerohash"); err != nil {
		return nil, err
	}
	page, _, err := s.list(ctx, opts)
	return page, err
}

// list is List that also returns the response, whose header a caller
// pacing its requests reads (Retry-After); nil when none arrived.
func (s *TransfersService) list(ctx context.Context, opts ListTransfersOptions) (*TransferPage, *http.Response, error) {
	q, err := opts.query()
	if err != nil {
		return nil, nil, err
	}
	path := "transfers"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var page TransferPage
	resp, err := s.client.DoJSON(ctx, http.MethodGet, path, nil, &page)
	if err != nil {
		return nil, resp, err
	}
	return &page, resp, nil
}

// Get returns the transfer with zerohash's numeric id (positive; any
// other is refused before anything is sent).
func (s *TransfersService) Get(ctx context.Context, id int64) (*Transfer, error) {
	if err := s.client.requireAPI("Transfers.Get", "zerohash"); err != nil {
		return nil, err
	}
	if id <= 0 {
		return nil, fmt.Errorf("saferetry: transfer id %d: zerohash's ids are positive", id)
	}
	var wrapped struct {
		Message Transfer `json:"message"`
	}
	if _, err := s.client.DoJSON(ctx, http.MethodGet, "transfers/"+strconv.FormatInt(id, 10), nil, &wrapped); err != nil {
		return nil, err
	}
	return &wrapped.Message, nil
}

// ErrTransferNotFound: no transfer has the client_transfer_id asked for.
var ErrTransferNotFound = errors.New("saferetry: transfer not found")

// FindByClientTransferID looks a transfer up by the id the client chose.
// No match, as an empty page or a 404, is ErrTransferNotFound. zerohash
// keeps an id unique for 72 h only, so an id used again after that holds
// several transfers: this returns the first zerohash lists (the newest, by
// its documented order), which need not be the one a given create made;
// Transfers.Create checks that before it takes one as its own.
func (s *TransfersService) FindByClientTransferID(ctx context.Context, id string) (*Transfer, error) {
	if err := s.client.requireAPI("Transfers.FindByClientTransferID", "zerohash"); err != nil {
		return nil, err
	}
	found, _, err := s.findAll(ctx, id)
	if err != nil {
		return nil, err
	}
	return &found[0], nil
}

// findAll returns the transfers of the first page that carry id, in
// zerohash's order, or ErrTransferNotFound; and the response, for its
// Retry-After, when one arrived.
func (s *TransfersService) findAll(ctx context.Context, id string) ([]Transfer, *http.Response, error) {
	if err := validateKey(id); err != nil {
		return nil, nil, fmt.Errorf("saferetry: client_transfer_id: %s", err)
	}
	page, resp, err := s.list(ctx, ListTransfersOptions{ClientTransferID: id})
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		return nil, resp, ErrTransferNotFound
	}
	if err != nil {
		return nil, resp, err
	}
	var found []Transfer
	for _, t := range page.Transfers {
		if t.ClientTransferID == id {
			found = append(found, t)
		}
	}
	if len(found) == 0 {
		return nil, resp, ErrTransferNotFound
	}
	return found, resp, nil
}
