package saferetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Wrap an existing client. The server drops the connection after it created
// the invoice; the retry carries the same key, so Chift answers "already
// processed" instead of creating a second invoice.
func ExampleWrap() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultDropAfterProcessing)

	hc, err := saferetry.Wrap(&http.Client{Timeout: 30 * time.Second},
		saferetry.WithChift(), saferetry.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	url := srv.URL + "/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices"
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{"invoice_number":"F-1","total":121}`))
	req.Header.Set(saferetry.ChiftRequestIDHeader, "invoice-F-1")

	_, err = hc.Do(req)
	var apiErr *saferetry.APIError
	if errors.Is(err, saferetry.ErrRequestAlreadyProcessed) && errors.As(err, &apiErr) {
		fmt.Printf("key %s already processed with status %d\n", apiErr.Key, apiErr.OriginalStatus)
	}
	fmt.Println("invoices created:", srv.CreatedWithKey("invoice-F-1"))
	// Output:
	// key invoice-F-1 already processed with status 200
	// invoices created: 1
}

// A client for a JSON API: DoJSON encodes, sends through the safe-retry
// transport, checks the status and decodes.
func ExampleClient_DoJSON() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultBadGateway, saferetrytest.FaultDropBeforeProcessing)

	client, err := saferetry.NewClient(srv.URL, saferetry.WithChift(), saferetry.WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	var invoice struct {
		ID    string `json:"id"`
		Total int    `json:"total"`
	}
	in := map[string]any{"invoice_number": "F-2", "total": 121}
	_, err = client.DoJSON(context.Background(), "POST", "consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices", in, &invoice)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(invoice.ID, invoice.Total, "created:", srv.Created())
	// Output: inv_1 121 created: 1
}

// Invalid options are refused at construction, each named.
func ExampleNewTransport_invalidOptions() {
	_, err := saferetry.NewTransport(nil, saferetry.WithMaxRetries(-1), saferetry.WithBackoff(time.Second, time.Millisecond))
	fmt.Println(err)
	// Output:
	// saferetry: WithMaxRetries: -1 is outside [0, 20]
	// saferetry: WithBackoff: initial 1s is greater than max 1ms
}

// CheckResponse maps any error answer to an *APIError, whatever its shape.
func ExampleCheckResponse() {
	body := `{"message":"Validation error","status":"error","detail":[{"loc":["body","total"],"msg":"Field required","type":"missing"}]}`
	resp := &http.Response{StatusCode: 422, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
	err := saferetry.CheckResponse(resp)
	var apiErr *saferetry.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Message, apiErr.Details[0])
	}
	// Output: 422 Validation error body.total: Field required
}
