package smb

import (
	"errors"

	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// Security is what the server's answers during the setup of a connection
// said about its protection: go-smb2 reads the NEGOTIATE,
// SESSION_SETUP and TREE_CONNECT answers but exports none of it, so the
// frames it reads are decoded again (pkg/smb/wire) on their way to it.
// The fields are what the server said, not what go-smb2 was asked to do;
// the methods apply MS-SMB2's rules to them.
type Security struct {
	// Negotiate is the NEGOTIATE answer (valid when Negotiated).
	Negotiate  wire.NegotiateResponse
	Negotiated bool
	// SessionFlags are from the final SESSION_SETUP answer (valid when
	// SessionDone): guest, anonymous (null), encrypted.
	SessionFlags uint16
	SessionDone  bool
	// Tree is the TREE_CONNECT answer (valid when TreeDone): for IPC$ on a
	// probe session, for the share in StatShare. An encrypted session's
	// tree connect answer is read only where the driver holds the keys
	// (AES-GCM on a probe or watch session), not in StatShare.
	Tree     wire.TreeConnectResponse
	TreeDone bool
	// Answers counts the SMB2 answers read during the setup, Signed those
	// with SMB2_FLAGS_SIGNED and Encrypted the SMB3 encrypted messages.
	Answers, Signed, Encrypted int
}

// SigningRequired: the server requires every message to be signed.
func (s Security) SigningRequired() bool {
	return s.Negotiated && s.Negotiate.SecurityMode&wire.SigningRequired != 0
}

// Guest reports a guest session; Anonymous a null (anonymous) one. Neither
// has a session key, so neither signs nor encrypts (MS-SMB2 3.2.5.3.1).
func (s Security) Guest() bool { return s.SessionDone && s.SessionFlags&wire.SessionGuest != 0 }

// Anonymous: see Guest.
func (s Security) Anonymous() bool { return s.SessionDone && s.SessionFlags&wire.SessionNull != 0 }

// SessionSigned reports whether the session's messages are signed: the
// server requires it and the session has a key (MS-SMB2 3.2.4.1.1; go-smb2
// signs only then, besides TREE_CONNECT).
func (s Security) SessionSigned() bool { return s.SigningRequired() && !s.Guest() && !s.Anonymous() }

// SessionEncrypted reports whether the server asked for the whole session
// to be encrypted (SMB2_SESSION_FLAG_ENCRYPT_DATA).
func (s Security) SessionEncrypted() bool {
	return s.SessionDone && s.SessionFlags&wire.SessionEncrypt != 0
}

// Cipher is the cipher the 3.1.1 NEGOTIATE chose, 0 when none was named.
func (s Security) Cipher() uint16 {
	if len(s.Negotiate.Ciphers) == 1 {
		return s.Negotiate.Ciphers[0]
	}
	return 0
}

// observe folds one message the server sent during setup into s.
func (s *Security) observe(msg []byte) {
	h, err := wire.ParseHeader(msg)
	if errors.Is(err, wire.ErrEncrypted) {
		s.Encrypted++
		return
	}
	if err != nil || !h.Response() {
		return
	}
	s.Answers++
	if h.Flags&wire.FlagSigned != 0 {
		s.Signed++
	}
	if h.Status != wire.StatusSuccess {
		return
	}
	switch h.Command {
	case wire.CmdNegotiate:
		if r, err := wire.ParseNegotiateResponse(msg); err == nil {
			s.Negotiate, s.Negotiated = r, true
		}
	case wire.CmdSessionSetup:
		if r, err := wire.ParseSessionSetupResponse(msg); err == nil {
			s.SessionFlags, s.SessionDone = r.Flags, true
		}
	case wire.CmdTreeConnect:
		if r, err := wire.ParseTreeConnectResponse(msg); err == nil {
			s.Tree, s.TreeDone = r, true
		}
	}
}

// frameScanner splits the bytes read from a connection into SMB2 messages
// (MS-SMB2 2.1 Direct TCP framing). It holds at most one frame: one over
// wire.MaxProbeFrame, or a prefix that is not a frame boundary, ends the
// scan for good.
type frameScanner struct {
	rx      []byte
	stopped bool
}

// feed appends b and calls each with every complete message.
func (f *frameScanner) feed(b []byte, each func(msg []byte)) {
	if f.stopped {
		return
	}
	f.rx = append(f.rx, b...)
	for len(f.rx) >= 4 {
		n := int(f.rx[1])<<16 | int(f.rx[2])<<8 | int(f.rx[3])
		if f.rx[0] != 0 || n > wire.MaxProbeFrame {
			f.rx, f.stopped = nil, true // not a frame boundary we understand: stop following
			return
		}
		if len(f.rx) < 4+n {
			return
		}
		each(f.rx[4 : 4+n])
		f.rx = f.rx[4+n:]
	}
	if len(f.rx) == 0 {
		f.rx = nil // let the read buffer go
	}
}
