package saferiver_test

import (
	"os"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go block of the durable layer compiles against this
// module's API (the root module's test checks the others).
func TestREADMEDurableBlockCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	md, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, b := range readmecheck.Blocks(string(md)) {
		if !strings.Contains(b.Code, "saferetry-go/saferiver") {
			continue
		}
		for _, err := range readmecheck.Check(dir, b) {
			t.Error(err)
		}
		checked++
	}
	if checked != 1 {
		t.Fatalf("%d saferiver blocks checked, want 1", checked)
	}
}
