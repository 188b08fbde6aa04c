package wire

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// SMB2 TRANSFORM_HEADER (MS-SMB2 2.2.41): what an encrypted message is
// wrapped in. Only the AES-GCM ciphers are handled here: a 12-byte nonce
// in the 16-byte Nonce field.
const (
	TransformHeaderSize = 52
	transformFlagsEnc   = 0x0001 // Flags: encrypted
	gcmNonceSize        = 12
	tagSize             = 16
)

// IsTransform reports whether msg (a frame without its transport prefix)
// is an encrypted message.
func IsTransform(msg []byte) bool {
	return len(msg) >= 4 && binary.LittleEndian.Uint32(msg) == protocolCrypt
}

// SealTransform encrypts the framed message frame (4-byte prefix, then
// the SMB2 message) for sessionID with aead (AES-GCM, 12-byte nonce) and
// returns the framed encrypted message. The nonce must never repeat for
// the key.
func SealTransform(aead cipher.AEAD, sessionID uint64, nonce, frame []byte) ([]byte, error) {
	if len(nonce) != gcmNonceSize || aead.NonceSize() != gcmNonceSize || aead.Overhead() != tagSize {
		return nil, fmt.Errorf("transform: want AES-GCM with a %d-byte nonce", gcmNonceSize)
	}
	if len(frame) < 4+HeaderSize {
		return nil, fmt.Errorf("%w: transform of a %d-byte frame", ErrMalformed, len(frame))
	}
	msg := frame[4:]
	n := TransformHeaderSize + len(msg)
	if n > MaxProbeFrame {
		return nil, ErrTooLarge
	}
	out := make([]byte, 4+TransformHeaderSize, 4+n+tagSize)
	binary.BigEndian.PutUint32(out[0:4], uint32(n)) //nolint:gosec // under MaxProbeFrame
	t := out[4:]
	binary.LittleEndian.PutUint32(t[0:4], protocolCrypt)
	copy(t[20:32], nonce)
	binary.LittleEndian.PutUint32(t[36:40], uint32(len(msg))) //nolint:gosec // under MaxProbeFrame
	binary.LittleEndian.PutUint16(t[42:44], transformFlagsEnc)
	binary.LittleEndian.PutUint64(t[44:52], sessionID)
	sealed := aead.Seal(out[4+TransformHeaderSize:], nonce, msg, t[20:52])
	out = out[:4+TransformHeaderSize+len(msg)]
	copy(t[4:20], sealed[len(msg):]) // the tag is the Signature
	return out, nil
}

// OpenTransform checks and decrypts the encrypted message msg (a frame
// without its prefix) of sessionID with aead and returns the SMB2 message
// inside. msg is untrusted: every length is checked.
func OpenTransform(aead cipher.AEAD, sessionID uint64, msg []byte) ([]byte, error) {
	if !IsTransform(msg) || len(msg) < TransformHeaderSize {
		return nil, fmt.Errorf("%w: not a transform header", ErrMalformed)
	}
	if aead.NonceSize() != gcmNonceSize || aead.Overhead() != tagSize {
		return nil, fmt.Errorf("transform: want AES-GCM with a %d-byte nonce", gcmNonceSize)
	}
	t := msg[:TransformHeaderSize]
	size := binary.LittleEndian.Uint32(t[36:40])
	switch {
	case uint64(size) != uint64(len(msg)-TransformHeaderSize):
		return nil, fmt.Errorf("%w: transform of %d bytes says %d", ErrMalformed, len(msg)-TransformHeaderSize, size)
	case binary.LittleEndian.Uint16(t[42:44]) != transformFlagsEnc:
		return nil, fmt.Errorf("%w: transform flags %#x", ErrMalformed, binary.LittleEndian.Uint16(t[42:44]))
	case binary.LittleEndian.Uint64(t[44:52]) != sessionID:
		return nil, fmt.Errorf("%w: transform for session %#x, not %#x", ErrMalformed, binary.LittleEndian.Uint64(t[44:52]), sessionID)
	case size < HeaderSize:
		return nil, fmt.Errorf("%w: encrypted message of %d bytes", ErrMalformed, size)
	}
	sealed := make([]byte, 0, int(size)+tagSize)
	sealed = append(append(sealed, msg[TransformHeaderSize:]...), t[4:20]...)
	plain, err := aead.Open(sealed[:0], t[20:32], sealed, t[20:52])
	if err != nil {
		return nil, fmt.Errorf("%w: transform does not authenticate: %w", ErrMalformed, err)
	}
	return plain, nil
}
