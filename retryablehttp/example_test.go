package saferetryablehttp_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
	saferetryablehttp "github.com/saferetry/saferetry-go/retryablehttp"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

// A service keeps its *retryablehttp.Client and its call sites. The Chift
// server creates the invoice and drops the connection before answering;
// the Transport's retry carries the same key, so Chift answers "already
// processed" instead of creating a second invoice, and rc.Post hands that
// typed answer back.
func ExampleConfigure() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.Script(saferetrytest.FaultDropAfterProcessing)

	rc := retryablehttp.NewClient()
	rc.Logger = nil
	err := saferetryablehttp.Configure(rc, saferetry.WithChift(),
		saferetry.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}

	url := srv.URL + "/consumers/00000000-0000-4000-8000-000000000001/invoicing/invoices"
	_, err = rc.Post(url, "application/json", []byte(`{"invoice_number":"F-1","total":121}`))
	var apiErr *saferetry.APIError
	if errors.Is(err, saferetry.ErrRequestAlreadyProcessed) && errors.As(err, &apiErr) {
		fmt.Println("already processed with status", apiErr.OriginalStatus)
	}
	fmt.Println("invoices under its key:", srv.CreatedWithKey(saferetry.KeyFromError(err)))
	fmt.Println("invoices created:", srv.Created())
	// Output:
	// already processed with status 200
	// invoices under its key: 1
	// invoices created: 1
}

// A client whose own retry settings Configure would drop is refused, each
// setting named.
func ExampleConfigure_refused() {
	rc := retryablehttp.NewClient()
	rc.RetryMax = 10
	err := saferetryablehttp.Configure(rc)
	fmt.Println(err)
	// Output:
	// saferetry: Configure: rc.RetryMax is 10, and Configure sets it to 0: leave retryablehttp's default (4) or 0, and choose the Transport's retries with saferetry.WithMaxRetries
}
