package saferetryotel_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The command examples/chift-invoice of this module: without -spans it
// prints what the core module's example prints, line for line; with
// -spans it adds each span as JSON, and nothing else changes. The spans
// are one create per invoice, holding its requests (the 7 POSTs, and the
// 2 lookups of the invoices whose answer was lost or cut), each holding
// its attempts. Every run exits 0: the example checks the server's
// records.
func TestChiftInvoiceCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two commands")
	}
	dir := t.TempDir()
	core := build(t, "..", filepath.Join(dir, "core"))
	traced := build(t, ".", filepath.Join(dir, "traced"))
	want := runCommand(t, core)
	if got := runCommand(t, traced); got != want {
		t.Errorf("without -spans the output is\n%s\nwant the core example's\n%s", got, want)
	}
	lines, spans := splitSpans(t, runCommand(t, traced, "-spans"))
	if lines != want {
		t.Errorf("with -spans, the lines that are not spans are\n%s\nwant the core example's\n%s", lines, want)
	}
	counts := map[string]int{}
	for _, s := range spans {
		counts[s.Name]++
	}
	wantCounts := map[string]int{"saferetry chift create": 7, "saferetry POST": 7, "POST": 12, "saferetry GET": 2, "GET": 2}
	if !maps.Equal(counts, wantCounts) {
		t.Errorf("spans printed %v, want %v", counts, wantCounts)
	}
	checkParents(t, spans)
}

// printedSpan is what the test reads of a span stdouttrace printed.
type printedSpan struct {
	Name        string
	SpanContext struct{ SpanID string }
	Parent      struct{ SpanID string }
}

// checkParents: a create has no parent, a request's parent is a create,
// an attempt's is a request with its method.
func checkParents(t *testing.T, spans []printedSpan) {
	t.Helper()
	names := map[string]string{}
	for _, s := range spans {
		names[s.SpanContext.SpanID] = s.Name
	}
	for _, s := range spans {
		parent := names[s.Parent.SpanID]
		var ok bool
		switch {
		case s.Name == "saferetry chift create":
			ok = s.Parent.SpanID == "0000000000000000"
		case strings.HasPrefix(s.Name, "saferetry "):
			ok = parent == "saferetry chift create"
		default:
			ok = parent == "saferetry "+s.Name
		}
		if !ok {
			t.Errorf("span %s %s has parent %s %q", s.Name, s.SpanContext.SpanID, s.Parent.SpanID, parent)
		}
	}
}

func build(t *testing.T, module, out string) string {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, "./examples/chift-invoice")
	cmd.Dir = module
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s", module, err, b)
	}
	return out
}

func runCommand(t *testing.T, path string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(path), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// splitSpans separates stdouttrace's spans, each a JSON object from a line
// "{" to a line "}", from the program's lines.
func splitSpans(t *testing.T, out string) (string, []printedSpan) {
	t.Helper()
	var lines []string
	var spans []printedSpan
	var object []string
	for _, line := range strings.SplitAfter(out, "\n") {
		switch {
		case line == "{\n" || object != nil:
			object = append(object, line)
		default:
			lines = append(lines, line)
		}
		if line == "}\n" {
			var s printedSpan
			if err := json.Unmarshal([]byte(strings.Join(object, "")), &s); err != nil {
				t.Fatalf("a span that is not JSON: %v\n%s", err, strings.Join(object, ""))
			}
			spans = append(spans, s)
			object = nil
		}
	}
	return strings.Join(lines, ""), spans
}
