package saferetryotel_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go blocks that use saferetryotel compile against this
// module's API; the root module's test cannot check them, as its
// requirements do not include OpenTelemetry. At least one must exist.
func TestREADMEBlocksCompile(t *testing.T) {
	if readmecheck.Test(t, "../README.md", ".", readmecheck.Uses(readmecheck.Saferetryotel)) == 0 {
		t.Fatal("no Go block of ../README.md uses saferetryotel")
	}
}
