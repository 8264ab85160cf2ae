package pg

import (
	"ipnd/admin"
	"ipnd/public"
)

// The PostgreSQL store answers everything the admin API, the dashboard
// and the fulfilment routes ask of a store.
var (
	_ admin.Store        = (*Dashboard)(nil)
	_ public.FulfilStore = (*Dashboard)(nil)
)
