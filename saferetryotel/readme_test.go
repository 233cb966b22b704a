package saferetryotel_test

import (
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go blocks that use saferetryotel compile against this
// module's API; the root module's test cannot check them, as its
// requirements do not include OpenTelemetry. At least one must exist.
func TestREADMEBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked, errs := readmecheck.CheckFile("../README.md", ".", usesSaferetryotel)
	for _, err := range errs {
		t.Error(err)
	}
	if checked == 0 {
		t.Fatal("no Go block of ../README.md uses saferetryotel")
	}
}

func usesSaferetryotel(b readmecheck.Block) bool {
	return strings.Contains(b.Code, "saferetry-go/saferetryotel")
}
