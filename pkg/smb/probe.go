package smb

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	smb2 "github.com/cloudsoda/go-smb2"
	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// ProbeDialer opens the health prober's sessions. go-smb2 does the
// security-sensitive part (NEGOTIATE, SESSION_SETUP with NTLM, a tree
// connect to IPC$, which keeps Samba from closing an idle connection after
// 60 s); then the session takes the socket over and sends its 72-byte ECHOs
// itself. That saves go-smb2's two goroutines per connection and their
// hand-offs on every ECHO: what makes a thousand probed servers cheap.
type ProbeDialer struct {
	// Dial opens the TCP connection; default net.Dialer.DialContext, with
	// Mark on the socket.
	Dial DialFunc
	// Mark, when non-zero, is set as SO_MARK on the default dialer's
	// sockets: the DFS fence lets marked sockets through, so the prober
	// keeps watching a fenced target. Setting it needs CAP_NET_ADMIN.
	Mark uint32
}

// ProbeSession is one probe connection, used by one goroutine at a time.
type ProbeSession struct {
	conn    net.Conn
	rd      *bufio.Reader
	next    uint64 // next MessageId
	buf     []byte
	session uint64 // SessionId and TreeId of the IPC$ tree go-smb2 connected
	tree    uint32
	sec     Security
	// gs is go-smb2's session, kept when the server encrypts it with a
	// cipher the driver does not implement (AES-CCM): then ECHOs go
	// through go-smb2, and broken closes when its connection fails.
	gs     *smb2.Session
	broken <-chan struct{}
	prot   protection // signs or encrypts what the session sends, as the server requires
}

// DialProbe sets up a probe session to addr (host:port) with creds; when the
// server refuses them it tries an anonymous session, which Samba allows by
// default. Every step is bounded by ctx.
func (d ProbeDialer) DialProbe(ctx context.Context, addr string, creds auth.Credentials) (*ProbeSession, error) {
	s, err := d.DialWith(ctx, addr, creds)
	if err != nil && errors.Is(err, ErrAuth) && creds.Username != "" {
		s, err = d.DialWith(ctx, addr, auth.Credentials{})
	}
	return s, err
}

// DialWith sets up a probe session to addr with creds and nothing else: a
// server that refuses them is ErrAuth, not retried anonymously (what a
// diagnosis must tell apart). Every step is bounded by ctx.
func (d ProbeDialer) DialWith(ctx context.Context, addr string, creds auth.Credentials) (*ProbeSession, error) {
	t, err := d.dialTree(ctx, addr, "IPC$", creds)
	if err != nil {
		return nil, err
	}
	return &ProbeSession{conn: t.conn, rd: bufio.NewReaderSize(t.conn, 512), next: t.next, buf: make([]byte, 0, 128),
		session: t.session, tree: t.tree, sec: t.sec, gs: t.gs, broken: t.broken, prot: t.prot}, nil
}

// Security is what the server said during the session's setup about its
// dialect, signing and encryption.
func (s *ProbeSession) Security() Security { return s.sec }

// handedOver is a connection go-smb2 set up and let go of: a session and a
// tree connect, and where its message IDs and credits stand.
type handedOver struct {
	conn    net.Conn
	session uint64
	tree    uint32
	next    uint64
	credits int
	sec     Security
	// gs is set instead of a hand-over when the server encrypts the
	// session with AES-CCM: go-smb2 keeps the connection.
	gs     *smb2.Session
	broken <-chan struct{}
	// prot signs or encrypts the requests sent on the session, as the
	// server requires.
	prot protection
}

// encryptedSession reports whether the server encrypts the session or the
// tree: the session or the share said so, or an answer during the setup
// came encrypted.
func (s Security) encryptedSession() bool {
	return s.SessionEncrypted() || s.Encrypted > 0 || (s.TreeDone && s.Tree.ShareFlags&wire.ShareFlagEncrypt != 0)
}

// dialTree connects to addr, logs on with creds and connects to the share
// tree (IPC$ or a disk share) with go-smb2, then takes the socket over.
func (d ProbeDialer) dialTree(ctx context.Context, addr, tree string, creds auth.Credentials) (handedOver, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return handedOver{}, fmt.Errorf("probe address %q: %w", addr, err)
	}
	raw, err := d.dialFunc()(ctx, "tcp", addr)
	if err != nil {
		return handedOver{}, classify("connect to "+addr, err)
	}
	hc := &handoverConn{Conn: raw, released: make(chan struct{}), broken: make(chan struct{}), credits: 1}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	ntlm := &smb2.NTLMInitiator{User: creds.Username, Password: creds.Password, Domain: creds.Domain}
	dialer := &smb2.Dialer{Initiator: ntlm}
	sess, err := dialer.DialConn(ctx, hc, host)
	var prot protection
	if err == nil {
		// The hash is complete once the session is set up: the tree
		// connect that follows is not part of it.
		hc.mu.Lock()
		sec, hash, session := hc.sec, hc.preauth.h, hc.setupSession
		hc.mu.Unlock()
		if sec.SessionSigned() {
			prot.sign, err = newSigner(sec.Negotiate.Dialect, ntlm.SessionKey(), hash)
		}
		if err == nil && !sec.Guest() && !sec.Anonymous() {
			// Ready in case the session or the share turns out encrypted:
			// the tree connect's answer is then read through it.
			prot.seal, err = newSealer(sec.Negotiate.Dialect, sec.Cipher(), ntlm.SessionKey(), hash, session)
			hc.mu.Lock()
			hc.seal = prot.seal
			hc.mu.Unlock()
		}
	}
	if err == nil {
		_, err = sess.WithContext(ctx).Mount(`\\` + host + `\` + tree)
	}
	encrypted := false
	if err == nil {
		hc.mu.Lock()
		encrypted = hc.sec.encryptedSession()
		hc.mu.Unlock()
	}
	if !encrypted {
		prot.seal = nil
	}
	if err == nil && (!encrypted || prot.seal != nil) {
		err = hc.handOver(ctx)
	}
	if err != nil {
		_ = raw.Close()
		err = classify(fmt.Sprintf("session to %s (tree %s) as %s", addr, tree, creds), err)
		// The TCP connect succeeded. The socket deadline (set to ctx's) can
		// fire a hair before ctx itself reports it, and go-smb2 reports
		// that as a transport error: a setup that ran out of time is a
		// timeout either way.
		if dl, ok := ctx.Deadline(); ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || (ok && !time.Now().Before(dl)) {
			err = fmt.Errorf("%w: %w: %w", ErrSilent, context.DeadlineExceeded, err)
		}
		return handedOver{}, err
	}
	_ = raw.SetDeadline(time.Time{})
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if encrypted && prot.seal == nil { // a cipher the driver does not implement: go-smb2 keeps the session
		return handedOver{conn: raw, sec: hc.sec, gs: sess, broken: hc.broken}, nil
	}
	return handedOver{conn: raw, session: hc.session, tree: hc.tree, next: hc.next, credits: hc.credits, sec: hc.sec, prot: prot}, nil
}

// Echo sends one SMB2 ECHO and waits for its answer until ctx ends. Any
// well-formed answer proves liveness, whatever its status (some NAS
// firmware answers STATUS_USER_SESSION_DELETED).
func (s *ProbeSession) Echo(ctx context.Context) error {
	if s.gs != nil {
		if err := s.gs.WithContext(ctx).Echo(); err != nil {
			return ioErr(ctx, err)
		}
		return nil
	}
	dl, _ := ctx.Deadline()
	_ = s.conn.SetDeadline(dl)
	defer interruptOn(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })()
	id := s.next
	s.next++
	req := wire.EchoRequest(id)
	if s.prot.seal != nil {
		binary.LittleEndian.PutUint64(req[4+40:], s.session) // an encrypted request names its session
	}
	req, err := s.prot.outgoing(req)
	if err != nil {
		return err
	}
	if _, err := s.conn.Write(req); err != nil {
		return ioErr(ctx, err)
	}
	for range 16 {
		msg, err := wire.ReadFrame(s.rd, s.buf)
		if err != nil {
			return ioErr(ctx, err)
		}
		s.buf = msg[:0]
		if msg, err = s.prot.incoming(msg); err != nil {
			return err
		}
		h, err := wire.ParseHeader(msg)
		if err != nil {
			return err
		}
		if !h.Response() || h.Unsolicited() || h.Interim() || h.MessageID != id {
			continue // an oplock break or a stale answer: not ours
		}
		if h.Command != wire.CmdEcho {
			return fmt.Errorf("%w: answer to ECHO %d is command %#x", wire.ErrMalformed, id, h.Command)
		}
		return nil
	}
	return fmt.Errorf("%w: no answer to ECHO %d among 16 messages", wire.ErrMalformed, id)
}

// Idle waits until deadline, returning nil then (or earlier if data
// arrived), and an error as soon as the connection fails: a killed server
// is seen at once, without a goroutine reading in the background.
func (s *ProbeSession) Idle(ctx context.Context, deadline time.Time) error {
	if s.gs != nil { // go-smb2 reads the socket: it says when it fails
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-s.broken:
			return classify("probe connection", io.EOF)
		}
	}
	_ = s.conn.SetReadDeadline(deadline)
	defer interruptOn(ctx, func() { _ = s.conn.SetReadDeadline(time.Unix(1, 0)) })()
	_, err := s.rd.Peek(1)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	}
	return classify("probe connection", err)
}

// Close drops the connection at once. A probe connection that timed out is
// never reused, and a polite LOGOFF would need the dead server to answer.
func (s *ProbeSession) Close() error {
	if err := s.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close probe connection: %w", err)
	}
	return nil
}

// interruptOn runs interrupt when ctx ends, until the returned stop is
// called. stop waits for an interrupt that has started, so a past deadline
// set for this call can never land on the next one (which would then fail
// at once).
func interruptOn(ctx context.Context, interrupt func()) (stop func()) {
	done := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() { defer close(done); interrupt() })
	return func() {
		if !cancel() {
			<-done
		}
	}
}

// ioErr reports a timeout as the context's error, so callers tell a
// deadline from a refusal with errors.Is(err, context.DeadlineExceeded).
func ioErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// handoverConn lets go-smb2 set the session up, remembers the message IDs
// it used, and then takes the connection back from it.
type handoverConn struct {
	net.Conn
	mu      sync.Mutex
	frames  frameScanner // what go-smb2 read, split into messages
	session uint64       // from the TREE_CONNECT answer
	tree    uint32
	sec     Security // from the NEGOTIATE, SESSION_SETUP and TREE_CONNECT answers
	preauth preauth  // the 3.1.1 preauthentication hash of the setup, for signing
	// setupSession is the SessionId of the SESSION_SETUP answers; seal,
	// once set, decrypts the encrypted messages that follow.
	setupSession uint64
	seal         *sealer
	next         uint64
	credits      int // granted minus charged, as far as go-smb2 went
	taken        atomic.Bool
	released     chan struct{} // closed when go-smb2's receiver has let go
	once         sync.Once
	broken       chan struct{} // closed when a read fails before any hand-over
	breakOne     sync.Once
}

// Write passes go-smb2's writes on and records the next message ID.
// go-smb2 writes the 4-byte transport prefix and the message separately.
func (c *handoverConn) Write(b []byte) (int, error) {
	if c.taken.Load() {
		return 0, net.ErrClosed
	}
	c.mu.Lock()
	msg := b
	if wire.IsTransform(b) && c.seal != nil { // go-smb2 encrypted it: read the header inside
		if plain, err := c.seal.openOwn(b); err == nil {
			msg = plain
		}
	}
	if h, err := wire.ParseHeader(msg); err == nil && !h.Response() {
		c.next = max(c.next, h.MessageID+uint64(max(h.CreditCharge, 1)))
		c.credits -= int(max(h.CreditCharge, 1))
		c.preauth.request(h, msg)
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// Read passes reads on until the hand-over; then it fails, which ends
// go-smb2's receiver (and with it its sender).
func (c *handoverConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.taken.Load() {
		c.once.Do(func() { close(c.released) })
		return 0, net.ErrClosed
	}
	c.scan(b[:n])
	if err != nil {
		c.breakOne.Do(func() { close(c.broken) })
	}
	return n, err
}

// scan follows the frames go-smb2 reads to learn the SessionId and TreeId
// of its IPC$ tree connect (go-smb2 does not export them). The buffer is
// bounded: a frame too large for it is skipped unread.
func (c *handoverConn) scan(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames.feed(b, func(msg []byte) {
		c.sec.observe(msg)
		if wire.IsTransform(msg) && c.seal != nil {
			plain, err := c.seal.open(msg)
			if err != nil {
				return
			}
			msg = plain
			c.sec.observe(msg)
		}
		if h, err := wire.ParseHeader(msg); err == nil && h.Response() {
			if h.Command == wire.CmdSessionSetup {
				c.setupSession = h.SessionID
			}
			c.preauth.answer(h, msg)
			c.credits += int(h.CreditResponse)
			if h.Command == wire.CmdTreeConnect && h.Status == wire.StatusSuccess {
				c.session, c.tree = h.SessionID, h.TreeID
			}
		}
	})
}

// handOver stops go-smb2 from reading: it wakes its blocked read with a
// past deadline and waits until the read has returned.
func (c *handoverConn) handOver(ctx context.Context) error {
	c.taken.Store(true)
	_ = c.SetReadDeadline(time.Unix(1, 0))
	select {
	case <-c.released:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// markSocket sets SO_MARK on a socket before it connects.
func markSocket(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("SO_MARK %#x: %w", mark, serr)
		}
		return nil
	}
}
