package saferetry_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// Every Go block of the README compiles against the API as it is; the
// durable layer's block is checked in its own module (saferiver).
func TestREADMEGoBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked, errs := readmecheck.CheckFile("README.md", ".", func(b readmecheck.Block) bool { return !readmecheck.UsesSaferiver(b) })
	for _, err := range errs {
		t.Error(err)
	}
	if checked < 5 {
		t.Fatalf("%d blocks checked, want at least 5", checked)
	}
}
