package smbresponder

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// request encodes an SMB2 request with CreditCharge 1 and CreditRequest 1.
func request(cmd uint16, id, sess uint64, tree uint32, body []byte) []byte {
	p := make([]byte, headerSize+len(body))
	copy(p, protocolID)
	put16(p[4:], headerSize)
	put16(p[6:], 1)
	put16(p[12:], cmd)
	put16(p[14:], 1)
	put64(p[24:], id)
	put32(p[36:], tree)
	put64(p[40:], sess)
	copy(p[headerSize:], body)
	return p
}

func frameOf(p []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...) //nolint:gosec // test sizes
}

func negotiateReq(dialects ...uint16) []byte {
	b := make([]byte, 36, 36+2*len(dialects))
	put16(b, 36)
	put16(b[2:], uint16(len(dialects))) //nolint:gosec // a few
	put16(b[4:], 1)
	for _, d := range dialects {
		b = binary.LittleEndian.AppendUint16(b, d)
	}
	return b
}

func echoReq() []byte { return []byte{4, 0, 0, 0} }

func sessionSetupReq(token []byte) []byte {
	b := make([]byte, 24, 24+len(token))
	put16(b, 25)
	put16(b[12:], headerSize+24)
	put16(b[14:], uint16(len(token))) //nolint:gosec // test tokens
	return append(b, token...)
}

func treeConnectReq(path string) []byte {
	p := utf16LE(path)
	b := make([]byte, 8, 8+len(p))
	put16(b, 9)
	put16(b[4:], headerSize+8)
	put16(b[6:], uint16(len(p))) //nolint:gosec // test paths
	return append(b, p...)
}

// ntlmNegotiateMsg is a raw NEGOTIATE_MESSAGE as go-smb2 sends it.
func ntlmNegotiateMsg() []byte {
	m := make([]byte, 40)
	copy(m, ntlmSignature)
	put32(m[8:], ntlmNegotiate)
	put32(m[12:], ntlmServerFlags)
	copy(m[32:], ntlmVersion)
	return m
}

// ntlmAuthMsg is an AUTHENTICATE_MESSAGE with the given user (UTF-16LE).
func ntlmAuthMsg(user string) []byte {
	u := utf16LE(user)
	m := make([]byte, 88, 88+len(u))
	copy(m, ntlmSignature)
	put32(m[8:], ntlmAuthenticate)
	put16(m[36:], uint16(len(u))) //nolint:gosec // test names
	put16(m[38:], uint16(len(u))) //nolint:gosec // test names
	put32(m[40:], 88)
	return append(m, u...)
}

// answerMsg is a decoded response.
type answerMsg struct {
	status  uint32
	cmd     uint16
	credits uint16
	msgID   uint64
	treeID  uint32
	sessID  uint64
	body    []byte
}

// rawClient drives ServeConn over a net.Pipe one frame at a time.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	wait func() error
}

func newRawClient(t *testing.T, s *Server) *rawClient {
	t.Helper()
	nc, wait := servePipe(t.Context(), s)
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, wait: wait}
}

func (r *rawClient) send(pkts ...[]byte) {
	r.t.Helper()
	var frame []byte
	for _, p := range pkts {
		frame = append(frame, frameOf(p)...)
	}
	if _, err := r.nc.Write(frame); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawClient) recv() answerMsg {
	r.t.Helper()
	var lenBuf [4]byte
	p, err := readFrame(r.nc, &lenBuf)
	if err != nil {
		r.t.Fatalf("read answer: %v", err)
	}
	if string(p[:4]) != protocolID || u32(p[16:])&flagServerToRedir == 0 {
		r.t.Fatalf("not an SMB2 response: %x", p[:20])
	}
	return answerMsg{
		status: u32(p[8:]), cmd: u16(p[12:]), credits: u16(p[14:]), msgID: u64(p[24:]),
		treeID: u32(p[36:]), sessID: u64(p[40:]), body: p[headerSize:],
	}
}

// roundTrip sends one request and returns its answer, checking the echoed
// command and MessageId.
func (r *rawClient) roundTrip(p []byte) answerMsg {
	r.t.Helper()
	r.send(p)
	a := r.recv()
	if a.cmd != u16(p[12:]) || a.msgID != u64(p[24:]) {
		r.t.Fatalf("answer cmd %#x id %d for request cmd %#x id %d", a.cmd, a.msgID, u16(p[12:]), u64(p[24:]))
	}
	return a
}

// expectClosed checks that the server closed the connection and that
// ServeConn returned an error wrapping want.
func (r *rawClient) expectClosed(want error) {
	r.t.Helper()
	var b [1]byte
	if _, err := r.nc.Read(b[:]); !errors.Is(err, io.EOF) {
		r.t.Errorf("read after violation: %v, want EOF", err)
	}
	if err := r.wait(); !errors.Is(err, want) {
		r.t.Errorf("ServeConn: %v, want %v", err, want)
	}
}

// negotiate negotiates 2.1 and asks for 8 credits: MessageIds 1..8.
func (r *rawClient) negotiate() {
	r.t.Helper()
	p := request(CmdNegotiate, 0, 0, 0, negotiateReq(dialect202, dialect210))
	put16(p[14:], 8)
	if a := r.roundTrip(p); a.status != statusSuccess || a.credits != 8 {
		r.t.Fatalf("NEGOTIATE: status %#x credits %d", a.status, a.credits)
	}
}

func TestNegotiateDialects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRawClient(t, New(Options{}))
		a := r.roundTrip(request(CmdNegotiate, 0, 0, 0, negotiateReq(0x0311)))
		if a.status != statusNotSupported {
			t.Errorf("3.1.1 only: status %#x, want STATUS_NOT_SUPPORTED", a.status)
		}
		a = r.roundTrip(request(CmdNegotiate, 1, 0, 0, negotiateReq(0x0311, dialect210, dialect202)))
		if a.status != statusSuccess || u16(a.body[4:]) != dialect210 || u16(a.body[2:]) != negotiateSigningEnabled {
			t.Errorf("NEGOTIATE: status %#x dialect %#x mode %#x", a.status, u16(a.body[4:]), u16(a.body[2:]))
		}
		hint, ok := bufferAt(append(make([]byte, headerSize), a.body...), headerSize+64,
			uint32(u16(a.body[56:])), uint32(u16(a.body[58:])))
		if !ok || string(hint) != string(negTokenInitHint()) {
			t.Errorf("security buffer %x, want the SPNEGO hint", hint)
		}
		r.send(request(CmdNegotiate, 2, 0, 0, negotiateReq(dialect210)))
		r.expectClosed(ErrProtocol)
	})
}

func TestNegotiate202(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRawClient(t, New(Options{}))
		p := request(CmdNegotiate, 0, 0, 0, negotiateReq(dialect202))
		put16(p[6:], 0) // 2.0.2 clients send CreditCharge 0
		if a := r.roundTrip(p); a.status != statusSuccess || u16(a.body[4:]) != dialect202 {
			t.Errorf("NEGOTIATE 2.0.2: status %#x dialect %#x", a.status, u16(a.body[4:]))
		}
	})
}

// TestSessionRaw walks raw-NTLMSSP anonymous and guest sessions through
// every implemented command and the error statuses.
func TestSessionRaw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRawClient(t, New(Options{}))
		r.negotiate()
		a := r.roundTrip(request(CmdTreeConnect, 1, 0, 0, treeConnectReq(`\\srv\IPC$`)))
		if a.status != statusUserSessionDeleted {
			t.Errorf("TREE_CONNECT without session: %#x", a.status)
		}
		a = r.roundTrip(request(CmdSessionSetup, 2, 0, 0, sessionSetupReq(ntlmNegotiateMsg())))
		sid := a.sessID
		if a.status != statusMoreProcessingRequired || sid == 0 {
			t.Fatalf("SESSION_SETUP 1: status %#x session %d", a.status, sid)
		}
		if tok := a.body[8:]; string(tok[:8]) != ntlmSignature || u32(tok[8:]) != ntlmChallenge {
			t.Errorf("leg 1 token %x is not a raw CHALLENGE_MESSAGE", tok)
		}
		if a := r.roundTrip(request(CmdTreeConnect, 3, sid, 0, treeConnectReq(`\\srv\IPC$`))); a.status != statusAccessDenied {
			t.Errorf("TREE_CONNECT during setup: %#x", a.status)
		}
		a = r.roundTrip(request(CmdSessionSetup, 4, sid, 0, sessionSetupReq(ntlmAuthMsg(""))))
		if a.status != statusSuccess || a.sessID != sid || u16(a.body[2:]) != sessionFlagIsNull {
			t.Fatalf("SESSION_SETUP 2: status %#x session %d flags %#x", a.status, a.sessID, u16(a.body[2:]))
		}
		steps := []struct {
			name   string
			req    []byte
			status uint32
		}{
			{"second session", request(CmdSessionSetup, 5, 0, 0, sessionSetupReq(ntlmNegotiateMsg())), statusRequestNotAccepted},
			{"other share", request(CmdTreeConnect, 6, sid, 0, treeConnectReq(`\\srv\data`)), statusBadNetworkName},
			{"bad path", request(CmdTreeConnect, 7, sid, 0, treeConnectReq(`IPC$`)), statusInvalidParameter},
			{"IPC$", request(CmdTreeConnect, 8, sid, 0, treeConnectReq(`\\srv\ipc$`)), statusSuccess},
			{"CREATE", request(0x0005, 9, sid, 1, make([]byte, 57)), statusNotSupported},
			{"unknown command", request(0x0099, 10, sid, 1, nil), statusInvalidParameter},
			{"wrong session", request(CmdTreeDisconnect, 11, sid+1, 1, echoReq()), statusUserSessionDeleted},
			{"unknown tree", request(CmdTreeDisconnect, 12, sid, 7, echoReq()), statusNetworkNameDeleted},
			{"tree disconnect", request(CmdTreeDisconnect, 13, sid, 1, echoReq()), statusSuccess},
			{"tree gone", request(CmdTreeDisconnect, 14, sid, 1, echoReq()), statusNetworkNameDeleted},
			{"bad echo", request(CmdEcho, 15, sid, 0, []byte{5, 0, 0, 0}), statusInvalidParameter},
			{"logoff", request(CmdLogoff, 16, sid, 0, echoReq()), statusSuccess},
			{"echo without session", request(CmdEcho, 17, sid, 0, echoReq()), statusSuccess},
			{"after logoff", request(CmdTreeConnect, 18, sid, 0, treeConnectReq(`\\srv\IPC$`)), statusUserSessionDeleted},
		}
		for _, st := range steps {
			a := r.roundTrip(st.req)
			if a.status != st.status {
				t.Errorf("%s: status %#x, want %#x", st.name, a.status, st.status)
			}
			if a.status != statusSuccess && (len(a.body) != 9 || u16(a.body) != 9) {
				t.Errorf("%s: error body %x, want the 9-byte ERROR response", st.name, a.body)
			}
			if st.name == "IPC$" && (a.treeID != 1 || a.body[2] != 0x02) {
				t.Errorf("IPC$: tree %d share type %d", a.treeID, a.body[2])
			}
		}
		// A named user gets a guest session.
		_ = r.roundTrip(request(CmdSessionSetup, 19, 0, 0, sessionSetupReq(ntlmNegotiateMsg())))
		a = r.roundTrip(request(CmdSessionSetup, 20, sid+1, 0, sessionSetupReq(ntlmAuthMsg("alice"))))
		if a.status != statusSuccess || u16(a.body[2:]) != sessionFlagIsGuest {
			t.Errorf("named user: status %#x flags %#x, want a guest session", a.status, u16(a.body[2:]))
		}
	})
}

func TestMalformedSessionSetup(t *testing.T) {
	badOffset := sessionSetupReq(ntlmNegotiateMsg())
	put16(badOffset[12:], 60) // inside the fixed body
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"short body", []byte{25, 0}},
		{"buffer offset in body", badOffset},
		{"buffer past end", sessionSetupReq(nil)[:24]},
		{"not NTLMSSP", sessionSetupReq([]byte("hello, world"))},
		{"bad SPNEGO", sessionSetupReq([]byte{0x60, 0x05, 0x06, 0x03, 0x2b, 0x06, 0x01})},
		{"NTLM type 3 first", sessionSetupReq(ntlmAuthMsg(""))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRawClient(t, New(Options{}))
				r.negotiate()
				if a := r.roundTrip(request(CmdSessionSetup, 1, 0, 0, tc.body)); a.status != statusInvalidParameter {
					t.Errorf("status %#x, want STATUS_INVALID_PARAMETER", a.status)
				}
			})
		})
	}
}

// TestConnectionClosed lists what makes the server drop the connection.
func TestConnectionClosed(t *testing.T) {
	neg := frameOf(request(CmdNegotiate, 0, 0, 0, negotiateReq(dialect210)))
	smb1 := request(CmdNegotiate, 0, 0, 0, nil)
	copy(smb1, protocolIDSMB1)
	badNext := request(CmdEcho, 1, 0, 0, echoReq())
	put32(badNext[20:], 12)
	for _, tc := range []struct {
		name  string
		input []byte // written after the NEGOTIATE exchange unless first is set
		first bool   // written first, before any NEGOTIATE
		want  error
	}{
		{"echo before negotiate", frameOf(request(CmdEcho, 0, 0, 0, echoReq())), true, ErrProtocol},
		{"huge frame", []byte{0, 0xff, 0xff, 0xff}, true, ErrProtocol},
		{"tiny frame", []byte{0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}, true, ErrProtocol},
		{"netbios type", []byte{0x85, 0, 0, 0}, true, ErrProtocol},
		{"smb1", frameOf(smb1), true, ErrProtocol},
		{"truncated", neg[:30], true, io.ErrUnexpectedEOF},
		{"reused id", frameOf(request(CmdEcho, 0, 0, 0, echoReq())), false, ErrProtocol},
		{"id beyond window", frameOf(request(CmdEcho, 9, 0, 0, echoReq())), false, ErrProtocol}, // 1..8 granted
		{"bad NextCommand", frameOf(badNext), false, ErrProtocol},
		{"response flag", func() []byte {
			p := request(CmdEcho, 1, 0, 0, echoReq())
			put32(p[16:], flagServerToRedir)
			return frameOf(p)
		}(), false, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRawClient(t, New(Options{}))
				if !tc.first {
					r.negotiate()
				}
				_, _ = r.nc.Write(tc.input) // the server may close before reading it all
				if errors.Is(tc.want, io.ErrUnexpectedEOF) {
					_ = r.nc.Close()
					if err := r.wait(); !errors.Is(err, tc.want) {
						t.Errorf("ServeConn: %v, want %v", err, tc.want)
					}
					return
				}
				r.expectClosed(tc.want)
			})
		})
	}
}

func TestCompoundAndCredits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRawClient(t, New(Options{}))
		neg := request(CmdNegotiate, 0, 0, 0, negotiateReq(dialect210))
		put16(neg[14:], 10)
		if a := r.roundTrip(neg); a.credits != 10 {
			t.Fatalf("NEGOTIATE granted %d credits, want 10", a.credits)
		}
		// The client holds ids 1..10 and sends two in one compound frame.
		first := request(CmdEcho, 1, 0, 0, append(echoReq(), 0, 0, 0, 0))
		put32(first[20:], 72) // NextCommand, 8-aligned
		put16(first[14:], 1000)
		second := request(CmdEcho, 2, 0, 0, echoReq())
		put16(second[14:], 1000)
		if _, err := r.nc.Write(frameOf(append(first, second...))); err != nil {
			t.Fatal(err)
		}
		// The first answer tops the window up to maxCredits: 8 ids still
		// held, 1 request in flight.
		if a := r.recv(); a.msgID != 1 || a.credits != maxCredits-8-1 {
			t.Errorf("first answer: id %d credits %d, want 1 and %d", a.msgID, a.credits, maxCredits-8-1)
		}
		if a := r.recv(); a.msgID != 2 || a.credits != 1 {
			t.Errorf("second answer: id %d credits %d, want 2 and 1", a.msgID, a.credits)
		}
		// The client now holds maxCredits ids, 3 .. 3+maxCredits-1.
		if a := r.roundTrip(request(CmdEcho, 3+maxCredits-1, 0, 0, echoReq())); a.status != statusSuccess {
			t.Errorf("echo at the window's top: %#x", a.status)
		}
	})
}

func TestFreezeHoldsAnswersInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := New(Options{})
		r := newRawClient(t, srv)
		r.negotiate()
		srv.Freeze()
		r.send(request(CmdEcho, 1, 0, 0, echoReq()), request(CmdEcho, 2, 0, 0, echoReq()))
		if err := r.nc.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := r.nc.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read while frozen: %v, want a timeout", err)
		}
		srv.Thaw()
		if err := r.nc.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		for want := uint64(1); want <= 2; want++ {
			if a := r.recv(); a.msgID != want {
				t.Errorf("answer %d after Thaw has id %d", want, a.msgID)
			}
		}
	})
}
