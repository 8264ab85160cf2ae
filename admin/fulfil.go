package admin

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"

	"ipnd/fulfil"
	"ipnd/ipn"
	"ipnd/public"
	"ipnd/store"
)

// What was delivered (SPEC §11): an order's deliveries, reissuing them,
// licenses by key.

func (a *api) fulfilRoutes(r *httprouter.Router) {
	r.GET("/api/orders/:id/deliveries", a.auth(a.showDeliveries))
	r.POST("/api/orders/:id/deliveries/reissue", a.auth(a.reissue))
	r.GET("/api/licenses/:key", a.auth(a.showLicense))
	r.POST("/api/licenses/:key/disable", a.auth(a.disableLicense))
}

// checkItems validates the items of POST /api/orders: known products
// (when products are configured), positive quantities, at most
// ipn.MaxItems units.
func (a *api) checkItems(items []ipn.Item) ([]ipn.Item, error) {
	var out []ipn.Item
	total := 0
	cat := a.o.Store.Catalog()
	for _, it := range items {
		if err := ipn.CheckProductID(it.Product); err != nil {
			return nil, fmt.Errorf("items: %v", err)
		}
		if it.Quantity == 0 {
			it.Quantity = 1
		}
		if it.Quantity < 0 {
			return nil, fmt.Errorf("items: quantity of %q must be positive", it.Product)
		}
		if cat.Enabled() && cat.Products[it.Product] == nil {
			return nil, fmt.Errorf("items: unknown product %q (no such [[product]])", it.Product)
		}
		if total += it.Quantity; total > ipn.MaxItems {
			return nil, fmt.Errorf("items: more than %d units", ipn.MaxItems)
		}
		out = ipn.AddItem(out, it)
	}
	return out, nil
}

// orderWithDeliveries is GET /api/orders/:id: the order and what it was
// delivered.
type orderWithDeliveries struct {
	ipn.Order
	Deliveries []ipn.Delivered `json:"deliveries,omitempty"`
	Revoked    bool            `json:"deliveries_revoked,omitempty"`
}

func (a *api) withDeliveries(o ipn.Order) orderWithDeliveries {
	out := orderWithDeliveries{Order: o}
	rec, lic, err := a.o.Store.Deliveries(o.ID)
	if err == nil {
		out.Deliveries, out.Revoked = fulfil.Show(rec, lic), rec.Revoked
	}
	return out
}

// Deliveries is the answer of GET /api/orders/:id/deliveries and of a
// reissue (with the new links).
type Deliveries struct {
	OrderID    string           `json:"order_id"`
	Revoked    bool             `json:"revoked"`
	Reason     string           `json:"reason,omitempty"`
	Deliveries []ipn.Delivered  `json:"deliveries"`
	Licenses   []map[string]any `json:"licenses,omitempty"`
}

func (a *api) showDeliveries(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	rec, lic, err := a.o.Store.Deliveries(ps.ByName("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	out := Deliveries{OrderID: rec.OrderID, Revoked: rec.Revoked, Reason: rec.Reason, Deliveries: fulfil.Show(rec, lic)}
	for _, d := range rec.Deliveries {
		if l := lic[d.LicenseHash]; l != nil {
			out.Licenses = append(out.Licenses, licenseView(l, time.Now()))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) reissue(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	id := ps.ByName("id")
	shown, status, msg := a.Reissue(id, "api")
	if status != http.StatusOK {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, http.StatusOK, Deliveries{OrderID: id, Deliveries: shown})
}

// Reissue gives order id's links new tokens and queues the customer's
// "your downloads" email again (store.Reissue): the code path of POST
// /api/orders/:id/deliveries/reissue, the CLI's and the dashboard's
// button; by is who asked, for the log. status is 200, else 404, 409 or
// 500 with msg.
func (a *api) Reissue(id, by string) ([]ipn.Delivered, int, string) {
	shown, err := a.o.Store.Reissue(id, time.Now())
	switch {
	case errors.Is(err, store.ErrRevoked):
		return nil, http.StatusConflict, "the order's deliveries are revoked (refunded, reversed or disputed)"
	case errors.Is(err, store.ErrNoProducts):
		return nil, http.StatusConflict, "no [[product]] is configured"
	case errors.Is(err, store.ErrNotFound):
		return nil, http.StatusNotFound, "not found"
	case errors.Is(err, store.ErrClosed):
		return nil, http.StatusServiceUnavailable, "store is closed"
	case errors.Is(err, store.ErrUnavailable):
		a.log.Warn("reissue: store unavailable", "order_id", id, "error", err)
		return nil, http.StatusServiceUnavailable, unavailableMsg
	case err != nil:
		a.log.Error("reissuing deliveries failed", "order_id", id, "error", err)
		return nil, http.StatusInternalServerError, "internal error"
	}
	a.log.Info("deliveries reissued", "order_id", id, "links", len(shown), "by", by)
	return shown, http.StatusOK, ""
}

// licenseView is a license as the admin API shows it: the License API's
// license_key object, its instances and why it is disabled.
func licenseView(l *fulfil.License, now time.Time) map[string]any {
	return map[string]any{"license_key": public.LicenseJSON(l, now), "order_id": l.OrderID, "product_id": l.Product,
		"instances": l.Instances, "disabled_reason": l.DisabledReason, "subscription_id": l.SubscriptionID}
}

// pathKey returns the license key a route names: signed keys
// ("key/...") are named without their "key/" prefix, as a path segment
// cannot hold a slash.
func (a *api) pathKey(ps httprouter.Params) string {
	k := ps.ByName("key")
	if _, err := a.o.Store.License(k); errors.Is(err, store.ErrNotFound) {
		if _, err := a.o.Store.License(fulfil.SignedPrefix + k); err == nil {
			return fulfil.SignedPrefix + k
		}
	}
	return k
}

func (a *api) showLicense(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	l, err := a.o.Store.License(a.pathKey(ps))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, licenseView(l, time.Now()))
}

func (a *api) disableLicense(w http.ResponseWriter, _ *http.Request, ps httprouter.Params) {
	l, err := a.o.Store.UpdateLicense(a.pathKey(ps), func(l fulfil.License) (fulfil.License, error) {
		l.Disabled, l.Manual, l.DisabledReason = true, true, "disabled by the merchant"
		return l, nil
	})
	if err != nil {
		a.fail(w, err)
		return
	}
	a.log.Info("license disabled", "order_id", l.OrderID, "product", l.Product)
	writeJSON(w, http.StatusOK, licenseView(&l, time.Now()))
}
