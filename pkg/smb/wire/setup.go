package wire

import (
	"encoding/binary"
	"fmt"
)

// The answers to session setup that say how a session is protected:
// NEGOTIATE (MS-SMB2 2.2.4, with the 3.1.1 negotiate contexts of 2.2.3.1),
// SESSION_SETUP (2.2.6) and TREE_CONNECT (2.2.10). go-smb2 reads them but
// exports nothing of them; the probe reads them again from the frames it
// passes on. Decoders take a whole message (header included: the offsets
// in these bodies count from the header's start) and check every length,
// offset and count before reading.

// Commands of the setup answers.
const (
	CmdSessionSetup = 0x0001
	FlagSigned      = 0x00000008 // SMB2_FLAGS_SIGNED
)

// SecurityMode bits (2.2.4).
const (
	SigningEnabled  = 0x0001
	SigningRequired = 0x0002
)

// Global capabilities (2.2.4).
const (
	CapDFS               = 0x00000001
	CapLeasing           = 0x00000002
	CapLargeMTU          = 0x00000004
	CapMultiChannel      = 0x00000008
	CapPersistentHandles = 0x00000010
	CapDirectoryLeasing  = 0x00000020
	CapEncryption        = 0x00000040
)

// Session flags (2.2.6).
const (
	SessionGuest   = 0x0001
	SessionNull    = 0x0002 // anonymous
	SessionEncrypt = 0x0004
)

// Share types, share flags and share capabilities (2.2.10).
const (
	ShareTypeDisk       = 0x01
	ShareTypePipe       = 0x02
	ShareTypePrint      = 0x03
	ShareFlagDFS        = 0x00000001
	ShareFlagDFSRoot    = 0x00000002
	ShareFlagEncrypt    = 0x00008000
	ShareCapDFS         = 0x00000008
	ShareCapContinuous  = 0x00000010
	ShareCapScaleout    = 0x00000020
	ShareCapCluster     = 0x00000040
	ShareCapAsymmetric  = 0x00000080
	ShareCapRedirectOwn = 0x00000100
)

// Negotiate context types (2.2.3.1) the probe reads.
const (
	ctxPreauth    = 0x0001
	ctxEncryption = 0x0002
	ctxSigning    = 0x0008
)

const (
	negotiateFixed    = 64 // StructureSize 65: the fixed part and one byte of buffer
	sessionSetupFixed = 8  // StructureSize 9
	treeConnectFixed  = 16 // StructureSize 16
	contextHeader     = 8
	// maxContexts caps NegotiateContextCount: servers send a handful.
	maxContexts = 32
	// maxAlgorithms caps the algorithms of one context: a response names
	// one cipher and one signing algorithm; preauth lists at most a few.
	maxAlgorithms = 16
	dialect311    = 0x0311
)

// NegotiateResponse is what a NEGOTIATE answer says about the connection.
type NegotiateResponse struct {
	SecurityMode uint16 // SigningEnabled, SigningRequired
	Dialect      uint16 // DialectRevision: 0x0202, 0x0210, 0x0300, 0x0302, 0x0311
	Capabilities uint32 // Cap*
	// 3.1.1 only, from the negotiate contexts (nil when absent).
	HashAlgorithms    []uint16 // SMB2_PREAUTH_INTEGRITY_CAPABILITIES
	Ciphers           []uint16 // SMB2_ENCRYPTION_CAPABILITIES: the cipher chosen (0: none in common)
	SigningAlgorithms []uint16 // SMB2_SIGNING_CAPABILITIES: the algorithm chosen
}

// ParseNegotiateResponse decodes the NEGOTIATE response msg. The negotiate
// contexts are read for dialect 3.1.1 only (before it those fields are
// reserved); unknown context types are skipped, a repeated known one is
// malformed.
func ParseNegotiateResponse(msg []byte) (NegotiateResponse, error) {
	if len(msg) < HeaderSize+negotiateFixed {
		return NegotiateResponse{}, fmt.Errorf("%w: NEGOTIATE response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != negotiateFixed+1 {
		return NegotiateResponse{}, fmt.Errorf("%w: NEGOTIATE response structure size", ErrMalformed)
	}
	r := NegotiateResponse{
		SecurityMode: binary.LittleEndian.Uint16(body[2:4]),
		Dialect:      binary.LittleEndian.Uint16(body[4:6]),
		Capabilities: binary.LittleEndian.Uint32(body[24:28]),
	}
	if r.Dialect != dialect311 {
		return r, nil
	}
	count := int(binary.LittleEndian.Uint16(body[6:8]))
	off := int(binary.LittleEndian.Uint32(body[60:64])) // from the header's start
	if count > maxContexts {
		return NegotiateResponse{}, fmt.Errorf("%w: %d negotiate contexts", ErrMalformed, count)
	}
	if count > 0 && (off < HeaderSize+negotiateFixed || off > len(msg)) {
		return NegotiateResponse{}, fmt.Errorf("%w: negotiate contexts at %d in a %d-byte response", ErrMalformed, off, len(msg))
	}
	seen := map[uint16]bool{}
	for i := range count {
		if i > 0 {
			off = align8(off)
		}
		if off > len(msg) || len(msg)-off < contextHeader {
			return NegotiateResponse{}, fmt.Errorf("%w: negotiate context %d truncated", ErrMalformed, i)
		}
		typ := binary.LittleEndian.Uint16(msg[off : off+2])
		n := int(binary.LittleEndian.Uint16(msg[off+2 : off+4]))
		data := msg[off+contextHeader:]
		if n > len(data) {
			return NegotiateResponse{}, fmt.Errorf("%w: negotiate context %d: %d data bytes past the end", ErrMalformed, i, n)
		}
		data = data[:n]
		off += contextHeader + n
		var dst *[]uint16
		skip := 0
		switch typ {
		case ctxPreauth:
			dst, skip = &r.HashAlgorithms, 2 // HashAlgorithmCount, then SaltLength
		case ctxEncryption:
			dst = &r.Ciphers
		case ctxSigning:
			dst = &r.SigningAlgorithms
		default:
			continue
		}
		if seen[typ] {
			return NegotiateResponse{}, fmt.Errorf("%w: negotiate context type %#04x twice", ErrMalformed, typ)
		}
		seen[typ] = true
		algs, err := algorithms(data, skip)
		if err != nil {
			return NegotiateResponse{}, fmt.Errorf("negotiate context %#04x: %w", typ, err)
		}
		*dst = algs
	}
	return r, nil
}

// algorithms reads a count (u16), skip more bytes, then count u16 values.
func algorithms(data []byte, skip int) ([]uint16, error) {
	if len(data) < 2+skip {
		return nil, fmt.Errorf("%w: %d bytes of context data", ErrMalformed, len(data))
	}
	n := int(binary.LittleEndian.Uint16(data[0:2]))
	list := data[2+skip:]
	if n > maxAlgorithms || 2*n > len(list) {
		return nil, fmt.Errorf("%w: %d algorithms in %d bytes", ErrMalformed, n, len(list))
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(list[2*i:])
	}
	return out, nil
}

func align8(n int) int { return (n + 7) &^ 7 }

// EncodeNegotiateResponse is the inverse of ParseNegotiateResponse: a
// NEGOTIATE response message (header included) that carries r, with an
// empty security buffer and, for 3.1.1, the contexts r names (a preauth
// context with no salt). It is what tests and fuzzing round-trip through.
func EncodeNegotiateResponse(r NegotiateResponse) ([]byte, error) {
	for _, l := range [][]uint16{r.HashAlgorithms, r.Ciphers, r.SigningAlgorithms} {
		if len(l) > maxAlgorithms {
			return nil, fmt.Errorf("%d algorithms in one negotiate context", len(l))
		}
	}
	msg := responseHeader(CmdNegotiate, negotiateFixed)
	body := msg[HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], negotiateFixed+1)
	binary.LittleEndian.PutUint16(body[2:4], r.SecurityMode)
	binary.LittleEndian.PutUint16(body[4:6], r.Dialect)
	binary.LittleEndian.PutUint32(body[24:28], r.Capabilities)
	if r.Dialect != dialect311 {
		return msg, nil
	}
	count := 0
	for _, c := range []struct {
		typ  uint16
		algs []uint16
		pre  []byte
	}{
		{ctxPreauth, r.HashAlgorithms, []byte{0, 0}}, // SaltLength 0
		{ctxEncryption, r.Ciphers, nil},
		{ctxSigning, r.SigningAlgorithms, nil},
	} {
		if c.algs == nil {
			continue
		}
		if count == 0 {
			binary.LittleEndian.PutUint32(msg[HeaderSize+60:], uint32(len(msg))) //nolint:gosec // under 64 KiB
		} else {
			msg = append(msg, make([]byte, align8(len(msg))-len(msg))...)
		}
		data := binary.LittleEndian.AppendUint16(nil, uint16(len(c.algs))) //nolint:gosec // capped above
		data = append(data, c.pre...)
		for _, a := range c.algs {
			data = binary.LittleEndian.AppendUint16(data, a)
		}
		msg = binary.LittleEndian.AppendUint16(msg, c.typ)
		msg = binary.LittleEndian.AppendUint16(msg, uint16(len(data))) //nolint:gosec // at most 36 bytes
		msg = append(msg, 0, 0, 0, 0)
		msg = append(msg, data...)
		count++
	}
	binary.LittleEndian.PutUint16(msg[HeaderSize+6:], uint16(count)) //nolint:gosec // at most 3
	return msg, nil
}

// SessionSetupResponse is what a SESSION_SETUP answer says about the
// session.
type SessionSetupResponse struct {
	Flags uint16 // SessionGuest, SessionNull, SessionEncrypt
}

// ParseSessionSetupResponse decodes the SESSION_SETUP response msg. Its
// security buffer is not read (go-smb2 authenticates), only bounds-checked.
func ParseSessionSetupResponse(msg []byte) (SessionSetupResponse, error) {
	if len(msg) < HeaderSize+sessionSetupFixed {
		return SessionSetupResponse{}, fmt.Errorf("%w: SESSION_SETUP response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != sessionSetupFixed+1 {
		return SessionSetupResponse{}, fmt.Errorf("%w: SESSION_SETUP response structure size", ErrMalformed)
	}
	off, n := int(binary.LittleEndian.Uint16(body[4:6])), int(binary.LittleEndian.Uint16(body[6:8]))
	if n > 0 && (off < HeaderSize+sessionSetupFixed || off+n > len(msg)) {
		return SessionSetupResponse{}, fmt.Errorf("%w: security buffer [%d, +%d) outside a %d-byte response", ErrMalformed, off, n, len(msg))
	}
	return SessionSetupResponse{Flags: binary.LittleEndian.Uint16(body[2:4])}, nil
}

// EncodeSessionSetupResponse is the inverse of ParseSessionSetupResponse,
// with an empty security buffer.
func EncodeSessionSetupResponse(r SessionSetupResponse) []byte {
	msg := responseHeader(CmdSessionSetup, sessionSetupFixed)
	binary.LittleEndian.PutUint16(msg[HeaderSize:], sessionSetupFixed+1)
	binary.LittleEndian.PutUint16(msg[HeaderSize+2:], r.Flags)
	return msg
}

// TreeConnectResponse is what a TREE_CONNECT answer says about the share.
type TreeConnectResponse struct {
	ShareType     uint8  // ShareTypeDisk, ShareTypePipe, ShareTypePrint
	ShareFlags    uint32 // ShareFlag*
	Capabilities  uint32 // ShareCap*
	MaximalAccess uint32
}

// ParseTreeConnectResponse decodes the TREE_CONNECT response msg.
func ParseTreeConnectResponse(msg []byte) (TreeConnectResponse, error) {
	if len(msg) < HeaderSize+treeConnectFixed {
		return TreeConnectResponse{}, fmt.Errorf("%w: TREE_CONNECT response of %d bytes", ErrMalformed, len(msg))
	}
	body := msg[HeaderSize:]
	if binary.LittleEndian.Uint16(body[0:2]) != treeConnectFixed {
		return TreeConnectResponse{}, fmt.Errorf("%w: TREE_CONNECT response structure size", ErrMalformed)
	}
	return TreeConnectResponse{
		ShareType:     body[2],
		ShareFlags:    binary.LittleEndian.Uint32(body[4:8]),
		Capabilities:  binary.LittleEndian.Uint32(body[8:12]),
		MaximalAccess: binary.LittleEndian.Uint32(body[12:16]),
	}, nil
}

// EncodeTreeConnectResponse is the inverse of ParseTreeConnectResponse.
func EncodeTreeConnectResponse(r TreeConnectResponse) []byte {
	msg := responseHeader(CmdTreeConnect, treeConnectFixed)
	body := msg[HeaderSize:]
	binary.LittleEndian.PutUint16(body[0:2], treeConnectFixed)
	body[2] = r.ShareType
	binary.LittleEndian.PutUint32(body[4:8], r.ShareFlags)
	binary.LittleEndian.PutUint32(body[8:12], r.Capabilities)
	binary.LittleEndian.PutUint32(body[12:16], r.MaximalAccess)
	return msg
}

// responseHeader is a response message of cmd with body zero bytes after
// a sync header (no transport prefix).
func responseHeader(cmd uint16, body int) []byte {
	msg := make([]byte, HeaderSize+body)
	binary.LittleEndian.PutUint32(msg[0:4], protocolSMB2)
	binary.LittleEndian.PutUint16(msg[4:6], HeaderSize)
	binary.LittleEndian.PutUint16(msg[12:14], cmd)
	binary.LittleEndian.PutUint32(msg[16:20], FlagResponse)
	return msg
}

// DialectName is the SMB dialect's usual name ("3.1.1"), or its hex code.
func DialectName(d uint16) string {
	switch d {
	case 0x0202:
		return "2.0.2"
	case 0x0210:
		return "2.1"
	case 0x0300:
		return "3.0"
	case 0x0302:
		return "3.0.2"
	case dialect311:
		return "3.1.1"
	}
	return fmt.Sprintf("%#04x", d)
}

// CipherName names an encryption cipher of SMB2_ENCRYPTION_CAPABILITIES.
func CipherName(c uint16) string {
	names := []string{"none", "AES-128-CCM", "AES-128-GCM", "AES-256-CCM", "AES-256-GCM"}
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("%#04x", c)
}

// SigningName names a signing algorithm of SMB2_SIGNING_CAPABILITIES.
func SigningName(a uint16) string {
	names := []string{"HMAC-SHA256", "AES-CMAC", "AES-GMAC"}
	if int(a) < len(names) {
		return names[a]
	}
	return fmt.Sprintf("%#04x", a)
}

// DialectSigning is the signing algorithm a dialect uses when no signing
// context chose one (MS-SMB2 3.1.4.1): HMAC-SHA256 for 2.x, AES-CMAC from
// 3.0 on.
func DialectSigning(d uint16) string {
	if d < 0x0300 {
		return SigningName(0)
	}
	return SigningName(1)
}
