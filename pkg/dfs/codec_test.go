package dfs

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"unicode/utf16"
)

func u16z(s string) []byte { return appendUTF16Z(nil, utf16.Encode([]rune(s))) }

// samba3 lays out a V3 response by hand, as Samba's msdfs.c does for a link
// with two targets: header flags StorageServers, fixed parts first, then
// each entry's strings, offsets relative to the entry.
func samba3(consumed uint16, targets ...string) []byte {
	const path = `\10.213.0.1\dfs\multi`
	b := make([]byte, headerSize)
	binary.LittleEndian.PutUint16(b[0:], consumed)
	binary.LittleEndian.PutUint16(b[2:], uint16(len(targets)))
	binary.LittleEndian.PutUint32(b[4:], HeaderStorageServers)
	fixedEnd := headerSize + v3FixedSize*len(targets)
	var strs []byte
	for i, t := range targets {
		e := make([]byte, v3FixedSize)
		start := headerSize + v3FixedSize*i
		binary.LittleEndian.PutUint16(e[0:], 3)
		binary.LittleEndian.PutUint16(e[2:], v3FixedSize)
		binary.LittleEndian.PutUint32(e[8:], 600)
		p := fixedEnd + len(strs) - start
		strs = append(strs, u16z(path)...)
		a := fixedEnd + len(strs) - start
		strs = append(strs, u16z(path)...)
		n := fixedEnd + len(strs) - start
		strs = append(strs, u16z(t)...)
		binary.LittleEndian.PutUint16(e[12:], uint16(p))
		binary.LittleEndian.PutUint16(e[14:], uint16(a))
		binary.LittleEndian.PutUint16(e[16:], uint16(n))
		b = append(b, e...)
	}
	return append(b, strs...)
}

func TestParseSambaLinkReferral(t *testing.T) {
	const path = `\10.213.0.1\dfs\multi`
	r, err := ParseResponse(samba3(uint16(2*len(path)), `\10.213.0.2\shareA`, `\10.213.0.3\shareA`))
	if err != nil {
		t.Fatal(err)
	}
	want := Response{PathConsumed: uint16(2 * len(path)), Flags: HeaderStorageServers, Entries: []Entry{
		{Version: 3, TTL: 600, Path: path, AltPath: path, Target: `\10.213.0.2\shareA`},
		{Version: 3, TTL: 600, Path: path, AltPath: path, Target: `\10.213.0.3\shareA`},
	}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	again, err := EncodeResponse(r)
	if err != nil {
		t.Fatal(err)
	}
	if r2, err := ParseResponse(again); err != nil || !reflect.DeepEqual(r2, r) {
		t.Fatalf("round trip: %+v %v", r2, err)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	good := samba3(42, `\a\b`)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:7]},
		{"odd PathConsumed", mut(func(b []byte) []byte { b[0] = 41; return b })},
		{"more entries than bytes", mut(func(b []byte) []byte { b[2] = 2; return b })},
		{"too many entries", mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[2:], 1000); return b })},
		{"entry size past the end", mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[headerSize+2:], 5000); return b })},
		{"entry size below the fixed part", mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[headerSize+2:], 20); return b })},
		{"unknown version", mut(func(b []byte) []byte { b[headerSize] = 9; return b })},
		{"offset past the end", mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[headerSize+16:], 0xFFF0); return b })},
		{"string without terminator", good[:len(good)-2]},
		{"name list count huge", mut(func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[headerSize+6:], EntryNameListReferral)
			binary.LittleEndian.PutUint16(b[headerSize+14:], 60000)
			return b
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := ParseResponse(tc.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseResponse = %+v, %v; want ErrMalformed", r, err)
			}
		})
	}
}

func TestEntryVersions(t *testing.T) {
	r := Response{PathConsumed: 10, Flags: HeaderReferralServers | HeaderStorageServers | HeaderTargetFailback, Entries: []Entry{
		{Version: 1, ServerType: ServerTypeRoot, Target: `\srv\root`},
		{Version: 2, Proximity: 7, TTL: 300, Path: `\dom\root`, AltPath: `\dom\ROOT~1`, Target: `\srv2\root`},
		{Version: 4, Flags: EntryTargetSetBoundary, TTL: 1800, Path: `\dom\root\l`, AltPath: `\dom\root\l`, Target: `\srv3\s`,
			SiteGUID: [16]byte{1, 2, 3}},
		{Version: 3, Flags: EntryNameListReferral, TTL: 600, SpecialName: `\example.org`, Expanded: []string{`\dc1.example.org`, `\dc2`}},
		{Version: 3, Flags: EntryNameListReferral, SpecialName: `\empty`},
	}}
	b, err := EncodeResponse(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v\nwant %+v", got, r)
	}
}

func TestEncodeRequest(t *testing.T) {
	b, err := EncodeRequest(3, `\s\d`)
	want := []byte{3, 0, '\\', 0, 's', 0, '\\', 0, 'd', 0, 0, 0}
	if err != nil || !reflect.DeepEqual(b, want) {
		t.Fatalf("EncodeRequest = % x, %v; want % x", b, err, want)
	}
	for _, bad := range []struct {
		level uint16
		path  string
	}{{0, `\s`}, {5, `\s`}, {3, ""}, {3, "a\x00b"}} {
		if _, err := EncodeRequest(bad.level, bad.path); err == nil {
			t.Errorf("EncodeRequest(%d, %q) accepted", bad.level, bad.path)
		}
	}
}

func TestConsumed(t *testing.T) {
	const req = `\10.213.0.1\dfs\multi\sub\dir`
	for _, tc := range []struct {
		consumed     int
		prefix, rest string
		ok           bool
	}{
		{len(`\10.213.0.1\dfs\multi`), `\10.213.0.1\dfs\multi`, `sub\dir`, true},
		{len(`\10.213.0.1\dfs\multi\`), `\10.213.0.1\dfs\multi`, `sub\dir`, true},
		{len(req), req, "", true},
		{len(`\10.213.0.1\dfs\mu`), "", "", false}, // inside a component
		{len(req) + 1, "", "", false},              // past the request
		{0, "", "", false},
	} {
		prefix, rest, err := Consumed(req, Response{PathConsumed: uint16(2 * tc.consumed)})
		if (err == nil) != tc.ok || prefix != tc.prefix || rest != tc.rest {
			t.Errorf("Consumed(%d units) = %q, %q, %v", tc.consumed, prefix, rest, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("error %v is not ErrMalformed", err)
		}
	}
}

// FuzzParseResponse: no input panics, and whatever parses encodes to bytes
// that parse back to the same response.
func FuzzParseResponse(f *testing.F) {
	f.Add(samba3(42, `\10.213.0.2\shareA`, `\10.213.0.3\shareA`))
	b, _ := EncodeResponse(Response{Entries: []Entry{{Version: 1, Target: `\s\r`}, {Version: 3, Flags: EntryNameListReferral, SpecialName: `\d`, Expanded: []string{`\x`}}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		enc, err := EncodeResponse(r)
		if err != nil {
			t.Fatalf("parsed %+v but cannot encode it: %v", r, err)
		}
		r2, err := ParseResponse(enc)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v\n-> %+v, %v", r, r2, err)
		}
	})
}
