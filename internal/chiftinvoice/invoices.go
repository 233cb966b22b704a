package chiftinvoice

import (
	"context"
	"fmt"
	"net/url"

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
	{saferetrytest.FaultResetMidBody, "invoice created, but the answer's body is cut off mid-way"},
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
// key rather than letting the SDK generate one, so that it can be stored
// with the invoice before sending: a process that dies mid-create can
// finish it later by creating again with the same key.
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

// outcome is how one invoice ended.
type outcome struct {
	number  string
	created *saferetry.ChiftCreated // nil when err is set
	err     error
}

// createAll sends the invoices one after the other, so that the attempt
// lines of each invoice stay together.
func createAll(client *saferetry.Client, api *target, plan []planned) []outcome {
	outcomes := make([]outcome, len(plan))
	for i, p := range plan {
		fmt.Printf("\n%s  key %s%s\n", p.body.InvoiceNumber, p.key, storyOf(p))
		outcomes[i] = create(context.Background(), client, api, p)
	}
	return outcomes
}

func storyOf(p planned) string {
	if p.scenario.story == "" { // a real API: nothing is scripted
		return ""
	}
	return "\n  " + p.scenario.story
}

// create needs the connection id only for the case where the answer is
// lost: Create then reads the outcome from that connection's log.
func create(ctx context.Context, client *saferetry.Client, api *target, p planned) outcome {
	ctx, cancel := context.WithTimeout(ctx, api.createTimeout)
	defer cancel()
	created, err := client.Chift.Create(ctx, saferetry.ChiftCreate{
		Path:       "consumers/" + url.PathEscape(api.consumerID) + "/invoicing/invoices",
		Body:       p.body,
		ConsumerID: api.consumerID, ConnectionID: api.connectionID,
		RequestID: p.key,
	})
	return outcome{number: p.body.InvoiceNumber, created: created, err: err}
}
