// Package wire encodes and decodes the few SMB2 messages the driver sends
// itself on a session go-smb2 set up (MS-SMB2 2.1 transport framing, 2.2.1
// header, 2.2.28/2.2.29 ECHO, 2.2.31/2.2.32 IOCTL), the setup answers it
// reads again on their way to go-smb2 (2.2.4 NEGOTIATE, 2.2.6
// SESSION_SETUP, 2.2.10 TREE_CONNECT: setup.go), and the directory watch
// (notify.go: 2.2.13-2.2.16 CREATE/CLOSE, 2.2.30 CANCEL, 2.2.35/2.2.36
// CHANGE_NOTIFY with MS-FSCC 2.7.1 FILE_NOTIFY_INFORMATION). It is pure: no
// I/O beyond reading frames from an io.Reader, bounds checked before every
// read, never panics on untrusted bytes.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol constants (MS-SMB2 2.2.1).
const (
	HeaderSize      = 64
	CmdNegotiate    = 0x0000
	CmdEcho         = 0x000D
	CmdTreeConnect  = 0x0003
	CmdIoctl        = 0x000B
	StatusSuccess   = 0x00000000
	StatusNotFound  = 0xC0000225 // a referral for a path outside any DFS namespace
	ioctlFixedSize  = 56
	ioctlRespFixed  = 48
	ioctlIsFsctl    = 0x00000001
	FlagResponse    = 0x00000001 // SMB2_FLAGS_SERVER_TO_REDIR
	FlagAsync       = 0x00000002
	StatusPending   = 0x00000103
	echoBodySize    = 4
	EchoFrameSize   = 4 + HeaderSize + echoBodySize // 72 bytes on the wire
	MaxProbeFrame   = 64 << 10                      // anything bigger is not an answer to a probe
	protocolSMB2    = 0x424D53FE                    // "\xFESMB", little-endian
	protocolCrypt   = 0x424D53FD                    // "\xFDSMB": an encrypted message
	unsolicitedMsgs = ^uint64(0)                    // oplock/lease breaks carry MessageId all-ones
)

// Errors of malformed input; ErrMalformed wraps every one of them.
var (
	ErrMalformed = errors.New("malformed SMB2 message")
	ErrTooLarge  = fmt.Errorf("%w: frame over %d bytes", ErrMalformed, MaxProbeFrame)
	// ErrEncrypted: an SMB3 TRANSFORM_HEADER message, which only the
	// session's keys can open.
	ErrEncrypted = fmt.Errorf("%w: encrypted message", ErrMalformed)
)

// Header is the part of an SMB2 header the prober looks at.
type Header struct {
	Command        uint16
	CreditCharge   uint16
	CreditResponse uint16
	Status         uint32
	Flags          uint32
	MessageID      uint64
	TreeID         uint32 // sync headers only
	AsyncID        uint64 // async headers only (FlagAsync): names a pending request for CANCEL
	SessionID      uint64
}

// Response reports whether the header is a server response.
func (h Header) Response() bool { return h.Flags&FlagResponse != 0 }

// Unsolicited reports an oplock or lease break notification, which is not
// the answer to any request.
func (h Header) Unsolicited() bool { return h.MessageID == unsolicitedMsgs }

// Interim reports an interim STATUS_PENDING answer; the final one follows.
func (h Header) Interim() bool { return h.Flags&FlagAsync != 0 && h.Status == StatusPending }

// EchoRequest encodes a framed SMB2 ECHO request with messageID, charging
// and asking for one credit, with SessionId 0 and no signature: servers
// answer an ECHO without verifying the session (MS-SMB2 3.3.5.2.9), which is
// what the Linux client does too.
func EchoRequest(messageID uint64) []byte {
	b := request(CmdEcho, messageID, 0, 0, echoBodySize)
	binary.LittleEndian.PutUint16(b[4+HeaderSize:], echoBodySize)
	return b
}

// request returns a framed request of body bytes with its header filled
// in: one credit charged and asked for, unsigned.
func request(cmd uint16, messageID, sessionID uint64, treeID uint32, body int) []byte {
	return requestCredits(cmd, messageID, sessionID, treeID, body, 1)
}

// requestCredits is request asking for credits credits (at least one).
func requestCredits(cmd uint16, messageID, sessionID uint64, treeID uint32, body int, credits uint16) []byte {
	b := make([]byte, 4+HeaderSize+body)
	binary.BigEndian.PutUint32(b[0:4], uint32(HeaderSize+body)) //nolint:gosec // callers keep it under MaxProbeFrame: the first byte stays 0
	h := b[4:]
	binary.LittleEndian.PutUint32(h[0:4], protocolSMB2)
	binary.LittleEndian.PutUint16(h[4:6], HeaderSize)
	binary.LittleEndian.PutUint16(h[6:8], 1) // CreditCharge
	binary.LittleEndian.PutUint16(h[12:14], cmd)
	binary.LittleEndian.PutUint16(h[14:16], max(credits, 1)) // CreditRequest
	binary.LittleEndian.PutUint64(h[24:32], messageID)
	binary.LittleEndian.PutUint32(h[36:40], treeID)
	binary.LittleEndian.PutUint64(h[40:48], sessionID)
	return b
}

// ParseHeader decodes the SMB2 header at the start of msg (a frame
// without its 4-byte transport prefix).
func ParseHeader(msg []byte) (Header, error) {
	if len(msg) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes is shorter than a header", ErrMalformed, len(msg))
	}
	switch binary.LittleEndian.Uint32(msg[0:4]) {
	case protocolSMB2:
	case protocolCrypt:
		return Header{}, ErrEncrypted
	default:
		return Header{}, fmt.Errorf("%w: not SMB2", ErrMalformed)
	}
	if binary.LittleEndian.Uint16(msg[4:6]) != HeaderSize {
		return Header{}, fmt.Errorf("%w: header structure size", ErrMalformed)
	}
	h := Header{
		CreditCharge:   binary.LittleEndian.Uint16(msg[6:8]),
		Status:         binary.LittleEndian.Uint32(msg[8:12]),
		Command:        binary.LittleEndian.Uint16(msg[12:14]),
		CreditResponse: binary.LittleEndian.Uint16(msg[14:16]),
		Flags:          binary.LittleEndian.Uint32(msg[16:20]),
		MessageID:      binary.LittleEndian.Uint64(msg[24:32]),
		TreeID:         binary.LittleEndian.Uint32(msg[36:40]),
		SessionID:      binary.LittleEndian.Uint64(msg[40:48]),
	}
	if h.Flags&FlagAsync != 0 {
		h.TreeID, h.AsyncID = 0, binary.LittleEndian.Uint64(msg[32:40])
	}
	return h, nil
}

// ReadFrame reads one transport frame from r into buf (grown when needed)
// and returns the message without its prefix. A frame over MaxProbeFrame is
// refused before anything is allocated for it.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, err
	}
	if pre[0] != 0 {
		return nil, fmt.Errorf("%w: transport prefix %#x", ErrMalformed, pre[0])
	}
	n := int(binary.BigEndian.Uint32(pre[:]))
	if n > MaxProbeFrame {
		return nil, ErrTooLarge
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("frame body: %w", err)
	}
	return buf, nil
}

// IoctlRequest encodes a framed SMB2 IOCTL request carrying an FSCTL with
// input on the given session and tree, FileId all ones (no open file, as
// FSCTL_DFS_GET_REFERRALS wants), asking for at most maxOut bytes of
// output. It charges and asks for one credit: input and output stay under
// 64 KiB. Unsigned: pkg/smb signs or encrypts it when the session requires.
func IoctlRequest(messageID, sessionID uint64, treeID, ctlCode uint32, input []byte, maxOut uint32) ([]byte, error) {
	if len(input) > MaxProbeFrame-HeaderSize-ioctlFixedSize || maxOut > MaxProbeFrame-HeaderSize-ioctlRespFixed {
		return nil, fmt.Errorf("IOCTL input %d or output %d bytes over one credit", len(input), maxOut)
	}
	b := request(CmdIoctl, messageID, sessionID, treeID, ioctlFixedSize+max(len(input), 1))
	body := b[4+HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], ioctlFixedSize+1)
	binary.LittleEndian.PutUint32(body[4:8], ctlCode)
	for i := 8; i < 24; i++ {
		body[i] = 0xFF
	}
	binary.LittleEndian.PutUint32(body[24:28], HeaderSize+ioctlFixedSize)
	binary.LittleEndian.PutUint32(body[28:32], uint32(len(input))) //nolint:gosec // checked above
	binary.LittleEndian.PutUint32(body[44:48], maxOut)
	binary.LittleEndian.PutUint32(body[48:52], ioctlIsFsctl)
	copy(body[ioctlFixedSize:], input)
	return b, nil
}

// IoctlOutput returns the output buffer of an IOCTL response msg (a frame
// without its prefix, header included), bounds-checked.
func IoctlOutput(msg []byte) ([]byte, error) {
	if len(msg) < HeaderSize+ioctlRespFixed {
		return nil, fmt.Errorf("%w: IOCTL response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != ioctlRespFixed+1 {
		return nil, fmt.Errorf("%w: IOCTL response structure size", ErrMalformed)
	}
	off, n := uint64(binary.LittleEndian.Uint32(body[32:36])), uint64(binary.LittleEndian.Uint32(body[36:40]))
	if n == 0 {
		return nil, nil
	}
	if off < HeaderSize+ioctlRespFixed || off+n > uint64(len(msg)) {
		return nil, fmt.Errorf("%w: IOCTL output [%d, +%d) outside a %d-byte response", ErrMalformed, off, n, len(msg))
	}
	return msg[off : off+n], nil
}
