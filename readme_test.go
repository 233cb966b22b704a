package saferetry_test

import (
	"os"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// Every Go block of the README compiles against the API as it is; the
// durable layer's block is checked in its own module (saferiver).
func TestREADMEGoBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	md, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, b := range readmecheck.Blocks(string(md)) {
		if strings.Contains(b.Code, "saferetry-go/saferiver") {
			continue
		}
		for _, err := range readmecheck.Check(dir, b) {
			t.Error(err)
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("%d blocks checked, want at least 5", checked)
	}
}
