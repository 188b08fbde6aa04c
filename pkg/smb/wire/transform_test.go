package wire

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"
)

func testAEAD(t testing.TB) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(bytes.Repeat([]byte{7}, 16))
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTransformRoundTrip(t *testing.T) {
	a := testAEAD(t)
	frame := EchoRequest(5)
	nonce := bytes.Repeat([]byte{1}, 12)
	sealed, err := SealTransform(a, 0x42, nonce, frame)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(frame)+TransformHeaderSize || !IsTransform(sealed[4:]) {
		t.Fatalf("sealed frame of %d bytes", len(sealed))
	}
	if bytes.Contains(sealed, frame[4:]) {
		t.Fatal("the message is in the clear")
	}
	msg, err := OpenTransform(a, 0x42, sealed[4:])
	if err != nil || !bytes.Equal(msg, frame[4:]) {
		t.Fatalf("open: %v %x", err, msg)
	}
	for name, mutate := range map[string]func([]byte){
		"a bit of the body": func(b []byte) { b[len(b)-1] ^= 1 },
		"the tag":           func(b []byte) { b[4] ^= 1 },
		"the session":       func(b []byte) { b[44] ^= 1 },
		"the nonce":         func(b []byte) { b[20] ^= 1 },
		"the size":          func(b []byte) { b[36]++ },
		"the flags":         func(b []byte) { b[42] = 2 },
	} {
		b := bytes.Clone(sealed[4:])
		mutate(b)
		if _, err := OpenTransform(a, 0x42, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	if _, err := OpenTransform(a, 0x43, sealed[4:]); !errors.Is(err, ErrMalformed) {
		t.Errorf("another session's message: %v", err)
	}
}

func FuzzOpenTransform(f *testing.F) {
	a := testAEAD(f)
	sealed, err := SealTransform(a, 0x42, make([]byte, 12), EchoRequest(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed[4:])
	f.Add(sealed[4 : 4+TransformHeaderSize])
	f.Add([]byte{0xFD, 'S', 'M', 'B'})
	f.Fuzz(func(t *testing.T, msg []byte) {
		plain, err := OpenTransform(a, 0x42, msg)
		if err == nil && len(plain) != len(msg)-TransformHeaderSize {
			t.Fatalf("%d bytes out of %d", len(plain), len(msg))
		}
	})
}
