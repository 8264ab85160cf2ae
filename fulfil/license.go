package fulfil

import (
	"fmt"
	"io"
	"slices"
	"time"

	"ipnd/ipn"
)

// License statuses (the License API's license_key.status).
const (
	StatusInactive = "inactive"
	StatusActive   = "active"
	StatusExpired  = "expired"
	StatusDisabled = "disabled"
)

// Status returns l's status at now.
func (l *License) Status(now time.Time) string {
	switch {
	case l.Disabled:
		return StatusDisabled
	case l.ExpiresAt != nil && !now.Before(*l.ExpiresAt):
		return StatusExpired
	case len(l.Instances) > 0:
		return StatusActive
	}
	return StatusInactive
}

// The License API's refusals: the message in "error" and the HTTP status.
type Refusal struct {
	Code    int
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// Refusals.
var (
	ErrLimit            = &Refusal{422, "This license key has reached the activation limit."}
	ErrDisabled         = &Refusal{422, "This license key is disabled."}
	ErrExpired          = &Refusal{422, "This license key has expired."}
	ErrUnknownKey       = &Refusal{404, "license_key not found."}
	ErrUnknownInstance  = &Refusal{404, "instance_id not found."}
	ErrMissingKey       = &Refusal{400, "The license key field is required."}
	ErrMissingName      = &Refusal{400, "The instance name field is required."}
	ErrMissingInstance  = &Refusal{400, "The instance id field is required."}
	ErrBadRequest       = &Refusal{400, "The request could not be read."}
	ErrTooManyWrongKeys = &Refusal{429, "Too many attempts."}
)

// newInstanceID returns a random UUID (version 4), as Lemon Squeezy's
// instance ids are.
func newInstanceID(rnd io.Reader) (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}

// Activate adds an instance named name to l at now. It returns the new
// license and the instance, or a *Refusal.
func Activate(l License, name string, rnd io.Reader, now time.Time) (License, Instance, error) {
	switch l.Status(now) {
	case StatusDisabled:
		return l, Instance{}, ErrDisabled
	case StatusExpired:
		return l, Instance{}, ErrExpired
	}
	if l.Limit > 0 && len(l.Instances) >= l.Limit {
		return l, Instance{}, ErrLimit
	}
	id, err := newInstanceID(rnd)
	if err != nil {
		return l, Instance{}, err
	}
	in := Instance{ID: id, Name: name, CreatedAt: now.UTC()}
	l.Instances = append(slices.Clone(l.Instances), in)
	return l, in, nil
}

// Validate reports whether l is valid at now (and, when instanceID is
// set, activated as that instance). A key disabled or expired is not
// valid (refusal says why); an unknown instance is ErrUnknownInstance.
func Validate(l *License, instanceID string, now time.Time) (bool, *Instance, *Refusal) {
	var in *Instance
	if instanceID != "" {
		i := slices.IndexFunc(l.Instances, func(x Instance) bool { return x.ID == instanceID })
		if i < 0 {
			return false, nil, ErrUnknownInstance
		}
		in = &l.Instances[i]
	}
	switch l.Status(now) {
	case StatusDisabled:
		return false, in, ErrDisabled
	case StatusExpired:
		return false, in, ErrExpired
	}
	return true, in, nil
}

// Deactivate removes instance instanceID from l.
func Deactivate(l License, instanceID string) (License, Instance, error) {
	i := slices.IndexFunc(l.Instances, func(x Instance) bool { return x.ID == instanceID })
	if i < 0 {
		return l, Instance{}, ErrUnknownInstance
	}
	in := l.Instances[i]
	l.Instances = slices.Delete(slices.Clone(l.Instances), i, i+1)
	return l, in, nil
}

// Renew applies subscription event ev, processed at now, to license l
// of that subscription: a completed payment that says which period it
// pays extends the license to that period's end plus the grace (never
// shortens it); the subscription's end (expired: its last period is
// over) ends it after the grace. A cancellation changes nothing: the
// license runs to the end of the period paid. It reports whether l
// changed.
func (c *Catalog) Renew(l License, ev *ipn.Event, now time.Time) (License, bool) {
	switch {
	case ev.Type == ipn.TypeSubscriptionPayment && ev.Status == ipn.StatusCompleted:
		end, err := time.Parse(time.RFC3339, ev.PeriodEnd)
		if err != nil {
			return l, false
		}
		exp := end.UTC().Add(c.Grace)
		if l.ExpiresAt != nil && !exp.After(*l.ExpiresAt) {
			return l, false
		}
		l.ExpiresAt = &exp
		return l, true
	case ev.Type == ipn.TypeSubscriptionExpired:
		exp := now.UTC().Add(c.Grace)
		if l.ExpiresAt != nil && !exp.Before(*l.ExpiresAt) {
			return l, false
		}
		l.ExpiresAt = &exp
		return l, true
	}
	return l, false
}
