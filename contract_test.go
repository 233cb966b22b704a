package saferetry_test

import (
	"context"
	"log/slog"
	"net/http"
	"reflect"
	"testing"
	"time"

	saferetry "github.com/saferetry/saferetry-go"
)

// The public API contract of DESIGN.md, checked by the compiler: a renamed
// name or a changed signature breaks this file before it breaks users.
var (
	_ func(http.RoundTripper, ...saferetry.Option) (*saferetry.Transport, error)                                 = saferetry.NewTransport
	_ func(*saferetry.Transport, *http.Request) (*http.Response, error)                                          = (*saferetry.Transport).RoundTrip
	_ func(*http.Client, ...saferetry.Option) (*http.Client, error)                                              = saferetry.Wrap
	_ func(string) saferetry.Option                                                                              = saferetry.WithRequestIDHeader
	_ func(int) saferetry.Option                                                                                 = saferetry.WithMaxRetries
	_ func(time.Duration, time.Duration) saferetry.Option                                                        = saferetry.WithBackoff
	_ func(time.Duration) saferetry.Option                                                                       = saferetry.WithAttemptTimeout
	_ func(*slog.Logger) saferetry.Option                                                                        = saferetry.WithLogger
	_ func(string, string, string) saferetry.Option                                                              = saferetry.WithZeroHashAuth
	_ func(*http.Client) saferetry.Option                                                                        = saferetry.WithHTTPClient
	_ func(string, ...saferetry.Option) (*saferetry.Client, error)                                               = saferetry.NewClient
	_ func(*saferetry.TransfersService, context.Context, saferetry.TransferRequest) (*saferetry.Transfer, error) = (*saferetry.TransfersService).Create
	_ func(*http.Response) error                                                                                 = saferetry.CheckResponse
	_ error                                                                                                      = saferetry.ErrRequestAlreadyProcessed
	_ error                                                                                                      = saferetry.ErrRequestInProcess
	_ error                                                                                                      = saferetry.ErrDuplicateClientTransferID
	_ error                                                                                                      = saferetry.ErrOutcomeUnknown
	_ error                                                                                                      = (*saferetry.APIError)(nil)
	_ *saferetry.TransfersService                                                                                = saferetry.Client{}.Transfers
)

// TestContractFieldsAndTags checks the fields DESIGN.md names, with their
// types and JSON names.
func TestContractFieldsAndTags(t *testing.T) {
	want := map[reflect.Type]map[string]string{ // field -> "type json-tag"
		reflect.TypeOf(saferetry.TransferRequest{}): {
			"ClientTransferID": "string client_transfer_id", "FromParticipantCode": "string from_participant_code",
			"FromAccountGroup": "string from_account_group", "FromAccountLabel": "string from_account_label,omitempty",
			"ToParticipantCode": "string to_participant_code", "ToAccountGroup": "string to_account_group",
			"ToAccountLabel": "string to_account_label,omitempty", "Asset": "string asset", "Amount": "string amount",
		},
		reflect.TypeOf(saferetry.Transfer{}): {"ID": "int64 id", "ClientTransferID": "string client_transfer_id", "Status": "string status"},
		reflect.TypeOf(saferetry.APIError{}): {"StatusCode": "int ", "Code": "string ", "Message": "string ", "RequestID": "string ", "OriginalStatus": "int "},
	}
	for typ, fields := range want {
		for name, spec := range fields {
			f, ok := typ.FieldByName(name)
			if !ok {
				t.Errorf("%s has no field %s", typ, name)
				continue
			}
			if got := f.Type.String() + " " + f.Tag.Get("json"); got != spec {
				t.Errorf("%s.%s is %q, want %q", typ, name, got, spec)
			}
		}
	}
}
