package smb

import (
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCMACVectors: the examples of RFC 4493 section 4.
func TestCMACVectors(t *testing.T) {
	b, err := aes.NewCipher(unhex(t, "2b7e151628aed2a6abf7158809cf4f3c"))
	if err != nil {
		t.Fatal(err)
	}
	msg := unhex(t, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	for _, c := range []struct {
		n    int
		want string
	}{
		{0, "bb1d6929e95937287fa37d129b756746"},
		{16, "070a16b46b4d4144f79bdd9dd04a287c"},
		{40, "dfa66747de9ae63030ca32611497c827"},
		{64, "51f0bebf7e3b9d92fc49741779363cfe"},
	} {
		if got := hex.EncodeToString(cmac(b, msg[:c.n])); got != c.want {
			t.Errorf("CMAC of %d bytes: %s, want %s", c.n, got, c.want)
		}
	}
}

// TestSignSetsTheFlagAndTheSignature: the signature is the MAC of the
// message with the flag set and the field zero; a nil signer is a no-op.
func TestSignSetsTheFlagAndTheSignature(t *testing.T) {
	frame := wire.EchoRequest(7)
	copy(frame[4+48:], bytes.Repeat([]byte{0xAA}, 16)) // junk where the signature goes
	var nilSigner *signer
	before := bytes.Clone(frame)
	nilSigner.sign(frame)
	if !bytes.Equal(frame, before) {
		t.Fatal("a nil signer changed the frame")
	}
	for _, dialect := range []uint16{dialect202, dialect302, dialect311} {
		s, err := newSigner(dialect, bytes.Repeat([]byte{1}, 16), [64]byte{2})
		if err != nil {
			t.Fatal(err)
		}
		f := bytes.Clone(before)
		s.sign(f)
		msg := f[4:]
		if binary.LittleEndian.Uint32(msg[16:20])&wire.FlagSigned == 0 {
			t.Fatalf("%#x: no SMB2_FLAGS_SIGNED", dialect)
		}
		sig := bytes.Clone(msg[48:64])
		clear(msg[48:64])
		if want := s.mac(msg)[:16]; !bytes.Equal(sig, want) {
			t.Fatalf("%#x: signature %x, want %x", dialect, sig, want)
		}
	}
	if _, err := newSigner(dialect311, nil, [64]byte{}); err == nil {
		t.Fatal("a signer without a session key")
	}
	if _, err := newSigner(0x0999, []byte{1}, [64]byte{}); err == nil {
		t.Fatal("a signer for an unknown dialect")
	}
}

// TestPreauthFoldsTheSetup: the NEGOTIATE exchange, the SESSION_SETUP
// requests and the answers asking for more, not the final answer or
// anything after it.
func TestPreauthFoldsTheSetup(t *testing.T) {
	var p, want preauth
	msgs := []struct {
		h    wire.Header
		req  bool
		fold bool
	}{
		{wire.Header{Command: wire.CmdNegotiate}, true, true},
		{wire.Header{Command: wire.CmdNegotiate}, false, true},
		{wire.Header{Command: wire.CmdSessionSetup}, true, true},
		{wire.Header{Command: wire.CmdSessionSetup, Status: statusMoreProcessing}, false, true},
		{wire.Header{Command: wire.CmdSessionSetup}, true, true},
		{wire.Header{Command: wire.CmdSessionSetup, Status: wire.StatusSuccess}, false, false},
		{wire.Header{Command: wire.CmdTreeConnect}, true, false},
	}
	for i, m := range msgs {
		msg := []byte{byte(i), 1, 2, 3}
		if m.req {
			p.request(m.h, msg)
		} else {
			p.answer(m.h, msg)
		}
		if m.fold {
			want.fold(msg)
		}
	}
	if p.h != want.h {
		t.Fatal("preauth hash folded the wrong messages")
	}
}

// TestSealer: the AES-GCM ciphers of 3.1.1 get a sealer whose requests
// the server side (the same keys, directions swapped) opens; other
// dialects and ciphers get none, and clear answers pass.
func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 16)
	for _, c := range []struct {
		dialect, cipher uint16
		want            bool
	}{
		{dialect311, cipherAES128GCM, true}, {dialect311, cipherAES256GCM, true},
		{dialect311, 0x0001, false}, {dialect302, cipherAES128GCM, false}, {dialect311, 0, false},
	} {
		s, err := newSealer(c.dialect, c.cipher, key, [64]byte{9}, 0x77)
		if err != nil || (s != nil) != c.want {
			t.Fatalf("dialect %#x cipher %d: sealer %v, %v", c.dialect, c.cipher, s != nil, err)
		}
		if s == nil {
			continue
		}
		frame := wire.EchoRequest(3)
		sealed, err := s.seal(frame)
		if err != nil {
			t.Fatal(err)
		}
		server := &sealer{session: 0x77, enc: s.dec, dec: s.enc} // what the server sees
		if got, err := server.open(sealed[4:]); err != nil || !bytes.Equal(got, frame[4:]) {
			t.Fatalf("cipher %d: the server opens %x, %v", c.cipher, got, err)
		}
		if got, err := s.openOwn(sealed[4:]); err != nil || !bytes.Equal(got, frame[4:]) {
			t.Fatalf("cipher %d: own request %x, %v", c.cipher, got, err)
		}
		again, _ := s.seal(frame)
		if bytes.Equal(again[4+20:4+32], sealed[4+20:4+32]) {
			t.Fatal("a nonce repeated")
		}
		if got, err := s.open(frame[4:]); err != nil || !bytes.Equal(got, frame[4:]) {
			t.Fatalf("a clear answer: %x, %v", got, err)
		}
	}
	var none protection
	frame := wire.EchoRequest(1)
	if out, err := none.outgoing(bytes.Clone(frame)); err != nil || !bytes.Equal(out, frame) {
		t.Fatal("no protection changed the request")
	}
}
