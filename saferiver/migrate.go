package saferiver

import (
	"context"
	"fmt"

	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/rivermigrate"
)

// Migrate applies River's migrations, up to the newest this River version
// has, to the database behind driver (riversqlite.New(db) or
// riverpgxv5.New(pool)): the tables the jobs live in. Run it once before
// any River client starts, at deploy or at startup; a database already
// migrated is left as it is.
func Migrate[TTx any](ctx context.Context, driver riverdriver.Driver[TTx]) error {
	m, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("saferiver: migrating: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("saferiver: migrating: %w", err)
	}
	return nil
}
