package smb

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// A server that requires signing refuses every unsigned request on a
// session (Samba 4.17 answers STATUS_ACCESS_DENIED, measured), so the
// requests the driver sends itself on a session go-smb2 set up are signed
// with that session's key (MS-SMB2 3.1.4.1, 3.2.4.1.1): go-smb2 does not
// export the key, but the NTLM initiator it was given does, and the
// preauthentication hash 3.1.1 derives the signing key from is computed
// here from the setup messages seen on their way (preauth).

const statusMoreProcessing = 0xC0000016 // STATUS_MORE_PROCESSING_REQUIRED

// preauth is the SMB 3.1.1 preauthentication integrity hash (SHA-512,
// MS-SMB2 3.2.5.2, 3.2.5.3.1): the NEGOTIATE request and answer, then
// each SESSION_SETUP request and each answer but the final one.
type preauth struct{ h [sha512.Size]byte }

func (p *preauth) fold(msg []byte) {
	d := sha512.New()
	d.Write(p.h[:])
	d.Write(msg)
	d.Sum(p.h[:0])
}

// request folds a request the client sent, if it is part of the setup.
func (p *preauth) request(h wire.Header, msg []byte) {
	if h.Command == wire.CmdNegotiate || h.Command == wire.CmdSessionSetup {
		p.fold(msg)
	}
}

// answer folds an answer the server sent, if it is part of the setup and
// not the final SESSION_SETUP answer.
func (p *preauth) answer(h wire.Header, msg []byte) {
	switch {
	case h.Command == wire.CmdNegotiate:
		p.fold(msg)
	case h.Command == wire.CmdSessionSetup && h.Status == statusMoreProcessing:
		p.fold(msg)
	}
}

// signer signs requests on one session.
type signer struct {
	mac func(msg []byte) []byte // a 16-byte (or longer, truncated) signature of msg
}

// Dialects (MS-SMB2 2.2.4).
const (
	dialect202 = 0x0202
	dialect210 = 0x0210
	dialect300 = 0x0300
	dialect302 = 0x0302
	dialect311 = 0x0311
)

// newSigner derives the signing key of a session of dialect from its
// session key (and, for 3.1.1, the preauthentication hash): HMAC-SHA256
// for 2.x, AES-128-CMAC for 3.x (no signing algorithm is negotiated: the
// client offers none).
func newSigner(dialect uint16, sessionKey []byte, hash [sha512.Size]byte) (*signer, error) {
	if len(sessionKey) == 0 {
		return nil, errors.New("signing: no session key")
	}
	var key []byte
	switch dialect {
	case dialect202, dialect210:
		return &signer{mac: func(msg []byte) []byte {
			m := hmac.New(sha256.New, sessionKey)
			m.Write(msg)
			return m.Sum(nil)
		}}, nil
	case dialect300, dialect302:
		key = kdf(sessionKey, []byte("SMB2AESCMAC\x00"), []byte("SmbSign\x00"))
	case dialect311:
		key = kdf(sessionKey, []byte("SMBSigningKey\x00"), hash[:])
	default:
		return nil, fmt.Errorf("signing: dialect %#04x", dialect)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return &signer{mac: func(msg []byte) []byte { return cmac(b, msg) }}, nil
}

// sign signs the framed request frame in place: SMB2_FLAGS_SIGNED set, the
// signature over the whole message with its signature field zero. A nil
// signer leaves the frame as it is.
func (s *signer) sign(frame []byte) {
	if s == nil || len(frame) < 4+wire.HeaderSize {
		return
	}
	msg := frame[4:]
	binary.LittleEndian.PutUint32(msg[16:20], binary.LittleEndian.Uint32(msg[16:20])|wire.FlagSigned)
	clear(msg[48:64])
	copy(msg[48:64], s.mac(msg))
}

// kdf is SP800-108 in counter mode with HMAC-SHA256 (MS-SMB2 3.1.4.2),
// one round: a 128-bit key.
func kdf(ki, label, context []byte) []byte { return kdfBits(ki, label, context, 128) }

// kdfBits is kdf for a key of bits (128 or 256: one HMAC-SHA256 round).
func kdfBits(ki, label, context []byte, bits int) []byte {
	m := hmac.New(sha256.New, ki)
	m.Write([]byte{0, 0, 0, 1}) // i
	m.Write(label)
	m.Write([]byte{0}) // separator
	m.Write(context)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(bits)) //nolint:gosec // 128 or 256
	m.Write(l[:])
	return m.Sum(nil)[:bits/8]
}

// cmac is AES-CMAC (RFC 4493) of msg under the block cipher b.
func cmac(b cipher.Block, msg []byte) []byte {
	const bs = aes.BlockSize
	var k1, k2, l [bs]byte
	b.Encrypt(l[:], l[:])
	shift := func(dst, src *[bs]byte) {
		carry := src[0] >> 7
		for i := range bs - 1 {
			dst[i] = src[i]<<1 | src[i+1]>>7
		}
		dst[bs-1] = src[bs-1] << 1
		if carry != 0 {
			dst[bs-1] ^= 0x87
		}
	}
	shift(&k1, &l)
	shift(&k2, &k1)
	n := (len(msg) + bs - 1) / bs
	complete := n > 0 && len(msg)%bs == 0
	if n == 0 {
		n = 1
	}
	var last [bs]byte
	tail := msg[(n-1)*bs:]
	if complete {
		for i := range bs {
			last[i] = tail[i] ^ k1[i]
		}
	} else {
		copy(last[:], tail)
		last[len(tail)] = 0x80
		for i := range bs {
			last[i] ^= k2[i]
		}
	}
	var x [bs]byte
	for i := range n - 1 {
		for j := range bs {
			x[j] ^= msg[i*bs+j]
		}
		b.Encrypt(x[:], x[:])
	}
	for j := range bs {
		x[j] ^= last[j]
	}
	b.Encrypt(x[:], x[:])
	return x[:]
}

// Ciphers (MS-SMB2 2.2.3.1.2) the driver can encrypt its own requests
// with: the AES-GCM ones. With AES-CCM the session stays go-smb2's.
const (
	cipherAES128GCM = 0x0002
	cipherAES256GCM = 0x0004
)

// sealer encrypts the requests and decrypts the answers of one encrypted
// 3.1.1 session (MS-SMB2 3.1.4.3, 3.2.4.1.8).
type sealer struct {
	session  uint64
	enc, dec cipher.AEAD
}

// newSealer derives a 3.1.1 session's encryption keys from its session key
// and preauthentication hash; nil when the dialect or cipher is not one
// the driver handles.
func newSealer(dialect, cipherID uint16, sessionKey []byte, hash [sha512.Size]byte, session uint64) (*sealer, error) {
	bits := 0
	switch {
	case dialect != dialect311 || len(sessionKey) == 0:
		return nil, nil
	case cipherID == cipherAES128GCM:
		bits = 128
	case cipherID == cipherAES256GCM:
		bits = 256
	default:
		return nil, nil
	}
	aead := func(label string) (cipher.AEAD, error) {
		b, err := aes.NewCipher(kdfBits(sessionKey, []byte(label), hash[:], bits))
		if err != nil {
			return nil, fmt.Errorf("encryption: %w", err)
		}
		return cipher.NewGCM(b)
	}
	enc, err := aead("SMBC2SCipherKey\x00")
	if err != nil {
		return nil, err
	}
	dec, err := aead("SMBS2CCipherKey\x00")
	if err != nil {
		return nil, err
	}
	return &sealer{session: session, enc: enc, dec: dec}, nil
}

// seal encrypts the framed request frame.
func (s *sealer) seal(frame []byte) ([]byte, error) {
	var nonce [12]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("encryption nonce: %w", err)
	}
	return wire.SealTransform(s.enc, s.session, nonce[:], frame)
}

// open decrypts an answer; a message that is not encrypted is returned as
// it is (the server decides: STATUS_PENDING interim answers may come in
// the clear).
func (s *sealer) open(msg []byte) ([]byte, error) {
	if s == nil || !wire.IsTransform(msg) {
		return msg, nil
	}
	return wire.OpenTransform(s.dec, s.session, msg)
}

// openOwn decrypts a request this client sent (to read its header).
func (s *sealer) openOwn(msg []byte) ([]byte, error) {
	return wire.OpenTransform(s.enc, s.session, msg)
}

// protection is what the server requires of a session's requests: signed
// (sign), encrypted (seal, which supersedes signing), or neither.
type protection struct {
	sign *signer
	seal *sealer
}

// outgoing signs or encrypts the framed request frame.
func (p protection) outgoing(frame []byte) ([]byte, error) {
	if p.seal != nil {
		return p.seal.seal(frame)
	}
	p.sign.sign(frame)
	return frame, nil
}

// incoming decrypts an encrypted answer; others pass as they are.
func (p protection) incoming(msg []byte) ([]byte, error) { return p.seal.open(msg) }
