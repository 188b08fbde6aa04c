package smbresponder

import (
	"encoding/binary"
	"strings"
)

// Authentication: NTLMSSP (MS-NLMP), raw or wrapped in SPNEGO (RFC 4178,
// MS-SPNG). Nothing is verified cryptographically. An anonymous logon gets a
// NULL session and any other logon a guest session (Samba's "map to guest =
// Bad User"); clients neither sign nor encrypt on such sessions (MS-SMB2
// 3.2.5.3.1), so the responder needs no session key.

const (
	ntlmSignature    = "NTLMSSP\x00"
	ntlmNegotiate    = 1
	ntlmChallenge    = 2
	ntlmAuthenticate = 3

	// NegotiateFlags (MS-NLMP 2.2.2.5).
	ntlmFlagUnicode                 = 0x00000001
	ntlmFlagRequestTarget           = 0x00000004
	ntlmFlagSign                    = 0x00000010
	ntlmFlagNTLM                    = 0x00000200
	ntlmFlagAlwaysSign              = 0x00008000
	ntlmFlagTargetTypeServer        = 0x00020000
	ntlmFlagExtendedSessionSecurity = 0x00080000
	ntlmFlagTargetInfo              = 0x00800000
	ntlmFlagVersion                 = 0x02000000
	ntlmFlag128                     = 0x20000000
	ntlmFlagKeyExch                 = 0x40000000
	ntlmFlag56                      = 0x80000000

	// ntlmServerFlags are the client flags the responder echoes back.
	ntlmServerFlags = ntlmFlagUnicode | ntlmFlagRequestTarget | ntlmFlagSign | ntlmFlagNTLM |
		ntlmFlagAlwaysSign | ntlmFlagExtendedSessionSecurity | ntlmFlagTargetInfo |
		ntlmFlagVersion | ntlmFlag128 | ntlmFlagKeyExch | ntlmFlag56
	// ntlmRequiredFlags are always set in the CHALLENGE_MESSAGE: the target
	// name and target info are always sent.
	ntlmRequiredFlags = ntlmFlagRequestTarget | ntlmFlagTargetInfo | ntlmFlagTargetTypeServer

	// ntlmVersion is the VERSION structure (MS-NLMP 2.2.2.10): 6.1.7601,
	// NTLMSSP_REVISION_W2K3.
	ntlmVersion = "\x06\x01\xb1\x1d\x00\x00\x00\x0f"

	// AV_PAIR ids (MS-NLMP 2.2.2.1).
	avEOL             = 0
	avNbComputerName  = 1
	avNbDomainName    = 2
	avDNSComputerName = 3
	avDNSDomainName   = 4

	serverNetBIOSName = "SMBRESPONDER"
	serverDNSName     = "smbresponder"

	// DER contents of the object identifiers.
	oidSPNEGO  = "\x2b\x06\x01\x05\x05\x02"                 // 1.3.6.1.5.5.2
	oidNTLMSSP = "\x2b\x06\x01\x04\x01\x82\x37\x02\x02\x0a" // 1.3.6.1.4.1.311.2.2.10

	// DER identifier octets.
	derOctetString  byte = 0x04
	derOID          byte = 0x06
	derEnumerated   byte = 0x0a
	derSequence     byte = 0x30
	derApplication0 byte = 0x60 // InitialContextToken (RFC 2743 3.1)
	derContext0     byte = 0xa0
	derContext1     byte = 0xa1
	derContext2     byte = 0xa2

	// NegState (RFC 4178 4.2.2).
	negStateAcceptCompleted  byte = 0
	negStateAcceptIncomplete byte = 1
)

// readTLV splits the first DER element off b. It accepts single-byte tags
// and definite lengths of up to three length octets (more than any frame);
// ok is false for anything else or when the element does not fit in b.
func readTLV(b []byte) (tag byte, val, rest []byte, ok bool) {
	if len(b) < 2 || b[0]&0x1f == 0x1f {
		return 0, nil, nil, false
	}
	tag, n, b := b[0], int(b[1]), b[2:]
	if n >= 0x80 {
		k := n & 0x7f
		if k == 0 || k > 3 || len(b) < k {
			return 0, nil, nil, false
		}
		n = 0
		for _, c := range b[:k] {
			n = n<<8 | int(c)
		}
		b = b[k:]
	}
	if n > len(b) {
		return 0, nil, nil, false
	}
	return tag, b[:n], b[n:], true
}

// seqOctetString finds the element with the given context tag in the DER
// SEQUENCE at the start of b and returns the OCTET STRING inside it. The loop
// consumes at least two bytes per element, so it is bounded by len(b).
func seqOctetString(b []byte, want byte) ([]byte, bool) {
	tag, seq, _, ok := readTLV(b)
	if !ok || tag != derSequence {
		return nil, false
	}
	for len(seq) > 0 {
		tag, val, rest, ok := readTLV(seq)
		if !ok {
			return nil, false
		}
		if tag == want {
			tag, s, _, ok := readTLV(val)
			return s, ok && tag == derOctetString
		}
		seq = rest
	}
	return nil, false
}

// unwrapNegotiate returns the NTLMSSP message carried by the first
// SESSION_SETUP: either raw, or as the mechToken of a SPNEGO NegTokenInit
// (RFC 4178 4.2.1); wrapped reports which.
func unwrapNegotiate(buf []byte) (msg []byte, wrapped, ok bool) {
	if strings.HasPrefix(string(buf), ntlmSignature) {
		return buf, false, true
	}
	tag, inner, _, ok := readTLV(buf)
	if !ok || tag != derApplication0 {
		return nil, false, false
	}
	tag, oid, rest, ok := readTLV(inner)
	if !ok || tag != derOID || string(oid) != oidSPNEGO {
		return nil, false, false
	}
	tag, choice, _, ok := readTLV(rest)
	if !ok || tag != derContext0 {
		return nil, false, false
	}
	msg, ok = seqOctetString(choice, derContext2)
	return msg, true, ok
}

// unwrapResponse returns the NTLMSSP message carried by the second
// SESSION_SETUP: raw, or as the responseToken of a SPNEGO NegTokenResp.
func unwrapResponse(buf []byte, wrapped bool) ([]byte, bool) {
	if !wrapped {
		return buf, true
	}
	tag, choice, _, ok := readTLV(buf)
	if !ok || tag != derContext1 {
		return nil, false
	}
	return seqOctetString(choice, derContext2)
}

// appendTLV appends one DER element with the concatenated content.
func appendTLV(dst []byte, tag byte, content ...[]byte) []byte {
	n := 0
	for _, c := range content {
		n += len(c)
	}
	dst = append(dst, tag)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n <= 0xff:
		dst = append(dst, 0x81, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
	for _, c := range content {
		dst = append(dst, c...)
	}
	return dst
}

func tlv(tag byte, content ...[]byte) []byte { return appendTLV(nil, tag, content...) }

// negTokenInitHint is the SPNEGO NegTokenInit listing NTLMSSP that a server
// returns in its NEGOTIATE response (MS-SMB2 3.3.5.4, MS-SPNG 3.2.5.2).
func negTokenInitHint() []byte {
	mechTypes := tlv(derContext0, tlv(derSequence, tlv(derOID, []byte(oidNTLMSSP))))
	return tlv(derApplication0,
		tlv(derOID, []byte(oidSPNEGO)),
		tlv(derContext0, tlv(derSequence, mechTypes)))
}

// negTokenResp encodes a SPNEGO NegTokenResp (RFC 4178 4.2.2). A non-nil
// token also names NTLMSSP as the supported mechanism.
func negTokenResp(state byte, token []byte) []byte {
	fields := [][]byte{tlv(derContext0, tlv(derEnumerated, []byte{state}))}
	if token != nil {
		fields = append(fields,
			tlv(derContext1, tlv(derOID, []byte(oidNTLMSSP))),
			tlv(derContext2, tlv(derOctetString, token)))
	}
	return tlv(derContext1, tlv(derSequence, fields...))
}

// parseNTLMNegotiate checks a NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1) and
// returns its NegotiateFlags.
func parseNTLMNegotiate(msg []byte) (uint32, bool) {
	if len(msg) < 32 || string(msg[:8]) != ntlmSignature || u32(msg[8:]) != ntlmNegotiate {
		return 0, false
	}
	return u32(msg[12:]), true
}

// challengeMessage builds the CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) answering
// a NEGOTIATE_MESSAGE with the given flags.
func challengeMessage(clientFlags uint32, challenge [8]byte) []byte {
	const fixed = 56
	name := utf16LE(serverNetBIOSName)
	info := targetInfo()
	msg := make([]byte, fixed+len(name)+len(info))
	copy(msg, ntlmSignature)
	put32(msg[8:], ntlmChallenge)
	putNTLMField(msg[12:], len(name), fixed)
	put32(msg[20:], clientFlags&ntlmServerFlags|ntlmRequiredFlags)
	copy(msg[24:32], challenge[:])
	putNTLMField(msg[40:], len(info), fixed+len(name))
	copy(msg[48:56], ntlmVersion)
	copy(msg[fixed:], name)
	copy(msg[fixed+len(name):], info)
	return msg
}

// putNTLMField writes Len, MaxLen and BufferOffset of a MS-NLMP field. The
// values are small constants' lengths, far below the field widths.
func putNTLMField(b []byte, n, off int) {
	put16(b, uint16(n))     //nolint:gosec // len of a short constant name
	put16(b[2:], uint16(n)) //nolint:gosec // idem
	put32(b[4:], uint32(off))
}

// targetInfo is the AV_PAIR list of the CHALLENGE_MESSAGE (MS-NLMP 2.2.2.1).
func targetInfo() []byte {
	var b []byte
	add := func(id uint16, v []byte) {
		b = binary.LittleEndian.AppendUint16(b, id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v))) //nolint:gosec // short constant names
		b = append(b, v...)
	}
	add(avNbDomainName, utf16LE(serverNetBIOSName))
	add(avNbComputerName, utf16LE(serverNetBIOSName))
	add(avDNSDomainName, utf16LE(serverDNSName))
	add(avDNSComputerName, utf16LE(serverDNSName))
	add(avEOL, nil)
	return b
}

// parseNTLMAuthenticate checks an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3):
// every payload field must lie inside msg. anonymous follows MS-NLMP
// 3.2.5.1.2: an empty UserName and NtChallengeResponse, and an empty or
// one-zero-byte LmChallengeResponse.
func parseNTLMAuthenticate(msg []byte) (anonymous, ok bool) {
	const fixed = 64 // up to and including NegotiateFlags
	if len(msg) < fixed || string(msg[:8]) != ntlmSignature || u32(msg[8:]) != ntlmAuthenticate {
		return false, false
	}
	// LmChallengeResponse, NtChallengeResponse, DomainName, UserName,
	// Workstation, EncryptedRandomSessionKey.
	var f [6][]byte
	for i := range f {
		at := 12 + 8*i
		n, off := u16(msg[at:]), u32(msg[at+4:])
		if n == 0 {
			continue
		}
		end := uint64(off) + uint64(n)
		if end > uint64(len(msg)) {
			return false, false
		}
		f[i] = msg[off:end]
	}
	lm, nt, user := f[0], f[1], f[3]
	anonymous = len(nt) == 0 && len(user) == 0 && (len(lm) == 0 || (len(lm) == 1 && lm[0] == 0))
	return anonymous, true
}

// ntlmUser returns the UserName of an AUTHENTICATE_MESSAGE (UTF-16LE:
// NTLMSSP_NEGOTIATE_UNICODE is always negotiated), "" when it has none or
// it does not fit in msg.
func ntlmUser(msg []byte) string {
	const at = 12 + 8*3 // the UserName field
	if len(msg) < at+8 {
		return ""
	}
	n, off := u16(msg[at:]), u32(msg[at+4:])
	if uint64(off)+uint64(n) > uint64(len(msg)) {
		return ""
	}
	user, _ := decodeUTF16LE(msg[off : off+uint32(n)])
	return user
}
