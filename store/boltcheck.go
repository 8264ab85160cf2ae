package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"syscall"
)

// ErrDamagedFile is a database file whose structure ipnd will not open:
// a meta page that does not check, or a tree that does not hold
// together. Only a backup brings it back.
var ErrDamagedFile = errors.New("database file damaged")

// The bbolt file format, as far as checkFile reads it: a page is a
// 16-byte header (u64 id, u16 flags, u16 count, u32 overflow) and its
// elements; the first two pages are the meta pages, each holding, after
// the header, magic, version, page size, flags, the root bucket (u64
// root page, u64 sequence), the freelist page, the high water mark, the
// txid and an FNV-1a checksum of what comes before it.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeader      = 16
	branchElem      = 16 // u32 pos, u32 ksize, u64 pgid
	leafElem        = 16 // u32 flags, u32 pos, u32 ksize, u32 vsize
	branchPage      = 0x01
	leafPage        = 0x02
	bucketLeaf      = 0x01
	noFreelist      = ^uint64(0)
	metaSummedBytes = 56
)

type boltMeta struct {
	pageSize           uint32
	root, free, hwm    uint64
	txid               uint64
	ok                 bool
	why                string
	checksum, computed uint64
}

func readMeta(b []byte) boltMeta {
	if len(b) < pageHeader+metaSummedBytes+8 {
		return boltMeta{why: "the file ends inside it"}
	}
	m := b[pageHeader:]
	le := binary.LittleEndian
	bm := boltMeta{pageSize: le.Uint32(m[8:12]), root: le.Uint64(m[16:24]), free: le.Uint64(m[32:40]),
		hwm: le.Uint64(m[40:48]), txid: le.Uint64(m[48:56]), checksum: le.Uint64(m[56:64])}
	h := fnv.New64a()
	h.Write(m[:metaSummedBytes])
	bm.computed = h.Sum64()
	switch {
	case le.Uint32(m[0:4]) != boltMagic:
		bm.why = "its magic number is wrong"
	case le.Uint32(m[4:8]) != boltVersion:
		bm.why = "its version is wrong"
	case bm.checksum != bm.computed:
		bm.why = "its checksum does not match"
	default:
		bm.ok = true
	}
	return bm
}

// checkFile checks, before bbolt opens it, the database file at path:
// both meta pages must check, and the tree of the newest must hold
// together (every page within the file, referenced once, of the right
// type, its keys in order): what bbolt checks when it rebuilds its free
// page list on open, where it panics in a goroutine of its own (a stack
// trace, exit 2) instead of returning an error.
//
// A meta page that does not check is refused although bbolt would fall
// back to the other one: a meta page is written whole within one disk
// sector, so a bad one is damage, not a torn write, and the older state
// bbolt would fall back to may lack a transaction whose journal segments
// are gone, or share pages with newer ones. A missing or empty file
// passes (bbolt creates it), and so does a file another process holds
// bbolt's lock on (it is being written; opening it fails with ErrInUse).
// checkFile takes that lock, shared, while it reads, and lets it go: it
// runs before bbolt opens the file, since bbolt's open rebuilds the list.
func checkFile(path string) (err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return nil // a running ipnd writes it: bbolt's lock says so (ErrInUse)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if st.Size() == 0 {
		return nil
	}
	damaged := func(format string, a ...any) error {
		return fmt.Errorf("store: %s: %w: %s. ipnd will not start on it: stop, copy the data directory aside, then install "+
			"your latest backup with `ipnd restore BACKUP` (it also brings back the notifications the journal beside "+
			"the database still holds)", path, ErrDamagedFile, fmt.Sprintf(format, a...))
	}
	head := make([]byte, 4096)
	n, _ := f.ReadAt(head, 0)
	m0 := readMeta(head[:n])
	pageSize := int64(4096)
	if m0.ok {
		pageSize = int64(m0.pageSize)
	}
	if pageSize < 512 || pageSize > 1<<16 || pageSize&(pageSize-1) != 0 {
		return damaged("meta page 0 gives a page size of %d", pageSize)
	}
	second := make([]byte, pageHeader+metaSummedBytes+8)
	n, _ = f.ReadAt(second, pageSize)
	m1 := readMeta(second[:n])
	for i, m := range []boltMeta{m0, m1} {
		if !m.ok {
			return damaged("meta page %d (of the two at the start of the file) does not read back: %s", i, m.why)
		}
	}
	if m0.pageSize != m1.pageSize {
		return damaged("the meta pages give different page sizes (%d and %d)", m0.pageSize, m1.pageSize)
	}
	cur := m0
	if m1.txid > m0.txid {
		cur = m1
	}
	if cur.hwm < 2 {
		return damaged("its meta page gives a high water mark of %d pages", cur.hwm)
	}
	if uint64(st.Size()) < cur.hwm*uint64(pageSize) {
		return damaged("the file is truncated: %d bytes, its pages need %d", st.Size(), cur.hwm*uint64(pageSize))
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(cur.hwm)*int(pageSize), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("store: reading %s: %w", path, err)
	}
	defer syscall.Munmap(data)
	w := &treeWalk{data: data, pageSize: int(pageSize), hwm: cur.hwm, seen: make([]uint64, cur.hwm/64+1)}
	w.mark(0, 0)
	w.mark(1, 0)
	if cur.free != noFreelist {
		if p, ok := w.page(cur.free); ok {
			w.mark(cur.free, uint64(binary.LittleEndian.Uint32(p[12:16])))
		}
	}
	defer func() {
		if p := recover(); p != nil {
			err = damaged("its pages do not hold together: %v", p)
		}
	}()
	w.bucket(cur.root)
	if w.err != "" {
		return damaged("its pages do not hold together: %s (meta page txid %d)", w.err, cur.txid)
	}
	return nil
}

// treeWalk visits every page of the tree, as bbolt's freepages does.
type treeWalk struct {
	data     []byte
	pageSize int
	hwm      uint64
	seen     []uint64 // a bit per page
	err      string   // the first problem found
}

func (w *treeWalk) fail(format string, a ...any) {
	if w.err == "" {
		w.err = fmt.Sprintf(format, a...)
	}
}

// page returns the bytes of page id and its overflow pages.
func (w *treeWalk) page(id uint64) ([]byte, bool) {
	if id < 2 || id >= w.hwm {
		w.fail("page %d is past the end (high water mark %d)", id, w.hwm)
		return nil, false
	}
	start := int(id) * w.pageSize
	p := w.data[start : start+w.pageSize]
	if got := binary.LittleEndian.Uint64(p[0:8]); got != id {
		w.fail("page %d identifies itself as %d", id, got)
		return nil, false
	}
	overflow := uint64(binary.LittleEndian.Uint32(p[12:16]))
	if id+overflow >= w.hwm {
		w.fail("page %d with %d overflow pages is past the end (high water mark %d)", id, overflow, w.hwm)
		return nil, false
	}
	return w.data[start : start+int(overflow+1)*w.pageSize], true
}

// mark records pages id..id+overflow as reachable; false when one
// already was.
func (w *treeWalk) mark(id, overflow uint64) bool {
	for i := id; i <= id+overflow; i++ {
		if w.seen[i/64]&(1<<(i%64)) != 0 {
			w.fail("page %d is referenced twice", i)
			return false
		}
		w.seen[i/64] |= 1 << (i % 64)
	}
	return true
}

// bucket walks the tree of the bucket whose root page is root (0: an
// inline bucket, within its parent's page).
func (w *treeWalk) bucket(root uint64) {
	if root != 0 && w.err == "" {
		w.node(root, nil, nil)
	}
}

// node walks the page id and its subtree, whose keys must lie in
// [lo, hi) (nil: unbounded), and returns the subtree's greatest key.
func (w *treeWalk) node(id uint64, lo, hi []byte) []byte {
	p, ok := w.page(id)
	if !ok || !w.mark(id, uint64(binary.LittleEndian.Uint32(p[12:16]))) {
		return nil
	}
	flags, count := binary.LittleEndian.Uint16(p[8:10]), int(binary.LittleEndian.Uint16(p[10:12]))
	le := binary.LittleEndian
	var greatest []byte
	switch flags {
	case branchPage:
		running := lo
		for i := 0; i < count && w.err == ""; i++ {
			e := p[pageHeader+i*branchElem:]
			key := elemBytes(p, pageHeader+i*branchElem, le.Uint32(e[0:4]), le.Uint32(e[4:8]))
			w.order(id, i, key, running, hi)
			next := hi
			if i < count-1 {
				n := p[pageHeader+(i+1)*branchElem:]
				next = elemBytes(p, pageHeader+(i+1)*branchElem, le.Uint32(n[0:4]), le.Uint32(n[4:8]))
			}
			greatest = w.node(le.Uint64(e[8:16]), key, next)
			running = greatest
		}
	case leafPage:
		running := lo
		for i := 0; i < count && w.err == ""; i++ {
			off := pageHeader + i*leafElem
			e := p[off:]
			pos, ksize, vsize := le.Uint32(e[4:8]), le.Uint32(e[8:12]), le.Uint32(e[12:16])
			key := elemBytes(p, off, pos, ksize)
			w.order(id, i, key, running, hi)
			running, greatest = key, key
			if le.Uint32(e[0:4])&bucketLeaf != 0 {
				v := elemBytes(p, off, pos+ksize, vsize)
				if len(v) < 16 {
					w.fail("page %d: bucket %d has a %d-byte header", id, i, len(v))
					break
				}
				w.bucket(le.Uint64(v[0:8]))
			}
		}
	default:
		w.fail("page %d has type %#x, not a branch or leaf page", id, flags)
	}
	return greatest
}

// order checks, as bbolt does, that element i's key follows prev and
// lies below hi.
func (w *treeWalk) order(id uint64, i int, key, prev, hi []byte) {
	switch {
	case i == 0 && prev != nil && bytes.Compare(prev, key) > 0,
		i > 0 && bytes.Compare(prev, key) >= 0,
		hi != nil && bytes.Compare(key, hi) >= 0:
		w.fail("page %d: key %d out of order", id, i)
	}
}

// elemBytes is the n bytes at pos past the element at off in page p; it
// panics (recovered by checkFile) when they are not within the page.
func elemBytes(p []byte, off int, pos, n uint32) []byte {
	start := off + int(pos)
	return p[start : start+int(n) : start+int(n)]
}
