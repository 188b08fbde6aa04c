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
	if n, ok := NextMessageID(golden[4:]); !ok || n != 8 {
		t.Fatalf("NextMessageID = %d %v", n, ok)
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
			_, _ = NextMessageID(msg)
		}
	})
}
