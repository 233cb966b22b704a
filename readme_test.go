package saferetry_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// Every Go block of the README compiles against the API as it is; the
// blocks that use a nested module (saferiver, saferetryotel,
// retryablehttp) are checked in that module, as only it requires their
// dependencies.
func TestREADMEGoBlocksCompile(t *testing.T) {
	if checked := readmecheck.Test(t, "README.md", ".", readmecheck.UsesNoNestedModule); checked < 5 {
		t.Fatalf("%d blocks checked, want at least 5", checked)
	}
}
