package saferetryablehttp_test

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// The README's Go blocks that import this module compile against it (the
// root module cannot resolve go-retryablehttp). The section waits in
// README-section.md until it is merged into ../README.md.
func TestREADMEBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	usesThisModule := func(b readmecheck.Block) bool { return strings.Contains(b.Code, "saferetry-go/retryablehttp") }
	total := 0
	for _, path := range []string{"../README.md", "README-section.md"} {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && path == "README-section.md" {
			continue
		}
		checked, errs := readmecheck.CheckFile(path, ".", usesThisModule)
		for _, err := range errs {
			t.Errorf("%s: %v", path, err)
		}
		total += checked
	}
	if total == 0 {
		t.Fatal("no Go block importing this module in ../README.md or README-section.md")
	}
}
