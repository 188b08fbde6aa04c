package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// golden is a framed ECHO request with MessageId 7, built by hand from
// MS-SMB2 2.2.1.2 and 2.2.28.
var golden = []byte{
	0x00, 0x00, 0x00, 0x44, // transport: 68 bytes follow
	0xFE, 'S', 'M', 'B', 0x40, 0x00, 0x01, 0x00, // ProtocolId, StructureSize 64, CreditCharge 1
	0x00, 0x00, 0x00, 0x00, 0x0D, 0x00, 0x01, 0x00, // Status, Command ECHO, CreditRequest 1
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Flags, NextCommand
	0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // MessageId
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // Reserved, TreeId
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // SessionId
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // Signature
	0x04, 0x00, 0x00, 0x00, // ECHO: StructureSize 4, Reserved
}

func TestEchoRequestGolden(t *testing.T) {
	if got := EchoRequest(7); !bytes.Equal(got, golden) {
		t.Fatalf("EchoRequest(7) =\n% x\nwant\n% x", got, golden)
	}
}

func response(msgID uint64, flags, status uint32) []byte {
	m := bytes.Clone(golden[4:])
	binary.LittleEndian.PutUint32(m[16:20], flags|FlagResponse)
	binary.LittleEndian.PutUint32(m[8:12], status)
	binary.LittleEndian.PutUint64(m[24:32], msgID)
	binary.LittleEndian.PutUint16(m[14:16], 1)
	return m
}

func TestParseHeader(t *testing.T) {
	h, err := ParseHeader(response(9, 0, 0xC0000203))
	if err != nil || !h.Response() || h.Command != CmdEcho || h.MessageID != 9 || h.Status != 0xC0000203 || h.CreditResponse != 1 {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	if h, _ := ParseHeader(response(unsolicitedMsgs, 0, 0)); !h.Unsolicited() {
		t.Fatal("oplock break not recognised")
	}
	if h, _ := ParseHeader(response(3, FlagAsync, StatusPending)); !h.Interim() {
		t.Fatal("interim answer not recognised")
	}
	for name, msg := range map[string][]byte{
		"short":     golden[4:20],
		"smb1":      append([]byte{0xFF, 'S', 'M', 'B'}, golden[8:]...),
		"encrypted": append([]byte{0xFD, 'S', 'M', 'B'}, golden[8:]...),
		"size":      append(append([]byte{}, golden[4:8]...), append([]byte{0x20, 0}, golden[10:]...)...),
	} {
		if _, err := ParseHeader(msg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestReadFrame(t *testing.T) {
	two := append(append([]byte{}, golden...), golden...)
	r := bytes.NewReader(two)
	for range 2 {
		msg, err := ReadFrame(r, nil)
		if err != nil || !bytes.Equal(msg, golden[4:]) {
			t.Fatalf("ReadFrame = % x, %v", msg, err)
		}
	}
	if _, err := ReadFrame(r, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("after two frames: %v, want EOF", err)
	}
	huge := []byte{0x00, 0xFF, 0xFF, 0xFF}
	if _, err := ReadFrame(bytes.NewReader(huge), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("16 MiB frame: %v, want ErrTooLarge", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0x85, 0, 0, 0}), nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("NetBIOS session keepalive: %v, want ErrMalformed", err)
	}
	if _, err := ReadFrame(bytes.NewReader(golden[:40]), nil); err == nil {
		t.Fatal("truncated frame accepted")
	}
}

func TestEchoRequestAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = EchoRequest(1) }); n > 1 {
		t.Fatalf("EchoRequest allocates %v times", n)
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { _, _ = ReadFrame(bytes.NewReader(golden), buf) }); n > 2 {
		t.Fatalf("ReadFrame into a big enough buffer allocates %v times", n)
	}
}

// FuzzReadFrame feeds arbitrary bytes, as a hostile server could send,
// through framing and header parsing: no panic, no allocation beyond the
// frame limit, and every accepted message is at most MaxProbeFrame bytes.
func FuzzReadFrame(f *testing.F) {
	f.Add(golden)
	f.Add(append([]byte{0, 0, 0, 0x44}, response(1, FlagAsync, StatusPending)...))
	f.Add([]byte{0, 0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for range 4 {
			msg, err := ReadFrame(r, nil)
			if err != nil {
				return
			}
			if len(msg) > MaxProbeFrame {
				t.Fatalf("accepted a %d byte frame", len(msg))
			}
			if h, err := ParseHeader(msg); err == nil && len(msg) < HeaderSize {
				t.Fatalf("parsed a header %+v out of %d bytes", h, len(msg))
			}
		}
	})
}

func ioctlResponse(out []byte, off uint32) []byte {
	msg := make([]byte, HeaderSize+ioctlRespFixed+len(out))
	binary.LittleEndian.PutUint32(msg[0:4], protocolSMB2)
	binary.LittleEndian.PutUint16(msg[4:6], HeaderSize)
	binary.LittleEndian.PutUint16(msg[12:14], CmdIoctl)
	binary.LittleEndian.PutUint32(msg[16:20], FlagResponse)
	body := msg[HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], ioctlRespFixed+1)
	binary.LittleEndian.PutUint32(body[32:36], off)
	binary.LittleEndian.PutUint32(body[36:40], uint32(len(out)))
	copy(body[ioctlRespFixed:], out)
	return msg
}

func TestIoctl(t *testing.T) {
	req, err := IoctlRequest(7, 0x1122, 5, 0x00060194, []byte{4, 0, 'x', 0, 0, 0}, 1024)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(req[4:])
	if err != nil || h.Command != CmdIoctl || h.MessageID != 7 || h.SessionID != 0x1122 || h.TreeID != 5 || h.Response() {
		t.Fatalf("request header %+v %v", h, err)
	}
	body := req[4+HeaderSize:]
	if got := binary.LittleEndian.Uint32(body[24:28]); got != HeaderSize+ioctlFixedSize || !bytes.Equal(body[ioctlFixedSize:], []byte{4, 0, 'x', 0, 0, 0}) {
		t.Fatalf("input at %d: % x", got, body[ioctlFixedSize:])
	}
	if _, err := IoctlRequest(1, 1, 1, 1, make([]byte, MaxProbeFrame), 10); err == nil {
		t.Fatal("oversized input accepted")
	}
	out, err := IoctlOutput(ioctlResponse([]byte("hello"), HeaderSize+ioctlRespFixed))
	if err != nil || string(out) != "hello" {
		t.Fatalf("output %q %v", out, err)
	}
	for name, msg := range map[string][]byte{
		"short":            ioctlResponse(nil, 0)[:HeaderSize+10],
		"past the end":     ioctlResponse([]byte("hello"), HeaderSize+ioctlRespFixed+1),
		"inside the fixed": ioctlResponse([]byte("hello"), HeaderSize),
	} {
		if _, err := IoctlOutput(msg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzIoctlOutput(f *testing.F) {
	f.Add(ioctlResponse([]byte("hello"), HeaderSize+ioctlRespFixed))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := IoctlOutput(msg)
		if err == nil && len(out) > len(msg) {
			t.Fatalf("output of %d bytes from a %d-byte message", len(out), len(msg))
		}
	})
}
