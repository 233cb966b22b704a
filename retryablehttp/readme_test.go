package saferetryablehttp_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go blocks that import this module compile against it (the
// root module cannot resolve go-retryablehttp). At least one must exist.
func TestREADMEBlocksCompile(t *testing.T) {
	if readmecheck.Test(t, "../README.md", ".", readmecheck.Uses(readmecheck.Retryablehttp)) == 0 {
		t.Fatal("no Go block of ../README.md imports this module")
	}
}
