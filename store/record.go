package store

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"time"

	"ipnd/ipn"
)

// recordVersion is the first byte of every encoded log record;
// recordPurged that of a record whose body, headers and remote address
// store.raw_retention removed (see encodePurged).
const (
	recordVersion = 1
	recordPurged  = 2
)

// ErrCorrupt is returned when a stored record cannot be decoded (it is
// ipn.ErrCorrupt).
var ErrCorrupt = ipn.ErrCorrupt

// encodeRecord serialises the raw fields of n (not its ID, which is the key):
//
//	version byte | uvarint unix-nano received_at |
//	str gateway | str remote | str content type | str dedup key |
//	uvarint header count | (str name | uvarint n | n × str value)… | str body
//
// where str is a uvarint length followed by the bytes; then packed (see
// codec.go) when that makes it shorter. The body's bytes come back
// exactly as received.
func encodeRecord(n *ipn.Notification) []byte {
	return packRecord(plainRecord(n))
}

// packRecord is the plain record rec packed, when that is shorter (and
// not below minRecord); a record packed already (a journal written by an
// earlier build) is returned as it is.
func packRecord(rec []byte) []byte {
	if len(rec) == 0 || rec[0] == tagRecord {
		return rec
	}
	if packed := recordPacker.pack(rec); len(packed) >= minRecord {
		return packed
	}
	return rec
}

// minRecord is the least length of a record (the journal's minFrame
// counts on it); a shorter packing is not used.
const minRecord = 8

func plainRecord(n *ipn.Notification) []byte {
	size := 1 + binary.MaxVarintLen64*6 + len(n.Gateway) + len(n.RemoteAddr) +
		len(n.ContentType) + len(n.DedupKey) + len(n.Body)
	for k, vs := range n.Headers {
		size += len(k) + binary.MaxVarintLen64*2
		for _, v := range vs {
			size += len(v) + binary.MaxVarintLen64
		}
	}
	b := make([]byte, 0, size)
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(n.ReceivedAt.UnixNano()))
	for _, s := range []string{n.Gateway, n.RemoteAddr, n.ContentType, n.DedupKey} {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Headers)))
	for k, vs := range n.Headers {
		b = appendStr(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendStr(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(n.Body)))
	return append(b, n.Body...)
}

// encodePurged is the record of n once its raw data is purged: the
// layout of encodeRecord with no remote address, no headers and an empty
// body, followed by str body SHA-256 (hex) | uvarint unix-nano purged at.
func encodePurged(n *ipn.Notification) []byte {
	p := *n
	p.RemoteAddr, p.Headers, p.Body = "", nil, nil
	b := plainRecord(&p) // short: not packed
	b[0] = recordPurged
	b = appendStr(b, n.BodySHA256)
	return binary.AppendUvarint(b, uint64(n.Purged.UnixNano()))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// recordGateway is the gateway of record id (data), read from its first
// bytes without decoding, or mostly without unpacking, the rest.
func recordGateway(id uint64, data []byte) (string, error) {
	if len(data) > 0 && data[0] == tagRecord {
		// Version, received_at and the gateway's length take at most 21
		// bytes; a longer name than that prefix holds is read the long way.
		if plain, err := recordPacker.unpackPrefix(data, 21+128); err == nil {
			if g, ok := plainGateway(plain); ok {
				return g, nil
			}
		}
		n, err := decodeRecord(id, data)
		if err != nil {
			return "", err
		}
		return n.Gateway, nil
	}
	if g, ok := plainGateway(data); ok {
		return g, nil
	}
	return "", fmt.Errorf("%w: id %d: header", ErrCorrupt, id)
}

// plainGateway reads the gateway from the start of a plain record.
func plainGateway(b []byte) (string, bool) {
	d := decoder{b: b}
	if v := d.byte(); v != recordVersion && v != recordPurged {
		return "", false
	}
	d.uvarint()
	g := d.str()
	return g, !d.err
}

// decodeRecord is the inverse of encodeRecord. It never panics: anything
// that does not fit is ErrCorrupt. The result does not alias data.
func decodeRecord(id uint64, data []byte) (*ipn.Notification, error) {
	if len(data) > 0 && data[0] == tagRecord {
		plain, err := recordPacker.unpack(data)
		if err != nil {
			return nil, fmt.Errorf("%w: id %d: %v", ErrCorrupt, id, err)
		}
		data = plain
	}
	d := decoder{b: data}
	v := d.byte()
	if v != recordVersion && v != recordPurged {
		return nil, fmt.Errorf("%w: id %d: version %d", ErrCorrupt, id, v)
	}
	n := &ipn.Notification{ID: id}
	n.ReceivedAt = time.Unix(0, int64(d.uvarint())).UTC()
	n.Gateway = d.str()
	n.RemoteAddr = d.str()
	n.ContentType = d.str()
	n.DedupKey = d.str()
	nh := d.uvarint()
	if nh > uint64(len(d.b)) {
		d.err = true
	}
	if !d.err && nh > 0 {
		n.Headers = make(http.Header, nh)
	}
	for i := uint64(0); i < nh && !d.err; i++ {
		k := d.str()
		nv := d.uvarint()
		if nv > uint64(len(d.b)) {
			d.err = true
			break
		}
		vs := make([]string, 0, nv)
		for j := uint64(0); j < nv && !d.err; j++ {
			vs = append(vs, d.str())
		}
		n.Headers[k] = vs
	}
	n.Body = []byte(d.str())
	if v == recordPurged {
		if len(n.Body) != 0 || n.Headers != nil || n.RemoteAddr != "" {
			d.err = true // a purged record keeps no raw data
		}
		n.BodySHA256 = d.str()
		n.Purged = time.Unix(0, int64(d.uvarint())).UTC()
		n.Body = nil
	}
	if d.err || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: id %d", ErrCorrupt, id)
	}
	return n, nil
}

type decoder struct {
	b   []byte
	err bool
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.err = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	l := d.uvarint()
	if d.err || l > uint64(len(d.b)) {
		d.err = true
		return ""
	}
	s := string(d.b[:l])
	d.b = d.b[l:]
	return s
}
