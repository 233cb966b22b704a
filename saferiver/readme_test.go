package saferiver_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go block of the durable layer compiles against this
// module's API (the root module's test checks the others).
func TestREADMEDurableBlockCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked, errs := readmecheck.CheckFile("../README.md", ".", readmecheck.UsesSaferiver)
	for _, err := range errs {
		t.Error(err)
	}
	if checked != 1 {
		t.Fatalf("%d saferiver blocks checked, want 1", checked)
	}
}
