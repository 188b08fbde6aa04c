package smbresponder

import (
	"bytes"
	"testing"
)

func TestCreditWindow(t *testing.T) {
	w := newCreditWindow()
	steps := []struct {
		name   string
		id     uint64
		charge uint16
		ok     bool
	}{
		{"id 1 not granted yet", 1, 1, false},
		{"negotiate", 0, 1, true},
		{"reuse", 0, 1, false},
	}
	for _, s := range steps {
		if got := w.consume(s.id, s.charge); got != s.ok {
			t.Errorf("%s: consume(%d, %d) = %v, want %v", s.name, s.id, s.charge, got, s.ok)
		}
	}
	if g := w.grant(3); g != 3 || w.high != 4 {
		t.Fatalf("grant(3) = %d, high %d; want 3, 4", g, w.high)
	}
	if w.consume(1, 4) {
		t.Error("charge 4 from id 1 fits in ids 1..3")
	}
	if !w.consume(2, 0) { // charge 0 counts as 1; id 1 is skipped
		t.Error("consume(2, 0) refused")
	}
	if w.consume(1, 1) {
		t.Error("id 1 accepted after id 2")
	}
	if g := w.grant(0); g != 1 {
		t.Errorf("grant(0) = %d, want 1", g)
	}
	// One id (4) held: a huge request is capped at maxCredits held.
	if !w.consume(3, 1) {
		t.Fatal("consume(3, 1) refused")
	}
	if g := w.grant(0xffff); g != maxCredits-1 || w.high-w.next != maxCredits {
		t.Errorf("grant(0xffff) = %d, holding %d; want %d, %d", g, w.high-w.next, maxCredits-1, maxCredits)
	}
	// Full window: each answer grants back just the credit it used.
	if !w.consume(4, 1) {
		t.Fatal("consume(4, 1) refused")
	}
	if g := w.grant(0xffff); g != 1 {
		t.Errorf("grant on a full window = %d, want 1", g)
	}
}

func TestDER(t *testing.T) {
	for _, n := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000} {
		content := bytes.Repeat([]byte{0xab}, n)
		enc := append(tlv(derOctetString, content), 0x99)
		tag, val, rest, ok := readTLV(enc)
		if !ok || tag != derOctetString || !bytes.Equal(val, content) || !bytes.Equal(rest, []byte{0x99}) {
			t.Errorf("length %d: readTLV = %#x, %d bytes, rest %x, %v", n, tag, len(val), rest, ok)
		}
	}
	for _, bad := range [][]byte{
		nil,
		{0x04},
		{0x04, 0x80},                // indefinite length
		{0x04, 0x84, 0, 0, 0, 1, 0}, // four length octets
		{0x04, 0x82, 0x01},          // truncated length
		{0x04, 0x03, 1, 2},          // truncated value
		{0x1f, 0x01, 0x00},          // multi-byte tag
	} {
		if _, _, _, ok := readTLV(bad); ok {
			t.Errorf("readTLV(%x) accepted", bad)
		}
	}
}

func TestSPNEGORoundTrip(t *testing.T) {
	token := ntlmNegotiateMsg()
	mechs := tlv(derContext0, tlv(derSequence, tlv(derOID, []byte(oidNTLMSSP))))
	init := tlv(derApplication0, tlv(derOID, []byte(oidSPNEGO)),
		tlv(derContext0, tlv(derSequence, mechs, tlv(derContext2, tlv(derOctetString, token)))))
	msg, wrapped, ok := unwrapNegotiate(init)
	if !ok || !wrapped || !bytes.Equal(msg, token) {
		t.Errorf("unwrapNegotiate: %x, %v, %v", msg, wrapped, ok)
	}
	resp := negTokenResp(negStateAcceptIncomplete, token)
	if msg, ok := unwrapResponse(resp, true); !ok || !bytes.Equal(msg, token) {
		t.Errorf("unwrapResponse(negTokenResp): %x, %v", msg, ok)
	}
	if _, ok := unwrapResponse(negTokenResp(negStateAcceptCompleted, nil), true); ok {
		t.Error("a NegTokenResp without responseToken was accepted")
	}
}

func TestParseNTLMAuthenticate(t *testing.T) {
	zLM := ntlmAuthMsg("")
	zLM = append(zLM, 0)
	put16(zLM[12:], 1)
	put32(zLM[16:], uint32(len(zLM)-1)) //nolint:gosec // test size
	badField := ntlmAuthMsg("")
	put16(badField[20:], 10)
	put32(badField[24:], 0xfffffff0)
	for _, tc := range []struct {
		name          string
		msg           []byte
		anonymous, ok bool
	}{
		{"anonymous", ntlmAuthMsg(""), true, true},
		{"Z(1) LmChallengeResponse", zLM, true, true},
		{"named user", ntlmAuthMsg("alice"), false, true},
		{"field out of range", badField, false, false},
		{"short", ntlmAuthMsg("")[:63], false, false},
		{"negotiate message", ntlmNegotiateMsg(), false, false},
	} {
		anon, ok := parseNTLMAuthenticate(tc.msg)
		if anon != tc.anonymous || ok != tc.ok {
			t.Errorf("%s: anonymous %v ok %v, want %v %v", tc.name, anon, ok, tc.anonymous, tc.ok)
		}
	}
}

func TestShareName(t *testing.T) {
	for _, tc := range []struct {
		path, share string
		ok          bool
	}{
		{`\\10.0.0.1\IPC$`, "IPC$", true},
		{`\\srv\IPC$` + "\x00", "IPC$", true},
		{`\\srv\a\b`, "", false},
		{`\\srv\`, "", false},
		{`\\\IPC$`, "", false},
		{`IPC$`, "", false},
		{`\srv\IPC$`, "", false},
	} {
		share, ok := shareName(tc.path)
		if share != tc.share || ok != tc.ok {
			t.Errorf("shareName(%q) = %q, %v; want %q, %v", tc.path, share, ok, tc.share, tc.ok)
		}
	}
}
