package pg

import (
	"errors"
	"fmt"

	"ipnd/store"
)

// ErrNotBuilt is returned by the parts of the store not built on
// PostgreSQL yet. Each group below is replaced by its own file.
var ErrNotBuilt = errors.New("not built on the postgres backend yet")

func notBuilt(what string) error { return fmt.Errorf("%s: %w", what, ErrNotBuilt) }

// --- stats and the live event stream (live.go) ---

func (d *Dashboard) Stats() (store.Stats, error) { return store.Stats{}, notBuilt("Stats") }

func (d *Dashboard) Follow(buffer int) (<-chan store.LiveEvent, func(), error) {
	return nil, nil, notBuilt("Follow")
}

func (d *Dashboard) LiveDropped() uint64 { return 0 }

func (d *Dashboard) LiveFollowers() int { return 0 }

func (d *Dashboard) LiveRefused() uint64 { return 0 }

func (d *Dashboard) EndLive() {}
