package store

import (
	"encoding/binary"
	"fmt"
)

// The codec as first written, kept to check that the faster one packs
// to the same bytes and unpacks the same (codec_test.go).

// referencePack is pack as it was first written (a copy of the
// dictionary's table per pack): pack must give the same bytes.
// pack returned plain packed, or plain itself when it is short or would
// not shrink. It does not keep plain. Greedy matching with one step of
// lazy evaluation (a longer match one byte on wins).
func referencePack(p *packer, plain []byte) []byte {
	if len(plain) < packMin || len(plain) > maxUnpacked || writePlain {
		return plain
	}
	table := p.table // a copy, written by this pack
	buf := append(append([]byte(nil), p.dict...), plain...)
	out := make([]byte, 0, len(plain)/2+16)
	out = append(out, p.tag)
	out = binary.AppendUvarint(out, uint64(len(plain)))
	lit, i, end := len(p.dict), len(p.dict), len(buf)
	for i+minMatch <= end {
		c, m := referenceLongest(&table, buf, i)
		if m == 0 {
			i++
			continue
		}
		for i+1+minMatch <= end {
			c2, m2 := referenceLongest(&table, buf, i+1)
			if m2 <= m {
				break
			}
			i, c, m = i+1, c2, m2
		}
		for i > lit && c > 0 && buf[c-1] == buf[i-1] { // grow it backwards over pending literals
			i, c, m = i-1, c-1, m+1
		}
		out = appendSeq(out, buf[lit:i], m, i-c)
		if len(out) >= len(plain) {
			return plain
		}
		// i+1 is in the table already when lazy evaluation looked at it.
		for j := i + 2; j < i+m && j+minMatch <= end; j++ {
			table.add(buf, j)
		}
		i += m
		lit = i
	}
	if lit < end {
		out = appendSeq(out, buf[lit:end], 0, 0)
	}
	if len(out) >= len(plain) {
		return plain
	}
	return out
}

func referenceLongest(t *hashTable, buf []byte, i int) (at, length int) {
	e := &t[hash4(buf[i:])]
	want := binary.LittleEndian.Uint32(buf[i:])
	for _, c := range e {
		if c == noEntry || binary.LittleEndian.Uint32(buf[c:]) != want {
			continue
		}
		m := matchLen(buf, int(c), i)
		if m > length {
			at, length = int(c), m
		}
	}
	copy(e[1:], e[:ways-1])
	e[0] = int32(i)
	return at, length
}

// referenceUnpack is unpack as it was first written (the dictionary
// copied in front of the output).
// unpack returned the plain bytes of packed, whose first byte is p's tag.
// It never panics; the result does not alias packed.
func referenceUnpack(p *packer, packed []byte) ([]byte, error) {
	n, k := binary.Uvarint(packed[1:])
	if k <= 0 || n > maxUnpacked || n < packMin {
		return nil, fmt.Errorf("%w: length", errPacked)
	}
	in := packed[1+k:]
	base := len(p.dict)
	total := base + int(n)
	buf := make([]byte, base, total)
	copy(buf, p.dict)
	bad := func(what string) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s at output byte %d", errPacked, what, len(buf)-base)
	}
	uvarint := func() (uint64, bool) {
		v, k := binary.Uvarint(in)
		if k <= 0 {
			return 0, false
		}
		in = in[k:]
		return v, true
	}
	for len(buf) < total {
		if len(in) == 0 {
			return bad("end of input")
		}
		tok := in[0]
		in = in[1:]
		l, ml := uint64(tok>>4), uint64(tok&15)
		if l == 15 {
			x, ok := uvarint()
			if !ok || x > uint64(total) {
				return bad("literal count")
			}
			l += x
		}
		if l > uint64(len(in)) || l > uint64(total-len(buf)) {
			return bad("literals out of bounds")
		}
		buf = append(buf, in[:l]...)
		in = in[l:]
		if len(buf) == total {
			break
		}
		d, ok := uvarint()
		if !ok || d == 0 || d > uint64(len(buf)) {
			return bad("distance")
		}
		if ml == 15 {
			x, ok := uvarint()
			if !ok || x > uint64(total) {
				return bad("match length")
			}
			ml += x
		}
		m := ml + minMatch
		if m > uint64(total-len(buf)) {
			return bad("match out of bounds")
		}
		from := len(buf) - int(d)
		if int(d) >= int(m) {
			buf = append(buf, buf[from:from+int(m)]...)
		} else {
			for j := range int(m) { // overlapping: byte by byte
				buf = append(buf, buf[from+j])
			}
		}
	}
	if len(in) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the end", errPacked, len(in))
	}
	return buf[base:], nil
}
