package smbresponder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf16"
)

// SMB2 command codes (MS-SMB2 2.2.1.2), as passed to Options.Delay and
// Server.Requests.
const (
	CmdNegotiate      uint16 = 0x0000
	CmdSessionSetup   uint16 = 0x0001
	CmdLogoff         uint16 = 0x0002
	CmdTreeConnect    uint16 = 0x0003
	CmdTreeDisconnect uint16 = 0x0004
	CmdEcho           uint16 = 0x000D
	CmdIoctl          uint16 = 0x000B

	cmdCancel uint16 = 0x000C // never answered (MS-SMB2 3.3.5.16)
	cmdLast   uint16 = 0x0012 // SMB2 OPLOCK_BREAK, the highest defined command
)

// NTSTATUS values the responder answers with (MS-ERREF 2.3.1).
const (
	statusSuccess                = 0x00000000
	statusMoreProcessingRequired = 0xC0000016
	statusInvalidParameter       = 0xC000000D
	statusAccessDenied           = 0xC0000022
	statusInsufficientResources  = 0xC000009A
	statusNotSupported           = 0xC00000BB
	statusNetworkNameDeleted     = 0xC00000C9
	statusBadNetworkName         = 0xC00000CC
	statusRequestNotAccepted     = 0xC00000D0
	statusUserSessionDeleted     = 0xC0000203
	statusInvalidDeviceRequest   = 0xC0000010
	statusLogonFailure           = 0xC000006D

	fsctlDfsGetReferrals = 0x00060194
	ioctlIsFsctl         = 0x00000001
)

// Dialects (MS-SMB2 2.2.3). Only the 2.x dialects are answered: they need no
// negotiate contexts, no preauthentication hash and no encryption.
const (
	dialect202 uint16 = 0x0202
	dialect210 uint16 = 0x0210
)

const (
	protocolID      = "\xfeSMB" // SMB2 header (MS-SMB2 2.2.1)
	protocolIDSMB1  = "\xffSMB" // SMB1 header, never answered
	protocolIDXform = "\xfdSMB" // SMB3 TRANSFORM_HEADER, never negotiated

	headerSize = 64
	// flagServerToRedir marks responses; flagAsync marks the async header form
	// (MS-SMB2 2.2.1.1).
	flagServerToRedir uint32 = 0x00000001
	flagAsync         uint32 = 0x00000002

	negotiateSigningEnabled uint16 = 0x0001 // SecurityMode: signing allowed, not required
	sessionFlagIsGuest      uint16 = 0x0001
	sessionFlagIsNull       uint16 = 0x0002
	sessionFlagBinding      uint8  = 0x01 // SESSION_SETUP request Flags

	// maxTransactSize is advertised as MaxTransact/Read/WriteSize: 64 KiB, the
	// limit for 2.x without SMB2_GLOBAL_CAP_LARGE_MTU.
	maxTransactSize = 64 << 10
	// maxFrameSize caps the 24-bit Direct TCP length (MS-SMB2 2.1) before
	// anything is allocated: the largest request a client may send after this
	// negotiate (a 64 KiB WRITE) plus generous room for headers.
	maxFrameSize = 2 * maxTransactSize
	// maxCredits caps the credits a client holds plus its requests in flight
	// (MS-SMB2 3.3.1.2); it also bounds the answers queued on a connection.
	maxCredits = 512
	// maxTreesPerSession caps TREE_CONNECTs on one session.
	maxTreesPerSession = 64
	// maxPathBytes caps a TREE_CONNECT path (UTF-16LE bytes).
	maxPathBytes = 1024

	// filetimeEpochOffset is 1601-01-01 to 1970-01-01 in 100 ns units.
	filetimeEpochOffset = 116444736000000000
)

// ErrProtocol is wrapped by every error ServeConn returns because the peer
// broke the protocol in a way that forced the connection closed.
var ErrProtocol = errors.New("SMB2 protocol violation")

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

func u16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func u32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func u64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

func put16(b []byte, v uint16) { binary.LittleEndian.PutUint16(b, v) }
func put32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func put64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// header is the parsed SMB2 sync/async header of one request.
type header struct {
	creditCharge  uint16
	command       uint16
	creditRequest uint16
	flags         uint32
	nextCommand   uint32
	messageID     uint64
	reserved      uint32 // ProcessId in the sync form, echoed back
	treeID        uint32
	sessionID     uint64
}

// parseHeader reads the 64-byte SMB2 header at the start of pkt.
func parseHeader(pkt []byte) (header, error) {
	if len(pkt) < headerSize {
		return header{}, protocolErrorf("message of %d bytes is shorter than the SMB2 header", len(pkt))
	}
	if string(pkt[:4]) != protocolID {
		return header{}, protocolErrorf("bad protocol id %x", pkt[:4])
	}
	if u16(pkt[4:]) != headerSize {
		return header{}, protocolErrorf("bad header StructureSize %d", u16(pkt[4:]))
	}
	h := header{
		creditCharge:  u16(pkt[6:]),
		command:       u16(pkt[12:]),
		creditRequest: u16(pkt[14:]),
		flags:         u32(pkt[16:]),
		nextCommand:   u32(pkt[20:]),
		messageID:     u64(pkt[24:]),
		sessionID:     u64(pkt[40:]),
	}
	if h.flags&flagAsync == 0 {
		h.reserved = u32(pkt[32:])
		h.treeID = u32(pkt[36:])
	}
	if h.flags&flagServerToRedir != 0 {
		return header{}, protocolErrorf("request carries the response flag")
	}
	return h, nil
}

// reply is what a handler decided: the header fields that differ from the
// request and the body. A nil body on an error status becomes the SMB2 ERROR
// response body.
type reply struct {
	status    uint32
	sessionID uint64
	treeID    uint32
	body      []byte
}

// errorBody is the SMB2 ERROR response (MS-SMB2 2.2.2): StructureSize 9,
// no error contexts, ByteCount 0 and the one mandatory byte of ErrorData.
func errorBody() []byte {
	b := make([]byte, 9)
	put16(b, 9)
	return b
}

// creditResponseOffset is where CreditResponse sits in an encoded answer
// frame (transport header + SMB2 header offset 14); it is filled in when the
// answer is sent.
const creditResponseOffset = 4 + 14

// encodeAnswer builds the Direct TCP frame answering h with r.
func encodeAnswer(h header, r reply) []byte {
	body := r.body
	if body == nil {
		body = errorBody()
	}
	n := headerSize + len(body)
	frame := make([]byte, 4+n)
	binary.BigEndian.PutUint32(frame, uint32(n)) //nolint:gosec // a few hundred bytes: the top byte stays 0
	p := frame[4:]
	copy(p, protocolID)
	put16(p[4:], headerSize)
	put16(p[6:], h.creditCharge)
	put32(p[8:], r.status)
	put16(p[12:], h.command)
	put32(p[16:], flagServerToRedir)
	put64(p[24:], h.messageID)
	put32(p[32:], h.reserved)
	put32(p[36:], r.treeID)
	put64(p[40:], r.sessionID)
	copy(p[headerSize:], body)
	return frame
}

// readFrame reads one Direct TCP frame (MS-SMB2 2.1): a zero byte, a 24-bit
// big-endian length and that many bytes. The length is checked against
// maxFrameSize before the buffer is allocated.
func readFrame(r io.Reader, lenBuf *[4]byte) ([]byte, error) {
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err //nolint:wrapcheck // io.EOF must stay recognisable to the caller
	}
	if lenBuf[0] != 0 {
		return nil, protocolErrorf("transport header starts with %#x, not 0", lenBuf[0])
	}
	n := int(lenBuf[1])<<16 | int(lenBuf[2])<<8 | int(lenBuf[3])
	if n < headerSize || n > maxFrameSize {
		return nil, protocolErrorf("frame length %d outside [%d, %d]", n, headerSize, maxFrameSize)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err //nolint:wrapcheck // classified by the caller
	}
	return buf, nil
}

// bufferAt returns the n bytes at offset off of pkt, one whole SMB2 message;
// SMB2 buffer offsets count from the start of the header. ok is false when
// the range leaves pkt or starts before minOff (inside the header or the
// fixed part of the body). An empty buffer is always ok, whatever its offset.
func bufferAt(pkt []byte, minOff int, off, n uint32) ([]byte, bool) {
	if n == 0 {
		return nil, true
	}
	end := uint64(off) + uint64(n)
	if uint64(off) < uint64(minOff) || end > uint64(len(pkt)) {
		return nil, false
	}
	return pkt[off:end], true
}

// utf16LE encodes s as UTF-16LE without a terminator.
func utf16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		put16(b[2*i:], c)
	}
	return b
}

// decodeUTF16LE decodes b; ok is false for an odd length.
func decodeUTF16LE(b []byte) (string, bool) {
	if len(b)%2 != 0 {
		return "", false
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = u16(b[2*i:])
	}
	return string(utf16.Decode(u)), true
}

// filetime converts t to a Windows FILETIME (100 ns since 1601).
func filetime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100 + filetimeEpochOffset) //nolint:gosec // positive for any time after 1601
}
