package smbresponder

import (
	"crypto/rand"
	"strings"
	"time"
)

// state is the protocol state of one connection. Only the goroutine serving
// the connection touches it.
type state struct {
	srv     *Server
	dialect uint16   // 0 until a NEGOTIATE succeeded
	sess    *session // at most one session per connection
}

// session is the connection's SMB2 session (MS-SMB2 3.3.1.8).
type session struct {
	id       uint64
	valid    bool // SESSION_SETUP completed; otherwise InProgress
	wrapped  bool // the client wraps NTLMSSP in SPNEGO
	trees    map[uint32]struct{}
	lastTree uint32
}

// dispatch runs one request that passed the header and credit checks. An
// error means the connection must be closed.
func (st *state) dispatch(h header, pkt []byte, now time.Time) (reply, error) {
	body := pkt[headerSize:]
	switch h.command {
	case CmdNegotiate:
		return st.negotiate(body, now)
	case CmdSessionSetup:
		return st.sessionSetup(h, pkt), nil
	case CmdEcho:
		return echo(h, body), nil
	}
	if h.command > cmdLast {
		return reply{status: statusInvalidParameter, sessionID: h.sessionID, treeID: h.treeID}, nil
	}
	s, status := st.lookup(h.sessionID, h.command)
	switch {
	case status != statusSuccess:
		return reply{status: status, sessionID: h.sessionID, treeID: h.treeID}, nil
	case h.command == CmdLogoff:
		return st.logoff(h, body), nil
	case h.command == CmdTreeConnect:
		return treeConnect(s, h, pkt), nil
	case h.command == CmdTreeDisconnect:
		return treeDisconnect(s, h, body), nil
	case h.command == CmdIoctl:
		return st.ioctl(s, h, pkt), nil
	default:
		return reply{status: statusNotSupported, sessionID: h.sessionID, treeID: h.treeID}, nil
	}
}

// lookup verifies the session of a request (MS-SMB2 3.3.5.2.9). A session
// whose setup is in progress serves only LOGOFF; the spec leaves the status
// for the other commands to the implementation, and this one answers
// STATUS_ACCESS_DENIED.
func (st *state) lookup(id uint64, cmd uint16) (*session, uint32) {
	s := st.sess
	if s == nil || s.id != id {
		return nil, statusUserSessionDeleted
	}
	if !s.valid && cmd != CmdLogoff {
		return nil, statusAccessDenied
	}
	return s, statusSuccess
}

// fixedStatus checks the fixed part of a request body: at least minLen
// bytes, starting with the StructureSize size.
func fixedStatus(body []byte, size uint16, minLen int) uint32 {
	if len(body) < minLen || u16(body) != size {
		return statusInvalidParameter
	}
	return statusSuccess
}

// smallBody is the 4-byte body of ECHO, LOGOFF and TREE_DISCONNECT
// responses: StructureSize 4 and Reserved.
func smallBody() []byte {
	b := make([]byte, 4)
	put16(b, 4)
	return b
}

// echo answers ECHO (MS-SMB2 3.3.5.17). It needs no session: Samba and
// ksmbd answer an ECHO with SessionId 0 too.
func echo(h header, body []byte) reply {
	r := reply{status: fixedStatus(body, 4, 4), sessionID: h.sessionID}
	if r.status == statusSuccess {
		r.body = smallBody()
	}
	return r
}

// logoff answers LOGOFF (MS-SMB2 3.3.5.6): the session and its trees go.
func (st *state) logoff(h header, body []byte) reply {
	r := reply{status: fixedStatus(body, 4, 4), sessionID: h.sessionID}
	if r.status == statusSuccess {
		st.sess = nil
		r.body = smallBody()
	}
	return r
}

// treeDisconnect answers TREE_DISCONNECT (MS-SMB2 3.3.5.8).
func treeDisconnect(s *session, h header, body []byte) reply {
	r := reply{status: fixedStatus(body, 4, 4), sessionID: h.sessionID, treeID: h.treeID}
	if r.status != statusSuccess {
		return r
	}
	if _, ok := s.trees[h.treeID]; !ok {
		r.status = statusNetworkNameDeleted
		return r
	}
	delete(s.trees, h.treeID)
	r.body = smallBody()
	return r
}

// negotiate answers NEGOTIATE (MS-SMB2 3.3.5.4) with the highest 2.x dialect
// the client offers. A second NEGOTIATE on a connection is a protocol error
// (MS-SMB2 3.3.5.3.1).
func (st *state) negotiate(body []byte, now time.Time) (reply, error) {
	if st.dialect != 0 {
		return reply{}, protocolErrorf("second NEGOTIATE on the connection")
	}
	const fixed = 36
	if fixedStatus(body, fixed, fixed) != statusSuccess {
		return reply{status: statusInvalidParameter}, nil
	}
	count := int(u16(body[2:]))
	if count == 0 || fixed+2*count > len(body) {
		return reply{status: statusInvalidParameter}, nil
	}
	var dialect uint16
	for i := range count {
		switch d := u16(body[fixed+2*i:]); {
		case d == dialect210:
			dialect = d
		case d == dialect202 && dialect == 0:
			dialect = d
		}
	}
	if dialect == 0 {
		return reply{status: statusNotSupported}, nil
	}
	st.dialect = dialect
	return reply{body: negotiateBody(dialect, st.srv.guid, now, st.srv.hint)}, nil
}

// negotiateBody is the NEGOTIATE response (MS-SMB2 2.2.4): signing enabled
// but not required, no capabilities (no DFS, leasing, large MTU,
// multichannel or encryption), 64 KiB transfers and the SPNEGO hint.
func negotiateBody(dialect uint16, guid [16]byte, now time.Time, hint []byte) []byte {
	const fixed = 64
	b := make([]byte, fixed+max(len(hint), 1))
	put16(b, 65)
	put16(b[2:], negotiateSigningEnabled)
	put16(b[4:], dialect)
	copy(b[8:24], guid[:])
	put32(b[28:], maxTransactSize)
	put32(b[32:], maxTransactSize)
	put32(b[36:], maxTransactSize)
	put64(b[40:], filetime(now))
	put16(b[56:], headerSize+fixed)
	put16(b[58:], uint16(len(hint))) //nolint:gosec // a few dozen bytes
	copy(b[fixed:], hint)
	return b
}

// sessionSetup runs one leg of SESSION_SETUP (MS-SMB2 3.3.5.5): the first
// (SessionId 0) answers the NTLMSSP NEGOTIATE_MESSAGE with a challenge, the
// second accepts the AUTHENTICATE_MESSAGE. One session per connection; no
// binding, no re-authentication.
func (st *state) sessionSetup(h header, pkt []byte) reply {
	const fixed = 24
	r := reply{sessionID: h.sessionID}
	body := pkt[headerSize:]
	if fixedStatus(body, fixed+1, fixed) != statusSuccess {
		r.status = statusInvalidParameter
		return r
	}
	if body[2]&sessionFlagBinding != 0 {
		r.status = statusRequestNotAccepted
		return r
	}
	blob, ok := bufferAt(pkt, headerSize+fixed, uint32(u16(body[12:])), uint32(u16(body[14:])))
	if !ok || len(blob) == 0 {
		r.status = statusInvalidParameter
		return r
	}
	s := st.sess
	switch {
	case h.sessionID == 0 && (s == nil || !s.valid):
		return st.startSession(blob)
	case h.sessionID == 0:
		r.status = statusRequestNotAccepted
	case s != nil && s.id == h.sessionID && !s.valid:
		return st.finishSession(s, blob)
	case s != nil && s.id == h.sessionID:
		r.status = statusNotSupported // re-authentication
	default:
		r.status = statusUserSessionDeleted
	}
	return r
}

// startSession answers the first leg: a CHALLENGE_MESSAGE, wrapped the way
// the NEGOTIATE_MESSAGE came, and a new SessionId in state InProgress. A
// session still in progress is replaced.
func (st *state) startSession(blob []byte) reply {
	msg, wrapped, ok := unwrapNegotiate(blob)
	var flags uint32
	if ok {
		flags, ok = parseNTLMNegotiate(msg)
	}
	if !ok {
		st.sess = nil
		return reply{status: statusInvalidParameter}
	}
	var challenge [8]byte
	_, _ = rand.Read(challenge[:]) // never fails (crypto/rand, Go ≥ 1.24)
	token := challengeMessage(flags, challenge)
	if wrapped {
		token = negTokenResp(negStateAcceptIncomplete, token)
	}
	s := &session{id: st.srv.nextSessionID.Add(1), wrapped: wrapped, trees: map[uint32]struct{}{}}
	st.sess = s
	return reply{status: statusMoreProcessingRequired, sessionID: s.id, body: sessionSetupBody(0, token)}
}

// finishSession answers the second leg: the session becomes valid, NULL for
// an anonymous logon and guest for any other that Options.Logon accepts. A
// malformed token or a refused logon ends it.
func (st *state) finishSession(s *session, blob []byte) reply {
	msg, ok := unwrapResponse(blob, s.wrapped)
	var anonymous bool
	if ok {
		anonymous, ok = parseNTLMAuthenticate(msg)
	}
	if !ok {
		st.sess = nil
		return reply{status: statusInvalidParameter, sessionID: s.id}
	}
	if logon := st.srv.opts.Logon; !anonymous && logon != nil && !logon(ntlmUser(msg)) {
		st.sess = nil
		return reply{status: statusLogonFailure, sessionID: s.id}
	}
	s.valid = true
	flags := sessionFlagIsGuest
	if anonymous {
		flags = sessionFlagIsNull
	}
	var token []byte
	if s.wrapped {
		token = negTokenResp(negStateAcceptCompleted, nil)
	}
	return reply{sessionID: s.id, body: sessionSetupBody(flags, token)}
}

// sessionSetupBody is the SESSION_SETUP response (MS-SMB2 2.2.6).
func sessionSetupBody(flags uint16, token []byte) []byte {
	const fixed = 8
	b := make([]byte, fixed+max(len(token), 1))
	put16(b, 9)
	put16(b[2:], flags)
	if len(token) > 0 {
		put16(b[4:], headerSize+fixed)
		put16(b[6:], uint16(len(token))) //nolint:gosec // a few hundred bytes at most
	}
	copy(b[fixed:], token)
	return b
}

// treeConnect answers TREE_CONNECT (MS-SMB2 3.3.5.7). Only IPC$ exists.
func treeConnect(s *session, h header, pkt []byte) reply {
	const fixed = 8
	r := reply{sessionID: h.sessionID}
	body := pkt[headerSize:]
	if fixedStatus(body, fixed+1, fixed) != statusSuccess {
		r.status = statusInvalidParameter
		return r
	}
	raw, ok := bufferAt(pkt, headerSize+fixed, uint32(u16(body[4:])), uint32(u16(body[6:])))
	if !ok || len(raw) == 0 || len(raw) > maxPathBytes {
		r.status = statusInvalidParameter
		return r
	}
	path, ok := decodeUTF16LE(raw)
	share, valid := shareName(path)
	switch {
	case !ok || !valid:
		r.status = statusInvalidParameter
	case !strings.EqualFold(share, "IPC$"):
		r.status = statusBadNetworkName
	case len(s.trees) >= maxTreesPerSession:
		r.status = statusInsufficientResources
	default:
		r.treeID = s.newTreeID()
		r.body = treeConnectBody()
	}
	return r
}

// newTreeID returns an unused non-zero TreeId. The loop ends within
// maxTreesPerSession+1 steps, since fewer trees than that exist.
func (s *session) newTreeID() uint32 {
	for {
		s.lastTree++
		if _, used := s.trees[s.lastTree]; s.lastTree != 0 && !used {
			s.trees[s.lastTree] = struct{}{}
			return s.lastTree
		}
	}
}

// shareName returns the share of a `\\server\share` path (a trailing NUL,
// which some clients send, is ignored).
func shareName(path string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSuffix(path, "\x00"), `\\`)
	if !ok {
		return "", false
	}
	server, share, ok := strings.Cut(rest, `\`)
	if !ok || server == "" || share == "" || strings.Contains(share, `\`) {
		return "", false
	}
	return share, true
}

// treeConnectBody is the TREE_CONNECT response (MS-SMB2 2.2.10) for IPC$:
// a pipe share, no caching, no share capabilities, full access.
func treeConnectBody() []byte {
	const (
		shareTypePipe   = 0x02
		shareNoCaching  = 0x00000030
		fileAllAccess   = 0x001F01FF
		structureSize16 = 16
	)
	b := make([]byte, structureSize16)
	put16(b, structureSize16)
	b[2] = shareTypePipe
	put32(b[4:], shareNoCaching)
	put32(b[12:], fileAllAccess)
	return b
}

// ioctl answers IOCTL (MS-SMB2 3.3.5.15) for FSCTL_DFS_GET_REFERRALS on a
// connected tree, through Options.Referral; every other control code is
// STATUS_INVALID_DEVICE_REQUEST, as servers answer for an unknown FSCTL.
func (st *state) ioctl(s *session, h header, pkt []byte) reply {
	const fixed = 56
	r := reply{sessionID: h.sessionID, treeID: h.treeID}
	body := pkt[headerSize:]
	if fixedStatus(body, fixed+1, fixed) != statusSuccess {
		r.status = statusInvalidParameter
		return r
	}
	if _, ok := s.trees[h.treeID]; !ok {
		r.status = statusNetworkNameDeleted
		return r
	}
	ctl, flags := u32(body[4:]), u32(body[48:])
	if ctl != fsctlDfsGetReferrals || flags&ioctlIsFsctl == 0 || st.srv.opts.Referral == nil {
		r.status = statusInvalidDeviceRequest
		return r
	}
	in, ok := bufferAt(pkt, headerSize+fixed, u32(body[24:]), u32(body[28:]))
	if !ok || len(in) < 4 || len(in) > maxPathBytes {
		r.status = statusInvalidParameter
		return r
	}
	path, ok := decodeUTF16LE(in[2:])
	if !ok || !strings.HasSuffix(path, "\x00") {
		r.status = statusInvalidParameter
		return r
	}
	out, status := st.srv.opts.Referral(strings.TrimSuffix(path, "\x00"))
	if status != statusSuccess {
		r.status = status
		return r
	}
	if maxOut := u32(body[44:]); uint64(len(out)) > uint64(maxOut) {
		r.status = statusInvalidParameter // a real server would answer BUFFER_OVERFLOW with a partial answer
		return r
	}
	// IOCTL response (MS-SMB2 2.2.32): StructureSize 49, the control code,
	// FileId, no input, the output right after the fixed part.
	const respFixed = 48
	b := make([]byte, respFixed+len(out))
	put16(b, respFixed+1)
	put32(b[4:], ctl)
	copy(b[8:24], body[8:24])
	put32(b[32:], headerSize+respFixed)
	put32(b[36:], uint32(len(out))) //nolint:gosec // bounded by maxOut
	copy(b[respFixed:], out)
	r.body = b
	return r
}
