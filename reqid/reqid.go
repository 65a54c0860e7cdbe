package reqid

import (
	"bytes"
	"strconv"
)

// Marker starts every request ID on the wire: "hsid=" and 16 lowercase hex
// digits. In HTTP/1.1 it is a query parameter of the request target
// (GET /path?hsid=00000000000000a1 HTTP/1.1); in gRPC it is the request
// message's id field. A query parameter survives every proxy unchanged, and
// the fixed width lets the probe find it in a short captured prefix.
const Marker = "hsid="

// Len is the length of an encoded ID including the marker.
const Len = len(Marker) + 16

const hexdigits = "0123456789abcdef"

// Append appends the wire form of id ("hsid=" + 16 hex digits) to b.
func Append(b []byte, id uint64) []byte {
	return appendHex(append(b, Marker...), id)
}

// String is the wire form of id.
func String(id uint64) string { return string(Append(make([]byte, 0, Len), id)) }

// Find returns the first well-formed ID in p. A marker followed by fewer
// than 16 hex digits (a truncated capture) or by other bytes is skipped.
func Find(p []byte) (id uint64, ok bool) {
	for {
		i := bytes.Index(p, []byte(Marker))
		if i < 0 {
			return 0, false
		}
		p = p[i+len(Marker):]
		if len(p) >= 16 {
			if v, err := strconv.ParseUint(string(p[:16]), 16, 64); err == nil && isLowerHex(p[:16]) {
				return v, true
			}
		}
	}
}

func isLowerHex(p []byte) bool {
	for _, c := range p {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appendHex appends id as 16 lowercase hex digits.
func appendHex(b []byte, id uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexdigits[(id>>uint(shift))&0xf])
	}
	return b
}
