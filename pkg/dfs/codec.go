// Package dfs resolves DFS paths: the MS-DFSC referral messages (this
// file), a referral cache (cache.go) and the walk from a DFS root through
// links to the storage targets (resolve.go). It does no I/O of its own; a
// Referrer (pkg/smb) carries the messages.
package dfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
)

// FSCTL_DFS_GET_REFERRALS, sent in an SMB2 IOCTL on IPC$ (MS-SMB2 2.2.31).
const FsctlGetReferrals = 0x00060194

// Referral header flags (MS-DFSC 2.2.4).
const (
	HeaderReferralServers = 0x1 // the entries are DFS root servers
	HeaderStorageServers  = 0x2 // the entries are storage servers
	HeaderTargetFailback  = 0x4 // clients should fail back to a preferred target
)

// Entry flags and server types (MS-DFSC 2.2.5).
const (
	EntryNameListReferral    = 0x2 // a domain or DC referral: SpecialName and ExpandedNames
	EntryTargetSetBoundary   = 0x4 // V4: the first entry of a set of equal-cost targets
	ServerTypeLink           = 0x0
	ServerTypeRoot           = 0x1
	maxNameBytes             = 2 * 1024 // a UNC path component list is far shorter
	maxEntries               = 256
	headerSize               = 8
	v1FixedSize, v2FixedSize = 8, 22
	v3FixedSize              = 34
	v3NameListFixedSize      = 18
)

// ErrMalformed wraps every decoding error: the bytes came from a server and
// are not to be trusted.
var ErrMalformed = errors.New("malformed DFS referral")

// Entry is one referral entry. For a V1 entry only Target (its ShareName)
// is set; a name-list entry (domain referral) has SpecialName and Expanded
// instead of the paths.
type Entry struct {
	Version     uint16
	ServerType  uint16
	Flags       uint16
	Proximity   uint32 // V2 only
	TTL         uint32 // seconds; V2 and later
	Path        string // DFSPath: the prefix of the request this entry answers
	AltPath     string // DFSAlternatePath (8.3 form)
	Target      string // NetworkAddress: \server\share[\path]
	SiteGUID    [16]byte
	SpecialName string
	Expanded    []string
}

// Response is RESP_GET_DFS_REFERRAL.
type Response struct {
	PathConsumed uint16 // bytes of the request path (UTF-16) the entries answer
	Flags        uint32 // Header* flags
	Entries      []Entry
}

// EncodeRequest returns REQ_GET_DFS_REFERRAL for path (\server\share\...)
// asking for entries up to maxLevel (1–4).
func EncodeRequest(maxLevel uint16, path string) ([]byte, error) {
	if maxLevel < 1 || maxLevel > 4 {
		return nil, fmt.Errorf("referral level %d: want 1 to 4", maxLevel)
	}
	u := utf16.Encode([]rune(path))
	if len(path) == 0 || 2*len(u) > maxNameBytes || strings.ContainsRune(path, 0) {
		return nil, fmt.Errorf("referral path %q: empty, too long or with a NUL", path)
	}
	b := make([]byte, 2, 2+2*len(u)+2)
	binary.LittleEndian.PutUint16(b, maxLevel)
	return appendUTF16Z(b, u), nil
}

// ParseResponse decodes RESP_GET_DFS_REFERRAL, checking every length and
// offset before it reads.
func ParseResponse(b []byte) (Response, error) {
	if len(b) < headerSize {
		return Response{}, fmt.Errorf("%w: %d bytes is shorter than the header", ErrMalformed, len(b))
	}
	r := Response{
		PathConsumed: binary.LittleEndian.Uint16(b[0:2]),
		Flags:        binary.LittleEndian.Uint32(b[4:8]),
	}
	n := int(binary.LittleEndian.Uint16(b[2:4]))
	if n > maxEntries {
		return Response{}, fmt.Errorf("%w: %d entries", ErrMalformed, n)
	}
	if r.PathConsumed%2 != 0 {
		return Response{}, fmt.Errorf("%w: PathConsumed %d is not a whole number of UTF-16 units", ErrMalformed, r.PathConsumed)
	}
	off := headerSize
	for i := range n {
		if len(b)-off < 4 {
			return Response{}, fmt.Errorf("%w: entry %d: truncated", ErrMalformed, i)
		}
		size := int(binary.LittleEndian.Uint16(b[off+2 : off+4]))
		if size > len(b)-off {
			return Response{}, fmt.Errorf("%w: entry %d: size %d past the end", ErrMalformed, i, size)
		}
		e, err := parseEntry(b[off:], size)
		if err != nil {
			return Response{}, fmt.Errorf("entry %d: %w", i, err)
		}
		r.Entries = append(r.Entries, e)
		off += size
	}
	return r, nil
}

// parseEntry decodes the entry at the start of b (which runs to the end of
// the message: offsets may point past the entry's own Size, into the string
// area after all entries); size is its declared Size.
func parseEntry(b []byte, size int) (Entry, error) {
	e := Entry{Version: binary.LittleEndian.Uint16(b[0:2])}
	var fixed int
	switch e.Version {
	case 1:
		fixed = v1FixedSize
	case 2:
		fixed = v2FixedSize
	case 3, 4:
		fixed = v3FixedSize
	default:
		return Entry{}, fmt.Errorf("%w: version %d", ErrMalformed, e.Version)
	}
	if size < v1FixedSize || len(b) < v1FixedSize {
		return Entry{}, fmt.Errorf("%w: size %d", ErrMalformed, size)
	}
	e.ServerType = binary.LittleEndian.Uint16(b[4:6])
	e.Flags = binary.LittleEndian.Uint16(b[6:8])
	var err error
	switch {
	case e.Version == 1:
		e.Target, _, err = utf16Z(b[:size], v1FixedSize)
		return e, err
	case e.Version >= 3 && e.Flags&EntryNameListReferral != 0:
		if size < v3NameListFixedSize {
			return Entry{}, fmt.Errorf("%w: name-list entry size %d", ErrMalformed, size)
		}
		e.TTL = binary.LittleEndian.Uint32(b[8:12])
		if e.SpecialName, _, err = utf16Z(b, int(binary.LittleEndian.Uint16(b[12:14]))); err != nil {
			return Entry{}, fmt.Errorf("special name: %w", err)
		}
		count, at := int(binary.LittleEndian.Uint16(b[14:16])), int(binary.LittleEndian.Uint16(b[16:18]))
		if count > maxEntries {
			return Entry{}, fmt.Errorf("%w: %d expanded names", ErrMalformed, count)
		}
		for range count {
			name, next, err := utf16Z(b, at)
			if err != nil {
				return Entry{}, fmt.Errorf("expanded name: %w", err)
			}
			e.Expanded, at = append(e.Expanded, name), next
		}
		return e, nil
	}
	if size < fixed {
		return Entry{}, fmt.Errorf("%w: V%d entry size %d < %d", ErrMalformed, e.Version, size, fixed)
	}
	p := 8
	if e.Version == 2 {
		e.Proximity = binary.LittleEndian.Uint32(b[8:12])
		p = 12
	}
	e.TTL = binary.LittleEndian.Uint32(b[p : p+4])
	offs := [3]int{}
	for i := range offs {
		offs[i] = int(binary.LittleEndian.Uint16(b[p+4+2*i : p+6+2*i]))
	}
	if e.Version >= 3 {
		copy(e.SiteGUID[:], b[18:34])
	}
	if e.Path, _, err = utf16Z(b, offs[0]); err != nil {
		return Entry{}, fmt.Errorf("DFS path: %w", err)
	}
	if e.AltPath, _, err = utf16Z(b, offs[1]); err != nil {
		return Entry{}, fmt.Errorf("alternate path: %w", err)
	}
	if e.Target, _, err = utf16Z(b, offs[2]); err != nil {
		return Entry{}, fmt.Errorf("network address: %w", err)
	}
	return e, nil
}

// utf16Z reads a NUL-terminated UTF-16LE string at off in b and returns
// it with the offset after its terminator.
func utf16Z(b []byte, off int) (string, int, error) {
	if off < 0 || off > len(b) {
		return "", 0, fmt.Errorf("%w: string offset %d past the end (%d bytes)", ErrMalformed, off, len(b))
	}
	var u []uint16
	for i := off; ; i += 2 {
		if i+2 > len(b) {
			return "", 0, fmt.Errorf("%w: string at %d has no terminator", ErrMalformed, off)
		}
		c := binary.LittleEndian.Uint16(b[i : i+2])
		if c == 0 {
			return string(utf16.Decode(u)), i + 2, nil
		}
		if 2*len(u) >= maxNameBytes {
			return "", 0, fmt.Errorf("%w: string at %d over %d bytes", ErrMalformed, off, maxNameBytes)
		}
		u = append(u, c)
	}
}

func appendUTF16Z(b []byte, u []uint16) []byte {
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, 0, 0)
}

// EncodeResponse encodes r as a server would: the fixed parts of the
// entries one after the other, then their strings, each entry's offsets
// relative to its own start. For tests and the in-process responder.
func EncodeResponse(r Response) ([]byte, error) {
	if len(r.Entries) > maxEntries || r.PathConsumed%2 != 0 {
		return nil, fmt.Errorf("%w: %d entries, PathConsumed %d", ErrMalformed, len(r.Entries), r.PathConsumed)
	}
	fixedOf := func(e Entry) (int, error) {
		switch {
		case e.Version == 1:
			return v1FixedSize + 2*len(utf16.Encode([]rune(e.Target))) + 2, nil
		case e.Version == 2:
			return v2FixedSize, nil
		case (e.Version == 3 || e.Version == 4) && e.Flags&EntryNameListReferral != 0:
			return v3NameListFixedSize, nil
		case e.Version == 3 || e.Version == 4:
			return v3FixedSize, nil
		}
		return 0, fmt.Errorf("%w: version %d", ErrMalformed, e.Version)
	}
	b := make([]byte, headerSize)
	binary.LittleEndian.PutUint16(b[0:2], r.PathConsumed)
	binary.LittleEndian.PutUint16(b[2:4], uint16(len(r.Entries)))
	binary.LittleEndian.PutUint32(b[4:8], r.Flags)
	starts := make([]int, len(r.Entries))
	for i, e := range r.Entries {
		if err := checkStrings(e); err != nil {
			return nil, err
		}
		size, err := fixedOf(e)
		if err != nil {
			return nil, err
		}
		starts[i] = len(b)
		b = append(b, make([]byte, size)...)
		f := b[starts[i]:]
		binary.LittleEndian.PutUint16(f[0:2], e.Version)
		binary.LittleEndian.PutUint16(f[2:4], uint16(size))
		binary.LittleEndian.PutUint16(f[4:6], e.ServerType)
		binary.LittleEndian.PutUint16(f[6:8], e.Flags)
		if e.Version == 1 {
			copy(f[v1FixedSize:], appendUTF16Z(nil, utf16.Encode([]rune(e.Target))))
		}
	}
	for i, e := range r.Entries {
		if e.Version == 1 {
			continue
		}
		rel := func() uint16 { return uint16(len(b) - starts[i]) }
		put := func(at int, s string) error {
			if len(b)-starts[i] > 0xFFFF {
				return fmt.Errorf("%w: strings past a 16-bit offset", ErrMalformed)
			}
			binary.LittleEndian.PutUint16(b[starts[i]+at:], rel())
			b = appendUTF16Z(b, utf16.Encode([]rune(s)))
			return nil
		}
		f := b[starts[i]:]
		var err error
		switch {
		case e.Version == 2:
			binary.LittleEndian.PutUint32(f[8:12], e.Proximity)
			binary.LittleEndian.PutUint32(f[12:16], e.TTL)
			err = errors.Join(put(16, e.Path), put(18, e.AltPath), put(20, e.Target))
		case e.Flags&EntryNameListReferral != 0:
			binary.LittleEndian.PutUint32(f[8:12], e.TTL)
			binary.LittleEndian.PutUint16(f[14:16], uint16(len(e.Expanded)))
			err = put(12, e.SpecialName)
			if len(e.Expanded) > 0 {
				if len(b)-starts[i] > 0xFFFF {
					return nil, fmt.Errorf("%w: strings past a 16-bit offset", ErrMalformed)
				}
				binary.LittleEndian.PutUint16(b[starts[i]+16:], rel())
				for _, name := range e.Expanded {
					b = appendUTF16Z(b, utf16.Encode([]rune(name)))
				}
			}
		default:
			binary.LittleEndian.PutUint32(f[8:12], e.TTL)
			copy(f[18:34], e.SiteGUID[:])
			err = errors.Join(put(12, e.Path), put(14, e.AltPath), put(16, e.Target))
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func checkStrings(e Entry) error {
	for _, s := range append([]string{e.Path, e.AltPath, e.Target, e.SpecialName}, e.Expanded...) {
		if strings.ContainsRune(s, 0) || 2*len(utf16.Encode([]rune(s))) >= maxNameBytes {
			return fmt.Errorf("%w: string %q has a NUL or is too long", ErrMalformed, s)
		}
	}
	if len(e.Expanded) > maxEntries {
		return fmt.Errorf("%w: %d expanded names", ErrMalformed, len(e.Expanded))
	}
	return nil
}

// Consumed splits the request path at the response's PathConsumed: the
// prefix the referral answers and the rest below it (without its leading
// backslash). PathConsumed must fall inside the request and on a path
// component boundary; servers count it in bytes of UTF-16.
func Consumed(request string, r Response) (prefix, rest string, err error) {
	u := utf16.Encode([]rune(request))
	n := int(r.PathConsumed) / 2
	if n == 0 || n > len(u) {
		return "", "", fmt.Errorf("%w: PathConsumed %d bytes outside the %d-byte request %q", ErrMalformed, r.PathConsumed, 2*len(u), request)
	}
	prefix = string(utf16.Decode(u[:n]))
	rest = string(utf16.Decode(u[n:]))
	switch {
	case rest == "":
	case strings.HasPrefix(rest, `\`):
		rest = rest[1:]
	case strings.HasSuffix(prefix, `\`):
		prefix = prefix[:len(prefix)-1]
	default:
		return "", "", fmt.Errorf("%w: PathConsumed %d bytes splits %q inside a component", ErrMalformed, r.PathConsumed, request)
	}
	return prefix, rest, nil
}
