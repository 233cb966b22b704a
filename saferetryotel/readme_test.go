package saferetryotel_test

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/saferetry/saferetry-go/internal/readmecheck"
)

// readmeFiles hold the Go blocks that use this module: README.md, and the
// section proposed for it (README-section.md) until it is merged and
// deleted. The root module's test cannot check these blocks, as its
// requirements do not include OpenTelemetry.
var readmeFiles = []string{"../README.md", "README-section.md"}

// The README's Go blocks that use saferetryotel compile against this
// module's API. At least one must exist, in README.md or, until it is
// merged, in the proposed section.
func TestREADMEBlocksCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked := 0
	for _, path := range readmeFiles {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && path != readmeFiles[0] {
			continue // the section was merged
		}
		n, errs := readmecheck.CheckFile(path, ".", usesSaferetryotel)
		for _, err := range errs {
			t.Errorf("%s: %v", path, err)
		}
		checked += n
	}
	if checked == 0 {
		t.Fatalf("no Go block uses saferetryotel in %s", strings.Join(readmeFiles, " or "))
	}
}

func usesSaferetryotel(b readmecheck.Block) bool {
	return strings.Contains(b.Code, "saferetry-go/saferetryotel")
}
