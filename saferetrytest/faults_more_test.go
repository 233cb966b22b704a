package saferetrytest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/saferetrytest"
)

func TestInProcessBurstProcessesNothing(t *testing.T) {
	s := newServer(t, saferetrytest.FaultInProcess, saferetrytest.FaultInProcess)
	c := rawClient(t)
	for i := range 2 {
		o := post(t, c, s.URL+invoicingPath, "burst-key", invoiceBody)
		wantStatus(t, o, http.StatusConflict)
		if code := errorCode(t, o); code != inProcessCode {
			t.Fatalf("answer %d: error_code %q, want %s", i+1, code, inProcessCode)
		}
		if s.Created() != 0 {
			t.Fatalf("answer %d created an invoice", i+1)
		}
	}
	wantStatus(t, post(t, c, s.URL+invoicingPath, "burst-key", invoiceBody), http.StatusOK)
	if s.CreatedWithKey("burst-key") != 1 {
		t.Fatalf("created %d after the burst, want 1", s.CreatedWithKey("burst-key"))
	}
}

func TestZeroHashIgnoresInProcessFault(t *testing.T) {
	s := saferetrytest.NewZeroHashServer()
	defer s.Close()
	s.Script(saferetrytest.FaultInProcess)
	if o := zhCreate(t, s, rawClient(t), "in-process-ignored"); o.status != http.StatusCreated {
		t.Fatalf("status %d, want 201: the fault is Chift's alone", o.status)
	}
	if s.CreatedWithClientTransferID("in-process-ignored") != 1 {
		t.Fatal("not created")
	}
}

func TestGatewayTimeoutProcessesNothing(t *testing.T) {
	s := newServer(t, saferetrytest.FaultGatewayTimeout)
	o := post(t, rawClient(t), s.URL+invoicingPath, "gw-key", invoiceBody)
	wantStatus(t, o, http.StatusGatewayTimeout)
	if s.Created() != 0 || !strings.Contains(string(o.body), "504 Gateway Time-out") && !strings.Contains(string(o.body), "504 Gateway Timeout") {
		t.Fatalf("created %d, body %q", s.Created(), o.body)
	}
	zh := saferetrytest.NewZeroHashServer()
	defer zh.Close()
	zh.Script(saferetrytest.FaultGatewayTimeout)
	if o := zhCreate(t, zh, rawClient(t), "gw-cid"); o.status != http.StatusGatewayTimeout || zh.Created() != 0 {
		t.Fatalf("zerohash: status %d, created %d", o.status, zh.Created())
	}
}
