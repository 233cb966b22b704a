package saferetrytest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

// Faults decided per key: the first request under "order-1" gets a 503
// before processing, so the key is released and a retry with it is
// processed as a first request; "order-2" meets no fault. ScriptLookup
// makes the next lookup in the transaction log fail once. Requests shows
// the fault each request met.
func ExampleChiftServer_SetFaultFunc() {
	srv := saferetrytest.NewChiftServer()
	defer srv.Close()
	srv.SetFaultFunc(func(key string, attempt int) saferetrytest.Fault {
		if key == "order-1" && attempt == 1 {
			return saferetrytest.FaultUnavailable
		}
		return saferetrytest.FaultNone
	})
	srv.ScriptLookup(saferetrytest.FaultBadGateway)

	send := func(method, url, key, body string) int {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if key != "" {
			req.Header.Set("X-Chift-Client-RequestId", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	create := srv.URL + "/consumers/c1/invoicing/invoices"
	fmt.Println("order-1:", send("POST", create, "order-1", `{"total":10}`))
	fmt.Println("order-1 again:", send("POST", create, "order-1", `{"total":10}`))
	fmt.Println("order-2:", send("POST", create, "order-2", `{"total":20}`))

	lookup := srv.URL + "/consumers/c1/connections/" + srv.ConnectionID + "/transactions?client_request_id=order-1"
	fmt.Println("lookup:", send("GET", lookup, "", ""))
	fmt.Println("lookup again:", send("GET", lookup, "", ""))

	for _, r := range srv.Requests() {
		fmt.Printf("%s key=%q fault=%s status=%d\n", r.Method, r.Key, r.Fault, r.Status)
	}
	fmt.Println("invoices:", srv.Created(), "order-1:", srv.CreatedWithKey("order-1"))
	// Output:
	// order-1: 503
	// order-1 again: 200
	// order-2: 200
	// lookup: 502
	// lookup again: 200
	// POST key="order-1" fault=503 status=503
	// POST key="order-1" fault=none status=200
	// POST key="order-2" fault=none status=200
	// GET key="" fault=502 status=502
	// GET key="" fault=none status=200
	// invoices: 2 order-1: 1
}
