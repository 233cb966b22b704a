package saferiver_test

import (
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go block of the durable layer compiles against this
// module's API (the root module's test checks the others).
func TestREADMEDurableBlockCompiles(t *testing.T) {
	if checked := readmecheck.Test(t, "../README.md", ".", readmecheck.Uses(readmecheck.Saferiver)); checked != 1 {
		t.Fatalf("%d saferiver blocks checked, want 1", checked)
	}
}
