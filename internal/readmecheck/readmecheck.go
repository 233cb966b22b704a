// Package readmecheck type-checks the Go blocks of a Markdown file, so
// that the README's code keeps compiling as the API changes. A block is a
// fragment: the statements of a function body returning error, with its
// own import lines if it names packages outside the standard library and
// the SDK. The variables it uses without declaring are given in an HTML
// comment on the line before the block:
//
//	<!-- given: ctx context.Context; url string -->
//
// Unused variables and imports are not errors here: a fragment declares
// what the reader's program would go on to use.
package readmecheck

import (
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Block is one Go block of the file.
type Block struct {
	Line  int    // of the opening fence, from 1
	Given string // the declarations of the given comment, "" when none
	Code  string
}

// Blocks returns the Go blocks of markdown.
func Blocks(markdown string) []Block {
	var out []Block
	lines := strings.Split(markdown, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		b := Block{Line: i + 1}
		if i > 0 {
			if m := givenRE.FindStringSubmatch(lines[i-1]); m != nil {
				b.Given = m[1]
			}
		}
		var code []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			code = append(code, lines[i])
		}
		b.Code = strings.Join(code, "\n")
		out = append(out, b)
	}
	return out
}

var (
	givenRE  = regexp.MustCompile(`^<!-- given: (.*) -->$`)
	importRE = regexp.MustCompile(`(?s)^import (\([^)]*\)|[^\n]*)\n?`)
	// Standard-library and SDK packages a fragment may name without
	// importing them.
	implicit = map[string]string{
		"bytes": `"bytes"`, "context": `"context"`, "errors": `"errors"`, "fmt": `"fmt"`, "http": `"net/http"`,
		"io": `"io"`, "log": `"log"`, "slog": `"log/slog"`, "testing": `"testing"`, "time": `"time"`,
		"saferetry":     `saferetry "github.com/saferetry/saferetry-go"`,
		"saferetrytest": `"github.com/saferetry/saferetry-go/saferetrytest"`,
		"pgxpool":       `"github.com/jackc/pgx/v5/pgxpool"`, // resolvable in the saferiver module
	}
)

// Check type-checks b as if in a file of the directory dir (the module
// whose requirements resolve its imports). It returns every error but
// unused variables and imports.
func Check(dir string, b Block) []error {
	code := b.Code
	var imports []string
	for {
		m := importRE.FindStringSubmatchIndex(strings.TrimLeft(code, "\n"))
		if m == nil {
			break
		}
		trimmed := strings.TrimLeft(code, "\n")
		spec := strings.Trim(trimmed[m[2]:m[3]], "()")
		imports = append(imports, strings.Split(strings.TrimSpace(spec), "\n")...)
		code = trimmed[m[1]:]
	}
	have := map[string]bool{}
	for i, spec := range imports {
		imports[i] = strings.TrimSpace(spec)
		have[imports[i]] = true
	}
	for name, spec := range implicit {
		if have[spec] {
			continue
		}
		if regexp.MustCompile(`\b`+name+`\.`).MatchString(code) || strings.Contains(b.Given, name+".") {
			imports = append(imports, spec)
		}
	}
	var given strings.Builder
	for _, d := range strings.Split(b.Given, ";") {
		if d = strings.TrimSpace(d); d != "" {
			fmt.Fprintf(&given, "\tvar %s\n", d)
		}
	}
	src := fmt.Sprintf("package readme\n\nimport (\n%s\n)\n\nfunc _() error {\n%s\n%s\n\treturn nil\n}\n",
		strings.Join(imports, "\n"), given.String(), code)
	fset := token.NewFileSet()
	name := filepath.Join(dir, fmt.Sprintf("readme_block_line_%d.go", b.Line))
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return []error{fmt.Errorf("line %d: %w", b.Line, err)}
	}
	var errs []error
	conf := types.Config{
		Importer: importer.ForCompiler(fset, "source", nil),
		Error: func(err error) {
			msg := err.Error()
			if strings.Contains(msg, "declared and not used") || strings.Contains(msg, "imported and not used") {
				return
			}
			errs = append(errs, fmt.Errorf("README block at line %d: %s", b.Line, msg))
		},
	}
	_, _ = conf.Check("readme", fset, []*ast.File{f}, nil)
	return errs
}

// CheckFile type-checks the Go blocks of the Markdown file at path that
// keep selects, as if in the directory dir (see Check). It returns how
// many blocks it checked and their errors; a file it cannot read is an
// error with none checked.
func CheckFile(path, dir string, keep func(Block) bool) (checked int, errs []error) {
	md, err := os.ReadFile(path)
	if err != nil {
		return 0, []error{err}
	}
	for _, b := range Blocks(string(md)) {
		if !keep(b) {
			continue
		}
		errs = append(errs, Check(dir, b)...)
		checked++
	}
	return checked, errs
}

// Nested modules whose requirements only their own directory resolves:
// the README's blocks that import one are checked in that module.
const (
	Saferiver     = "saferetry-go/saferiver"
	Saferetryotel = "saferetry-go/saferetryotel"
	Retryablehttp = "saferetry-go/retryablehttp"
)

// Uses selects the blocks that import the nested module.
func Uses(module string) func(Block) bool {
	return func(b Block) bool { return strings.Contains(b.Code, module) }
}

// UsesNoNestedModule selects the blocks the root module checks: those
// that import none of the nested modules.
func UsesNoNestedModule(b Block) bool {
	return !slices.ContainsFunc([]string{Saferiver, Saferetryotel, Retryablehttp}, func(m string) bool { return Uses(m)(b) })
}

// Test is CheckFile within a test: skipped with -short (it type-checks
// the standard library from source), each error reported on t. It
// returns how many blocks it checked, for the caller's own bound.
func Test(t testing.TB, path, dir string, keep func(Block) bool) (checked int) {
	t.Helper()
	if testing.Short() {
		t.Skip("type-checks the standard library from source")
	}
	checked, errs := CheckFile(path, dir, keep)
	for _, err := range errs {
		t.Error(err)
	}
	return checked
}
