//go:build !linux

package main

import "time"

// Elsewhere the system's own retransmission limit applies.
func setUnackedTimeout(uintptr, time.Duration) error { return nil }

func unackedTimeoutOf(uintptr) (time.Duration, error) { return 0, nil }
