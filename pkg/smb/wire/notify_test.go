package wire

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"unicode/utf16"
)

func TestCreateDirRequest(t *testing.T) {
	b, err := CreateDirRequest(5, 0x1122, 7, "/base/vol-1/", 8)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(b[4:])
	if err != nil || h.Command != CmdCreate || h.MessageID != 5 || h.SessionID != 0x1122 || h.TreeID != 7 || h.CreditCharge != 1 {
		t.Fatalf("header %+v, %v", h, err)
	}
	if got := binary.LittleEndian.Uint16(b[4+14:]); got != 8 {
		t.Fatalf("CreditRequest %d", got)
	}
	body := b[4+HeaderSize:]
	off, n := binary.LittleEndian.Uint16(body[44:46]), binary.LittleEndian.Uint16(body[46:48])
	u := make([]uint16, n/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[4+int(off)+2*i:])
	}
	if got := string(utf16.Decode(u)); got != `base\vol-1` {
		t.Fatalf("name %q", got)
	}
	if int(binary.BigEndian.Uint32(b[:4])) != len(b)-4 {
		t.Fatal("transport length")
	}
	root, err := CreateDirRequest(1, 1, 1, "", 1)
	if err != nil || len(root) != 4+HeaderSize+createFixed+1 || binary.LittleEndian.Uint16(root[4+HeaderSize+46:]) != 0 {
		t.Fatalf("share root: %d bytes, %v", len(root), err)
	}
	for _, bad := range []string{`a\b`, "a//b", "a\x00b", string(make([]byte, MaxNameBytes))} {
		if _, err := CreateDirRequest(1, 1, 1, bad, 1); err == nil {
			t.Errorf("CreateDirRequest(%q) accepted", bad[:min(len(bad), 8)])
		}
	}
}

func createResponse(fid FileID) []byte {
	m := make([]byte, HeaderSize+createRespFixed)
	binary.LittleEndian.PutUint32(m[0:4], protocolSMB2)
	binary.LittleEndian.PutUint16(m[4:6], HeaderSize)
	binary.LittleEndian.PutUint16(m[HeaderSize:], createRespFixed+1)
	copy(m[HeaderSize+64:], fid[:])
	return m
}

func TestCreateFileID(t *testing.T) {
	want := FileID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if got, err := CreateFileID(createResponse(want)); err != nil || got != want {
		t.Fatalf("CreateFileID = %v, %v", got, err)
	}
	if _, err := CreateFileID(createResponse(want)[:HeaderSize+40]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short: %v", err)
	}
	bad := createResponse(want)
	bad[HeaderSize] = 9
	if _, err := CreateFileID(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("structure size: %v", err)
	}
}

func TestChangeNotifyAndCancelRequests(t *testing.T) {
	fid := FileID{9: 1}
	b, err := ChangeNotifyRequest(11, 2, 3, fid, NotifyDirName|NotifyFileName, 4096, false, 4)
	if err != nil {
		t.Fatal(err)
	}
	body := b[4+HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != notifyBody || binary.LittleEndian.Uint16(body[2:4]) != 0 ||
		binary.LittleEndian.Uint32(body[4:8]) != 4096 || FileID(body[8:24]) != fid || binary.LittleEndian.Uint32(body[24:28]) != 3 {
		t.Fatalf("body % x", body)
	}
	if tree, _ := ChangeNotifyRequest(11, 2, 3, fid, 1, 1, true, 1); binary.LittleEndian.Uint16(tree[4+HeaderSize+2:]) != 1 {
		t.Fatal("WATCH_TREE not set")
	}
	for _, n := range []uint32{0, MaxNotifyOutput + 1} {
		if _, err := ChangeNotifyRequest(1, 1, 1, fid, 1, n, false, 1); err == nil {
			t.Errorf("output %d accepted", n)
		}
	}
	c := CancelRequest(11, 2, 0xABCD, 3)
	h, err := ParseHeader(c[4:])
	if err != nil || h.Command != CmdCancel || h.MessageID != 11 || h.CreditCharge != 0 || h.CreditResponse != 0 || h.AsyncID != 0xABCD || h.Flags != FlagAsync {
		t.Fatalf("async cancel %+v, %v", h, err)
	}
	if h, _ := ParseHeader(CancelRequest(11, 2, 0, 3)[4:]); h.Flags != 0 || h.TreeID != 3 {
		t.Fatalf("sync cancel %+v", h)
	}
	cl := CloseRequest(12, 2, 3, fid, 1)
	if FileID(cl[4+HeaderSize+8:4+HeaderSize+24]) != fid {
		t.Fatal("close FileId")
	}
}

// notifyResponse is a CHANGE_NOTIFY response carrying out at off.
func notifyResponse(out []byte, off uint16) []byte {
	m := make([]byte, int(off)+len(out))
	binary.LittleEndian.PutUint32(m[0:4], protocolSMB2)
	binary.LittleEndian.PutUint16(m[4:6], HeaderSize)
	binary.LittleEndian.PutUint16(m[HeaderSize:], notifyRespFixed+1)
	binary.LittleEndian.PutUint16(m[HeaderSize+2:], off)
	binary.LittleEndian.PutUint32(m[HeaderSize+4:], uint32(len(out))) //nolint:gosec // test sizes
	copy(m[off:], out)
	return m
}

func TestNotifyRoundTrip(t *testing.T) {
	events := []NotifyEvent{
		{ActionRemoved, "pvc-1"}, {ActionRenamedOldName, "pvc-2"}, {ActionRenamedNewName, "pvc-2.bak"},
		{ActionAdded, "dir/ünïcødé-😀"}, {ActionModified, "x"},
	}
	out, err := ChangeNotifyOutput(notifyResponse(EncodeNotifyInformation(events), HeaderSize+notifyRespFixed))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseNotifyInformation(out)
	if err != nil || !reflect.DeepEqual(got, events) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if out, err := ChangeNotifyOutput(notifyResponse(nil, HeaderSize+notifyRespFixed)); err != nil || out != nil {
		t.Fatalf("empty answer: %v %v", out, err)
	}
	if ev, err := ParseNotifyInformation(nil); err != nil || ev != nil {
		t.Fatalf("empty buffer: %v %v", ev, err)
	}
}

func TestNotifyMalformed(t *testing.T) {
	good := EncodeNotifyInformation([]NotifyEvent{{ActionAdded, "ab"}, {ActionRemoved, "c"}})
	cases := map[string][]byte{
		"short record": good[:8],
		"odd name":     func() []byte { b := clone(good); binary.LittleEndian.PutUint32(b[8:], 3); return b }(),
		"name past end": func() []byte {
			b := clone(good)
			binary.LittleEndian.PutUint32(b[0:], 0)
			binary.LittleEndian.PutUint32(b[8:], 400)
			return b
		}(),
		"next past end":  func() []byte { b := clone(good); binary.LittleEndian.PutUint32(b[0:], 1000); return b }(),
		"next unaligned": func() []byte { b := clone(good); binary.LittleEndian.PutUint32(b[0:], 18); return b }(),
		"next in name":   func() []byte { b := clone(good); binary.LittleEndian.PutUint32(b[0:], 12); return b }(),
	}
	for name, b := range cases {
		if _, err := ParseNotifyInformation(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, m := range map[string][]byte{
		"short":       notifyResponse(nil, HeaderSize+notifyRespFixed)[:HeaderSize+4],
		"off in body": notifyResponse(good, HeaderSize+2),
		"past end":    notifyResponse(good, HeaderSize+notifyRespFixed)[:HeaderSize+notifyRespFixed+4],
	} {
		if _, err := ChangeNotifyOutput(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestParseNotifyAllocs(t *testing.T) {
	b := EncodeNotifyInformation([]NotifyEvent{{ActionRemoved, "pvc-0123456789"}})
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseNotifyInformation(b) }); n > 4 {
		t.Fatalf("%v allocations per record", n)
	}
}

// FuzzNotify: any response decodes or is refused without a panic, and
// what decodes encodes back to records that decode the same.
func FuzzNotify(f *testing.F) {
	f.Add(notifyResponse(EncodeNotifyInformation([]NotifyEvent{{ActionRemoved, "pvc-1"}, {ActionAdded, "b"}}), HeaderSize+notifyRespFixed))
	f.Add(notifyResponse(nil, HeaderSize+notifyRespFixed))
	f.Add(createResponse(FileID{1}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		_, _ = CreateFileID(msg)
		out, err := ChangeNotifyOutput(msg)
		if err != nil {
			return
		}
		events, err := ParseNotifyInformation(out)
		if err != nil {
			return
		}
		again, err := ParseNotifyInformation(EncodeNotifyInformation(events))
		if err != nil {
			t.Fatalf("re-encoded records refused: %v", err)
		}
		if !reflect.DeepEqual(again, events) {
			t.Fatalf("round trip: %+v then %+v", events, again)
		}
	})
}
