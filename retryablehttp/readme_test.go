package saferetryablehttp_test

import (
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go blocks that import this module compile against it (the
// root module cannot resolve go-retryablehttp). At least one must exist.
func TestREADMEBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	usesThisModule := func(b readmecheck.Block) bool { return strings.Contains(b.Code, "saferetry-go/retryablehttp") }
	checked, errs := readmecheck.CheckFile("../README.md", ".", usesThisModule)
	for _, err := range errs {
		t.Error(err)
	}
	if checked == 0 {
		t.Fatal("no Go block of ../README.md imports this module")
	}
}
