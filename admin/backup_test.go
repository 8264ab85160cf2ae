package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"ipnd/store"
)

// TestBackupTooSlowIs503: a backup whose snapshot holds back more than
// its bound answers 503 with the reason the README names, not 500
// "internal error".
func TestBackupTooSlowIs503(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "ipnd.db"), store.Options{BackupMaxPinned: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(Options{Store: db, Token: "tok"}))
	t.Cleanup(func() { srv.Close(); db.Close() })
	req, _ := http.NewRequest("GET", srv.URL+"/api/backup", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body["error"], "backup snapshot held back too much") {
		t.Fatalf("%d %q, want 503 naming the limit", resp.StatusCode, body["error"])
	}
}
