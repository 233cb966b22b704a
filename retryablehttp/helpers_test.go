package saferetryablehttp_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
	saferetryablehttp "github.com/saferetry/saferetry-go/retryablehttp"
	"github.com/saferetry/saferetry-go/saferetrytest"
)

const (
	consumer    = "00000000-0000-4000-8000-000000000001"
	invoiceBody = `{"currency":"EUR","total":121}` // no invoice_number: the fake refuses a second invoice with the same one
)

func invoicesURL(srv *saferetrytest.ChiftServer) string {
	return srv.URL + "/consumers/" + consumer + "/invoicing/invoices"
}

// fast keeps the Transport's waits between attempts to milliseconds.
func fast() saferetry.Option { return saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond) }

// plainHTTP is an http.Client over a transport of the test's own, whose
// idle connections are closed when the test ends.
func plainHTTP(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// naive is the stack this package replaces: retryablehttp as NewClient
// makes it (its waits cut to milliseconds) over a client from
// saferetry.Wrap.
func naive(t *testing.T, opts ...saferetry.Option) *retryablehttp.Client {
	t.Helper()
	hc, err := saferetry.Wrap(plainHTTP(t), append([]saferetry.Option{fast()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryWaitMin, rc.RetryWaitMax = time.Millisecond, 5*time.Millisecond
	rc.HTTPClient = hc
	return rc
}

// configured is retryablehttp.NewClient through Configure.
func configured(t *testing.T, opts ...saferetry.Option) *retryablehttp.Client {
	t.Helper()
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.HTTPClient = plainHTTP(t)
	if err := saferetryablehttp.Configure(rc, append([]saferetry.Option{fast()}, opts...)...); err != nil {
		t.Fatal(err)
	}
	return rc
}

// keysOf lists the key each request carried, in order.
func keysOf(records []saferetrytest.RequestRecord) []string {
	keys := make([]string, len(records))
	for i, r := range records {
		keys[i] = r.Key
	}
	return keys
}

// distinct counts the different values in keys.
func distinct(keys []string) int {
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
	}
	return len(seen)
}

// closeResp closes resp's body, if there is a response.
func closeResp(resp *http.Response) {
	if resp != nil {
		resp.Body.Close()
	}
}
