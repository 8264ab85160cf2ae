package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFulfilmentConfigChecked: ipnd check validates [fulfilment] and
// [[product]] (SPEC §11): defaults filled in, each file readable under
// files_dir, no path leading out of it, pool files with keys, unique ids.
func TestFulfilmentConfigChecked(t *testing.T) {
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	os.MkdirAll(files, 0o700)
	os.WriteFile(filepath.Join(files, "book.epub"), []byte("book"), 0o600)
	os.WriteFile(filepath.Join(dir, "outside.txt"), []byte("secret"), 0o600)
	os.Symlink(filepath.Join(dir, "outside.txt"), filepath.Join(files, "link.txt"))
	os.WriteFile(filepath.Join(dir, "pool.txt"), []byte("# keys\nK-1\n\nK-2\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "empty.txt"), []byte("# none\n"), 0o600)
	base := "[server]\npublic_url = \"https://shop.example.com/\"\n[store]\npath = \"" + filepath.Join(dir, "ipnd.db") + "\"\n" +
		"[[gateway]]\nname = \"test\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n" +
		"[fulfilment]\nfiles_dir = \"" + files + "\"\n"
	product := func(s string) string { return base + "[[product]]\nid = \"book\"\nfile = \"book.epub\"\n" + s }

	out, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, product("license = \"pool\"\nlicense_pool = \""+filepath.Join(dir, "pool.txt")+"\"\n")))
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{`# product "book": book.epub, 5 downloads per link for 168h0m0s, license pool (2 keys in`,
		"# download links: https://shop.example.com/dl/<token>", `license_grace = "72h0m0s"`, "license_activations = 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	for _, tc := range []struct{ body, want string }{
		{product("") + "[[product]]\nid = \"book\"\nfile = \"book.epub\"\n", `product[1].id = "book": another product has this id`},
		{product("")[:len(base)] + "[[product]]\nid = \"x\"\nfile = \"missing.pdf\"\n", `product[0].file = "missing.pdf": cannot be read`},
		{base + "[[product]]\nid = \"x\"\nfile = \"../outside.txt\"\n", `product[0].file = "../outside.txt": must be a relative path under fulfilment.files_dir`},
		{base + "[[product]]\nid = \"x\"\nfile = \"link.txt\"\n", `product[0].file = "link.txt": leads out of fulfilment.files_dir`},
		{base + "[[product]]\nid = \"x\"\nfile = \"" + filepath.Join(files, "book.epub") + "\"\n", "must be a relative path"},
		{product("license = \"pool\"\nlicense_pool = \"" + filepath.Join(dir, "empty.txt") + "\"\n"), "has no keys"},
		{product("license = \"pool\"\n"), `product[0].license_pool = "": is needed with license = "pool"`},
		{product("license = \"forever\"\n"), `product[0].license = "forever": must be`},
		{product("license_format = \"qr\"\n"), `product[0].license_format = "qr": must be`},
		{product("download_limit = -1\n"), `product[0].download_limit = -1`},
		{strings.Replace(product(""), "public_url = \"https://shop.example.com/\"", "", 1), "server.public_url"},
		{strings.Replace(product(""), "files_dir", "#", 1), "fulfilment.files_dir"},
		{base + "[[product]]\nid = \"a b\"\nfile = \"book.epub\"\n", `product[0].id = "a b"`},
	} {
		_, err := runCmd(t, envFunc(), "check", "-config", writeConfig(t, tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check of\n%s\n= %v, want %q", tc.body, err, tc.want)
		}
	}

	// public_url defaults to the first ACME domain.
	cfg, err := loadConfig(writeConfig(t, "[server]\nlisten = \":443\"\nacme_domains = [\"shop.example.com\"]\n[store]\npath = \""+filepath.Join(dir, "ipnd.db")+"\"\n[[gateway]]\nname = \"test\"\nkind = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"), envFunc())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.PublicURL != "https://shop.example.com" {
		t.Errorf("public_url = %q, want https://shop.example.com", cfg.Server.PublicURL)
	}
}
