package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// scenario is the failure the fake inflicts on the first attempt of one
// invoice; later attempts are answered normally.
type scenario struct {
	fault saferetrytest.Fault
	story string
}

// scenarios lists one invoice per path worth seeing; invoices beyond them
// meet no fault.
var scenarios = []scenario{
	{saferetrytest.FaultBadGateway, "a proxy answers 502 with an HTML page, then success"},
	{saferetrytest.FaultUnavailable, "503 Service Unavailable, then success"},
	{saferetrytest.FaultRateLimited, "429 with Retry-After: 1, then success"},
	{saferetrytest.FaultDropBeforeProcessing, "connection dropped before the server acted, then success"},
	{saferetrytest.FaultDropAfterProcessing, "connection dropped after the invoice was created; the retry hears 409 REQUEST_ALREADY_PROCESSED"},
	{saferetrytest.FaultNone, "no fault"},
}

// invoice is the body of POST /consumers/{consumer_id}/invoicing/invoices.
type invoice struct {
	Currency      string  `json:"currency"`
	InvoiceType   string  `json:"invoice_type"`
	Status        string  `json:"status"`
	InvoiceDate   string  `json:"invoice_date"`
	TaxAmount     float64 `json:"tax_amount"`
	UntaxedAmount float64 `json:"untaxed_amount"`
	Total         float64 `json:"total"`
	InvoiceNumber string  `json:"invoice_number"`
}

// planned is one invoice with the key chosen for it. The caller picks the
// key rather than letting the transport generate one, so that it can be
// stored with the invoice before sending and used to look the invoice up
// if the outcome is unknown.
type planned struct {
	body     invoice
	key      string
	scenario scenario
}

// planInvoices builds n invoices and, against the fake, arranges their
// faults by key: keys are known before sending, which keeps the faults on
// the right invoice whatever the retries do.
func planInvoices(api *target, n int) []planned {
	plan := make([]planned, n)
	faults := make(map[string]saferetrytest.Fault, n)
	for i := range plan {
		number := fmt.Sprintf("INV-%s-%03d", api.runID, i+1)
		plan[i] = planned{body: newInvoice(number, i), key: "invoice-" + number}
		if api.server != nil {
			plan[i].scenario = scenarioFor(i)
		}
		faults[plan[i].key] = plan[i].scenario.fault
	}
	if api.server != nil {
		// faults is only read from here on, so the server may call this
		// from its handler goroutines.
		api.server.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault {
			if attempt > 1 {
				return saferetrytest.FaultNone
			}
			return faults[key]
		})
	}
	return plan
}

func scenarioFor(i int) scenario {
	if i < len(scenarios) {
		return scenarios[i]
	}
	return scenario{saferetrytest.FaultNone, "no fault"}
}

func newInvoice(number string, i int) invoice {
	untaxed := float64(100 * (i + 1))
	tax := untaxed * 0.21
	return invoice{
		Currency: "EUR", InvoiceType: "customer_invoice", Status: "posted",
		InvoiceDate: "2025-01-15", TaxAmount: tax, UntaxedAmount: untaxed,
		Total: untaxed + tax, InvoiceNumber: number,
	}
}

func numbersByKey(plan []planned) map[string]string {
	numbers := make(map[string]string, len(plan))
	for _, p := range plan {
		numbers[p.key] = p.body.InvoiceNumber
	}
	return numbers
}

// outcome is how one invoice ended, with the key as the SDK reports it.
type outcome struct {
	number string
	key    string
	id     string // the created invoice's id, when the answer carried it
	err    error
}

// createAll sends the invoices one after the other, so that the attempt
// lines of each invoice stay together.
func createAll(client *http.Client, api *target, plan []planned) []outcome {
	outcomes := make([]outcome, len(plan))
	for i, p := range plan {
		fmt.Printf("\n%s%s\n", p.body.InvoiceNumber, storyOf(p))
		outcomes[i] = create(context.Background(), client, api, p)
	}
	return outcomes
}

func storyOf(p planned) string {
	if p.scenario.story == "" { // a real API: nothing is scripted
		return ""
	}
	return ": " + p.scenario.story
}

func create(ctx context.Context, client *http.Client, api *target, p planned) outcome {
	o := outcome{number: p.body.InvoiceNumber}
	req, err := newInvoiceRequest(ctx, api, p)
	if err != nil {
		o.err = err
		return o
	}
	resp, err := client.Do(req)
	if err != nil {
		o.key, o.err = saferetry.KeyFromError(err), err
		return o
	}
	defer resp.Body.Close()
	o.key = saferetry.RequestKey(resp)
	o.id, o.err = createdID(resp)
	return o
}

func newInvoiceRequest(ctx context.Context, api *target, p planned) (*http.Request, error) {
	body, err := json.Marshal(p.body)
	if err != nil {
		return nil, err
	}
	u := api.baseURL + "/consumers/" + url.PathEscape(api.consumerID) + "/invoicing/invoices"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(saferetry.ChiftRequestIDHeader, p.key)
	if api.token != "" {
		req.Header.Set("Authorization", "Bearer "+api.token)
	}
	return req, nil
}

// createdID reads the id of the created invoice; a non-2xx answer the
// transport handed back (a business 409, a 422) becomes an *APIError.
func createdID(resp *http.Response) (string, error) {
	if err := saferetry.CheckResponse(resp); err != nil {
		return "", err
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&created); err != nil {
		return "", fmt.Errorf("decoding the created invoice: %w", err)
	}
	return created.ID, nil
}

// printAttempt is the observer: one line per attempt, printed as it ends.
func printAttempt(numbers map[string]string) func(saferetry.Attempt) {
	return func(a saferetry.Attempt) {
		fmt.Printf("  %s  key %s  attempt %d: %-27s %s\n",
			numbers[a.Key], a.Key, a.Number, attemptResult(a), nextStep(a))
	}
}

func attemptResult(a saferetry.Attempt) string {
	if a.Err == nil {
		return fmt.Sprintf("%d %s", a.StatusCode, http.StatusText(a.StatusCode))
	}
	// The URL is the same on every line; keep only the cause.
	err := a.Err
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	if a.Sent {
		return fmt.Sprintf("error %q after sending", err)
	}
	return fmt.Sprintf("error %q, not sent", err)
}

func nextStep(a saferetry.Attempt) string {
	if !a.Retry {
		return "-> stop"
	}
	return "-> retry in " + a.Wait.Round(time.Millisecond).String()
}

func printSummary(outcomes []outcome) {
	fmt.Println("\nSummary")
	for _, o := range outcomes {
		fmt.Printf("  %s  key %s  %s\n", o.number, o.key, describe(o))
	}
}

func describe(o outcome) string {
	var apiErr *saferetry.APIError
	switch {
	case o.err == nil:
		return "created, id " + o.id
	case errors.Is(o.err, saferetry.ErrRequestAlreadyProcessed) && errors.As(o.err, &apiErr):
		// Chift sends no copy of the first answer: the id is recovered later
		// from the key (GET .../transactions?client_request_id=<key>).
		return fmt.Sprintf("already processed (original status %d): the invoice exists; its id is found by key later", apiErr.OriginalStatus)
	}
	return "error: " + o.err.Error()
}

// checkServer asks the fake, which counts what it created, whether every
// key created exactly one invoice and nothing else was created.
func checkServer(server *saferetrytest.ChiftServer, plan []planned) []error {
	fmt.Println("\nServer's own counts")
	var errs []error
	for _, p := range plan {
		n := server.CreatedWithKey(p.key)
		fmt.Printf("  key %s  created %d\n", p.key, n)
		if n != 1 {
			errs = append(errs, fmt.Errorf("key %s created %d invoices, want 1", p.key, n))
		}
	}
	total := server.Created()
	fmt.Printf("  total created %d for %d invoices\n", total, len(plan))
	if total != len(plan) {
		errs = append(errs, fmt.Errorf("the server created %d invoices for %d requested", total, len(plan)))
	}
	if len(errs) == 0 {
		fmt.Println("OK: every invoice exists exactly once")
	}
	return errs
}
