package saferetry_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/saferetry/saferetry-go/saferetrytest"

	saferetry "github.com/saferetry/saferetry-go"
)

type brkKey struct{}

// A nil context from the first Hooks' Start is taken as the one it was
// given before the second Hooks' Start runs: the second never sees nil.
func TestNilContextFromFirstHooksReachesSecond(t *testing.T) {
	var gotNil []string
	first := saferetry.Hooks{
		RequestStart: func(context.Context, saferetry.RequestStart) context.Context { return nil },
		AttemptStart: func(context.Context, saferetry.AttemptStart) context.Context { return nil },
	}
	second := saferetry.Hooks{
		RequestStart: func(ctx context.Context, _ saferetry.RequestStart) context.Context {
			if ctx == nil {
				gotNil = append(gotNil, "RequestStart")
				return nil
			}
			return context.WithValue(ctx, brkKey{}, "req")
		},
		AttemptStart: func(ctx context.Context, _ saferetry.AttemptStart) context.Context {
			if ctx == nil {
				gotNil = append(gotNil, "AttemptStart")
				return nil
			}
			return ctx
		},
	}
	postKeyed(t, okBase, first, second)
	if len(gotNil) > 0 {
		t.Errorf("the second Hooks got a nil context in %v: the first's nil was passed on, not taken as ctx", gotNil)
	}
}

// A hook that writes the key header under another spelling of its name
// is undone too: one key, the request's, goes on the wire.
func TestHookKeyHeaderOtherSpelling(t *testing.T) {
	var sent [][]string
	base := rtFunc(func(req *http.Request) (*http.Response, error) {
		var vals []string
		for k, vs := range req.Header {
			if strings.EqualFold(k, saferetry.DefaultRequestIDHeader) {
				vals = append(vals, vs...)
			}
		}
		sent = append(sent, vals)
		return &http.Response{StatusCode: 201, Body: http.NoBody, Header: http.Header{}, Request: req}, nil
	})
	hooks := saferetry.Hooks{
		AttemptStart: func(ctx context.Context, a saferetry.AttemptStart) context.Context {
			a.Header["idempotency-key"] = []string{"hook-key"}
			return ctx
		},
	}
	postKeyed(t, base, hooks)
	if len(sent) != 1 || len(sent[0]) != 1 || sent[0][0] != "caller-key" {
		t.Errorf("key header values sent: %q, want only [caller-key]", sent)
	}
}

// An AttemptStart hook that writes a per-attempt value under
// saferetry.ChiftRequestIDHeader (spelled "X-Chift-Client-RequestId", not
// canonical) cannot send a second key that Chift would deduplicate on: a
// lost answer, retried, creates the invoice once, under the caller's key.
func TestHookKeyHeaderOtherSpellingCreatesTwice(t *testing.T) {
	srv := saferetrytest.StartChiftServer(t)
	srv.Script(saferetrytest.FaultDropAfterProcessing)
	hooks := saferetry.Hooks{
		AttemptStart: func(ctx context.Context, a saferetry.AttemptStart) context.Context {
			a.Header[saferetry.ChiftRequestIDHeader] = []string{fmt.Sprintf("trace-%d", a.Number)}
			return ctx
		},
	}
	hc, err := saferetry.Wrap(&http.Client{}, saferetry.WithChift(), saferetry.WithHooks(hooks),
		saferetry.WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	const consumer = "00000000-0000-4000-8000-000000000001"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/consumers/"+consumer+"/invoicing/invoices", strings.NewReader(`{"amount":1}`))
	req.Header.Set(saferetry.ChiftRequestIDHeader, "inv-F-9")
	resp, err := hc.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	for _, r := range srv.Requests() {
		t.Logf("%+v", r)
	}
	if n := srv.Created(); n != 1 {
		t.Errorf("the server created %d invoices for one logical request (key inv-F-9: %d); want 1 (err %v)", n, srv.CreatedWithKey("inv-F-9"), err)
	}
}
