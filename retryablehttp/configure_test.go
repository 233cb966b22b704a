package saferetryablehttp_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	saferetry "github.com/saferetry/saferetry-go"
	saferetryablehttp "github.com/saferetry/saferetry-go/retryablehttp"
)

// Configure changes HTTPClient, RetryMax, CheckRetry and ErrorHandler,
// and nothing else; the http.Client rc held is left as it was.
func TestConfigureSetsItsFields(t *testing.T) {
	rc := retryablehttp.NewClient()
	logHook := func(retryablehttp.Logger, *http.Request, int) {}
	rc.RequestLogHook = logHook
	inner := &http.Transport{}
	held := &http.Client{Transport: inner, Timeout: 7 * time.Second}
	rc.HTTPClient = held
	before := snapshotOf(rc)

	if err := saferetryablehttp.Configure(rc); err != nil {
		t.Fatal(err)
	}
	if held.Transport != inner || held.Timeout != 7*time.Second {
		t.Errorf("the http.Client rc held was modified: transport %T, timeout %v", held.Transport, held.Timeout)
	}
	if _, ok := rc.HTTPClient.Transport.(*saferetry.Transport); rc.HTTPClient == held || !ok || rc.HTTPClient.Timeout != 0 {
		t.Errorf("rc.HTTPClient: %p over %T with Timeout %v; want a new client over a *saferetry.Transport, its Timeout moved into it",
			rc.HTTPClient, rc.HTTPClient.Transport, rc.HTTPClient.Timeout)
	}
	if rc.RetryMax != 0 || rc.ErrorHandler == nil {
		t.Errorf("RetryMax %d, ErrorHandler nil: %v; want 0 and set", rc.RetryMax, rc.ErrorHandler == nil)
	}
	if rc.RetryWaitMin != before.RetryWaitMin || rc.RetryWaitMax != before.RetryWaitMax ||
		!sameFunc(rc.Backoff, before.Backoff) || !sameFunc(rc.RequestLogHook, logHook) || rc.Logger != before.Logger {
		t.Errorf("Configure changed a field it does not own")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		ctx  context.Context
		resp *http.Response
		err  error
	}{
		{context.Background(), &http.Response{StatusCode: http.StatusInternalServerError}, nil},
		{context.Background(), nil, errors.New("connection reset")},
		{cancelled, nil, context.Canceled},
	} {
		if retry, err := rc.CheckRetry(c.ctx, c.resp, c.err); retry || err != nil {
			t.Errorf("CheckRetry(%v, %v) = %v, %v; want false, nil", c.resp, c.err, retry, err)
		}
	}
}

// What retryablehttp.NewClient puts in a field, or the field's zero value,
// is accepted: Configure replaces nothing anyone chose.
func TestConfigureAcceptsStockClients(t *testing.T) {
	tests := map[string]func() *retryablehttp.Client{
		"NewClient":  retryablehttp.NewClient,
		"zero value": func() *retryablehttp.Client { return &retryablehttp.Client{} },
		"RetryMax 0": func() *retryablehttp.Client {
			rc := retryablehttp.NewClient()
			rc.RetryMax, rc.RetryWaitMin, rc.RetryWaitMax = 0, 0, 0
			return rc
		},
	}
	for name, newClient := range tests {
		t.Run(name, func(t *testing.T) {
			rc := newClient()
			if err := saferetryablehttp.Configure(rc); err != nil {
				t.Fatal(err)
			}
			if _, ok := rc.HTTPClient.Transport.(*saferetry.Transport); !ok {
				t.Fatalf("rc.HTTPClient sends through %T, want *saferetry.Transport", rc.HTTPClient.Transport)
			}
		})
	}
}

// Configure refuses what it would silently replace or ignore, names it,
// and leaves rc as it was.
func TestConfigureRefuses(t *testing.T) {
	wrapped, err := saferetry.Wrap(nil)
	if err != nil {
		t.Fatal(err)
	}
	ownPolicy := func(context.Context, *http.Response, error) (bool, error) { return false, nil }
	tests := []struct {
		name   string
		change func(*retryablehttp.Client)
		opts   []saferetry.Option
		want   []string
	}{
		{"own CheckRetry", func(rc *retryablehttp.Client) { rc.CheckRetry = ownPolicy }, nil, []string{"rc.CheckRetry"}},
		{"ErrorPropagatedRetryPolicy", func(rc *retryablehttp.Client) { rc.CheckRetry = retryablehttp.ErrorPropagatedRetryPolicy }, nil, []string{"rc.CheckRetry"}},
		{"LinearJitterBackoff", func(rc *retryablehttp.Client) { rc.Backoff = retryablehttp.LinearJitterBackoff }, nil, []string{"rc.Backoff"}},
		{"PassthroughErrorHandler", func(rc *retryablehttp.Client) { rc.ErrorHandler = retryablehttp.PassthroughErrorHandler }, nil, []string{"rc.ErrorHandler"}},
		{"PrepareRetry", func(rc *retryablehttp.Client) { rc.PrepareRetry = func(*http.Request) error { return nil } }, nil, []string{"rc.PrepareRetry"}},
		{"RetryMax 10", func(rc *retryablehttp.Client) { rc.RetryMax = 10 }, nil, []string{"rc.RetryMax is 10", "saferetry.WithMaxRetries"}},
		{"RetryWaitMin 1ms", func(rc *retryablehttp.Client) { rc.RetryWaitMin = time.Millisecond }, nil, []string{"rc.RetryWaitMin", "saferetry.WithBackoff"}},
		{"retryablehttp.RoundTripper", func(rc *retryablehttp.Client) {
			rc.HTTPClient = &http.Client{Transport: &retryablehttp.RoundTripper{}}
		}, nil, []string{"*retryablehttp.RoundTripper"}},
		{"saferetry client", func(rc *retryablehttp.Client) { rc.HTTPClient = wrapped }, nil, []string{"*saferetry.Transport"}},
		{"invalid option", func(*retryablehttp.Client) {}, []saferetry.Option{saferetry.WithMaxRetries(-1)}, []string{"WithMaxRetries"}},
		{"several at once", func(rc *retryablehttp.Client) {
			rc.RetryMax, rc.PrepareRetry = 2, func(*http.Request) error { return nil }
		}, nil, []string{"rc.RetryMax is 2", "rc.PrepareRetry"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := retryablehttp.NewClient()
			tt.change(rc)
			before := snapshotOf(rc)

			err := saferetryablehttp.Configure(rc, tt.opts...)
			if err == nil {
				t.Fatal("Configure accepted the client")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "saferetry: ") {
				t.Errorf("error %q does not start with \"saferetry: \"", err)
			}
			if rc.HTTPClient != before.HTTPClient || rc.RetryMax != before.RetryMax ||
				!sameFunc(rc.CheckRetry, before.CheckRetry) || !sameFunc(rc.ErrorHandler, before.ErrorHandler) {
				t.Error("a refused client was modified")
			}
		})
	}
}

func TestConfigureRefusesNilAndTwice(t *testing.T) {
	if err := saferetryablehttp.Configure(nil); err == nil || !strings.Contains(err.Error(), "nil") {
		t.Errorf("Configure(nil) = %v, want an error naming the nil client", err)
	}
	rc := retryablehttp.NewClient()
	if err := saferetryablehttp.Configure(rc); err != nil {
		t.Fatal(err)
	}
	configuredOnce := rc.HTTPClient
	if err := saferetryablehttp.Configure(rc); err == nil || !strings.Contains(err.Error(), "configured already") {
		t.Errorf("second Configure = %v, want an error saying it was configured already", err)
	}
	if rc.HTTPClient != configuredOnce {
		t.Error("the second, refused Configure replaced rc.HTTPClient")
	}
}

// snapshot holds the fields of a retryablehttp.Client that a test
// compares before and after Configure (the Client holds a sync.Once and
// must not be copied).
type snapshot struct {
	HTTPClient                 *http.Client
	Logger                     any
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	CheckRetry                 retryablehttp.CheckRetry
	Backoff                    retryablehttp.Backoff
	ErrorHandler               retryablehttp.ErrorHandler
}

func snapshotOf(rc *retryablehttp.Client) snapshot {
	return snapshot{rc.HTTPClient, rc.Logger, rc.RetryMax, rc.RetryWaitMin, rc.RetryWaitMax, rc.CheckRetry, rc.Backoff, rc.ErrorHandler}
}

// sameFunc compares func values by code pointer (nil equals nil).
func sameFunc(f, g any) bool {
	return reflect.ValueOf(f).Pointer() == reflect.ValueOf(g).Pointer()
}
