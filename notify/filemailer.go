package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FileMailer "sends" email by writing each message as an RFC 5322 .eml
// file into a directory: the mailer of the embedded defaults, when no
// SMTP host is configured, and handy for reviewing templates.
//
// Each file is named after the message's Message-ID, so writing the same
// message again replaces its file instead of adding one. A file appears
// complete or not at all: it is written to a temporary file, synced and
// renamed, and the directory is synced before Send reports success.
// Files are 0600; the directory is created 0700 if missing (an existing
// directory keeps its mode).
type FileMailer struct {
	dir string
}

// NewFileMailer returns a mailer writing into dir. Nothing is touched
// until the first Send.
func NewFileMailer(dir string) *FileMailer {
	return &FileMailer{dir: dir}
}

// Dir is the directory the mailer writes into.
func (f *FileMailer) Dir() string { return f.dir }

// Send is SendEach collecting the results: one error per message, in
// order.
func (f *FileMailer) Send(ctx context.Context, msgs []Message) []error {
	return collect(f, ctx, msgs)
}

// SendEach writes one file per message (see Mailer), reporting each once
// its file and the directory entry are synced. Unusable messages fail
// permanently; file system errors (a full disk, permissions) do not, so
// that they are retried once fixed.
func (f *FileMailer) SendEach(ctx context.Context, msgs []Message, done func(i int, err error) bool) {
	if len(msgs) == 0 {
		return
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		err = fmt.Errorf("file mailer: %w", err)
		for i := range msgs {
			done(i, err)
		}
		return
	}
	stopped := false
	for i, m := range msgs {
		if stopped {
			done(i, ErrBurstStopped)
			continue
		}
		if err := ctx.Err(); err != nil {
			done(i, fmt.Errorf("file mailer: %w", err))
			continue
		}
		var err error
		if err = f.write(m); err != nil {
			err = fmt.Errorf("file mailer: %w", err)
		} else if serr := syncDir(f.dir); serr != nil { // the rename is durable only once the directory is synced
			err = fmt.Errorf("file mailer: sync %s: %w", f.dir, serr)
		}
		stopped = !done(i, err)
	}
}

// write writes m to its file through a synced temporary file.
func (f *FileMailer) write(m Message) (err error) {
	msg, err := newMailMsg(m)
	if err != nil {
		return err
	}
	name, err := emlFileName(m.MessageID)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.dir, ".tmp-*.eml")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600 already; say so anyway, the
	// contents are customer data.
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = msg.WriteTo(tmp); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(f.dir, name))
}

// syncDir fsyncs a directory so that renames in it survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// maxEMLName keeps file names well under the usual 255-byte limit.
const maxEMLName = 180

// emlFileName is the file name for a Message-ID: the ID without its angle
// brackets, when it is made of letters, digits and ._+=@_- only (as
// MessageID's are) and does not start with a dot; otherwise those
// characters with the rest replaced by "_", plus a hash of the original
// so that different IDs never share a file.
func emlFileName(messageID string) (string, error) {
	bare, err := bareMessageID(messageID)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	changed := false
	for i, r := range bare {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("._+=@_-", r)
		if i == 0 && r == '.' {
			ok = false // no hidden files
		}
		if ok {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
			changed = true
		}
	}
	name := b.String()
	if len(name) > maxEMLName {
		name, changed = name[:maxEMLName], true
	}
	if changed {
		sum := sha256.Sum256([]byte(bare))
		name += "-" + hex.EncodeToString(sum[:6])
	}
	if strings.ContainsAny(name, `/\`) || name == "" {
		return "", errors.New("unusable file name") // cannot happen: kept as a guard
	}
	return name + ".eml", nil
}
