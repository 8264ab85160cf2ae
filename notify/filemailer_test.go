package notify

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// emlFiles lists the files of dir, failing on anything that is not a
// finished .eml file.
func emlFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".eml") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("stray file %s in %s", e.Name(), dir)
		}
		names = append(names, e.Name())
	}
	return names
}

func TestFileMailerWritesEML(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	fm := NewFileMailer(dir)
	msgs := testBurst(3)
	msgs[2].HTML = "" // text only
	for i, err := range fm.Send(context.Background(), msgs) {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mail dir: got %v (%v), want mode 0700", fi.Mode().Perm(), err)
	}
	names := emlFiles(t, dir)
	if len(names) != len(msgs) {
		t.Fatalf("got files %v, want %d", names, len(msgs))
	}
	for i, m := range msgs {
		name := strings.Trim(m.MessageID, "<>") + ".eml"
		if !slices.Contains(names, name) {
			t.Fatalf("message %d: no file %s among %v", i, name, names)
		}
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: got mode %v (%v), want 0600", name, fi.Mode().Perm(), err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p := parseMail(t, raw)
		if got := p.Header.Get("Message-Id"); got != m.MessageID {
			t.Errorf("%s: Message-ID %q, want %q", name, got, m.MessageID)
		}
		if got := p.Header.Get("Subject"); got != m.Subject {
			t.Errorf("%s: Subject %q, want %q", name, got, m.Subject)
		}
		if got := p.Header.Get("Reply-To"); got != "<support@example.com>" {
			t.Errorf("%s: Reply-To %q", name, got)
		}
		if date, err := p.Header.Date(); err != nil || !date.Equal(m.Date) {
			t.Errorf("%s: Date %v (%v), want %v", name, date, err, m.Date)
		}
		if p.Text != m.Text || p.HTML != m.HTML {
			t.Errorf("%s: got text %q and HTML %q, want %q and %q", name, p.Text, p.HTML, m.Text, m.HTML)
		}
	}
}

func TestFileMailerSameMessageIDOneFile(t *testing.T) {
	dir := t.TempDir()
	fm := NewFileMailer(dir)
	first := testMessage(1)
	second := first
	second.Text = "the second version\n"
	for _, m := range []Message{first, second} {
		if err := fm.Send(context.Background(), []Message{m})[0]; err != nil {
			t.Fatal(err)
		}
	}
	// And twice in one burst.
	for _, err := range fm.Send(context.Background(), []Message{first, second}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	names := emlFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("got files %v, want one for one Message-ID", names)
	}
	raw, err := os.ReadFile(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if got := parseMail(t, raw).Text; got != second.Text {
		t.Errorf("file holds text %q, want the last version %q", got, second.Text)
	}
}

func TestFileMailerErrors(t *testing.T) {
	t.Run("unusable message", func(t *testing.T) {
		dir := t.TempDir()
		msgs := testBurst(2)
		msgs[0].To = "nobody"
		errs := NewFileMailer(dir).Send(context.Background(), msgs)
		if !Permanent(errs[0]) || errs[1] != nil {
			t.Fatalf("got %v, want a permanent error then success", errs)
		}
		if names := emlFiles(t, dir); len(names) != 1 {
			t.Errorf("got files %v, want 1", names)
		}
	})
	t.Run("directory unusable", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for i, err := range NewFileMailer(filepath.Join(file, "mail")).Send(context.Background(), testBurst(2)) {
			if err == nil || Permanent(err) {
				t.Errorf("message %d: got %v, want a temporary error", i, err)
			}
		}
	})
	t.Run("context done", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for i, err := range NewFileMailer(dir).Send(ctx, testBurst(2)) {
			if !errors.Is(err, context.Canceled) || Permanent(err) {
				t.Errorf("message %d: got %v, want a temporary error wrapping context.Canceled", i, err)
			}
		}
		if names := emlFiles(t, dir); len(names) != 0 {
			t.Errorf("got files %v, want none", names)
		}
	})
}

func TestEMLFileName(t *testing.T) {
	long := "<" + strings.Repeat("a", 300) + "@example.com>"
	for _, tc := range []struct {
		id, want string
	}{
		{"<0123abcd@example.com>", "0123abcd@example.com.eml"},
		{"0123abcd@example.com", "0123abcd@example.com.eml"},
		{"<a.b+c=d-e_f@mail.example.com>", "a.b+c=d-e_f@mail.example.com.eml"},
	} {
		got, err := emlFileName(tc.id)
		if err != nil {
			t.Errorf("emlFileName(%q): %v", tc.id, err)
			continue
		}
		if got != tc.want {
			t.Errorf("emlFileName(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}

	// IDs that sanitize alike still get different names; odd ones are
	// safe file names.
	seen := map[string]string{}
	for _, id := range []string{"<a/b@x>", "<a_b@x>", "<a?b@x>", "<.hidden@x>", "<..@x>", "<a%b@x>", long} {
		got, err := emlFileName(id)
		if err != nil {
			t.Errorf("emlFileName(%q): %v", id, err)
			continue
		}
		if strings.ContainsAny(got, `/\`) || strings.HasPrefix(got, ".") || len(got) > 255 {
			t.Errorf("emlFileName(%q) = %q: not a safe file name", id, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("emlFileName(%q) = emlFileName(%q) = %q", id, other, got)
		}
		seen[got] = id
	}

	for _, id := range []string{"", "<>", "<no-at-sign>", "<a b@x>", "<a@b@c>", "<a\\b@x>"} {
		if _, err := emlFileName(id); !Permanent(err) {
			t.Errorf("emlFileName(%q): got %v, want a permanent error", id, err)
		}
	}
}
