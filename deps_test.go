package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules guards the layering: the domain (ipn) imports none of
// ipnd's other packages, and metrics imports nothing of ipnd's.
func TestImportRules(t *testing.T) {
	for pkg, forbidden := range map[string][]string{
		"ipnd/ipn":     {"ipnd/store", "ipnd/notify", "ipnd/metrics", "ipnd/admin"},
		"ipnd/metrics": {"ipnd/ipn", "ipnd/store", "ipnd/notify", "ipnd/admin"},
		"ipnd/store":   {"ipnd/notify", "ipnd/metrics", "ipnd/admin"},
	} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, d := range deps {
			for _, f := range forbidden {
				if d == f {
					t.Errorf("%s imports %s", pkg, f)
				}
			}
		}
	}
}
