package saferetry_test

import (
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// Every Go block of the README compiles against the API as it is; the
// blocks that use a nested module (saferiver, saferetryotel,
// retryablehttp) are checked in that module, as only it requires their
// dependencies.
func TestREADMEGoBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked, errs := readmecheck.CheckFile("README.md", ".", func(b readmecheck.Block) bool {
		return !readmecheck.UsesSaferiver(b) && !strings.Contains(b.Code, "saferetry-go/saferetryotel") && !strings.Contains(b.Code, "saferetry-go/retryablehttp")
	})
	for _, err := range errs {
		t.Error(err)
	}
	if checked < 5 {
		t.Fatalf("%d blocks checked, want at least 5", checked)
	}
}
