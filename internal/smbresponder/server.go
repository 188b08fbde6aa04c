// Package smbresponder is a minimal in-process SMB2 server for tests: enough
// of SMB 2.1 for a client to negotiate, open an anonymous (or guest) session,
// connect to IPC$, send ECHOs, disconnect the tree and log off. It can delay
// answers, freeze (read requests, answer none: a SIGSTOPped smbd) and drop
// every connection (a killed smbd).
//
// What it answers, and why:
//   - NEGOTIATE: dialect 2.1 (0x0210), or 2.0.2 if that is all the client
//     offers. The 2.x dialects need no negotiate contexts, preauthentication
//     hash or encryption. Signing is enabled but not required, and no
//     capabilities are advertised.
//   - SESSION_SETUP: NTLMSSP, raw or in SPNEGO, in two legs. An anonymous
//     logon gets SMB2_SESSION_FLAG_IS_NULL, any other SMB2_SESSION_FLAG_IS_GUEST
//     (passwords are not checked; Options.Logon may refuse a user). With
//     either flag a client neither signs nor verifies signatures, so no
//     session key is needed.
//   - TREE_CONNECT: only \\<any server>\IPC$; TREE_DISCONNECT, LOGOFF, ECHO.
//   - Everything else: STATUS_NOT_SUPPORTED.
//
// Requests are checked the way a strict server checks them: every length
// and offset is bounds-checked, frames are capped at maxFrameSize before
// anything is allocated, and MessageIds must stay inside the granted credit
// window. A malformed body gets an error status; anything that leaves the
// connection in an unknown state (bad framing or header, a MessageId
// outside the window, SMB1, a second NEGOTIATE) closes it.
package smbresponder

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configure a Server.
type Options struct {
	// Delay, when non-nil, is waited before answering each request; cmd is
	// the SMB2 command code (CmdEcho, ...). The wait uses timers, so inside
	// a testing/synctest bubble it takes no wall time, and it ends early
	// when the connection does. Answers on one connection leave in request
	// order, each after its own delay, counted from when it reached the head
	// of the connection's queue: on arrival, or when the answer before it
	// left. Delay may be called from many goroutines at once.
	Delay func(cmd uint16) time.Duration
	// Referral, when non-nil, answers FSCTL_DFS_GET_REFERRALS on IPC$: the
	// RESP_GET_DFS_REFERRAL bytes for the requested path, or an NTSTATUS
	// (non-zero) to fail with. Without it the FSCTL is not supported.
	Referral func(path string) (resp []byte, status uint32)
	// Logon, when non-nil, decides whether a logon as user (not an
	// anonymous one) is accepted; a refused one is answered
	// STATUS_LOGON_FAILURE, as a wrong password is. Passwords are never
	// checked. Without it every logon is accepted.
	Logon func(user string) bool
}

// Server answers SMB2 clients. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	guid [16]byte // ServerGuid
	hint []byte   // SPNEGO NegTokenInit sent in every NEGOTIATE response

	nextSessionID atomic.Uint64
	thaw          atomic.Pointer[chan struct{}] // non-nil while frozen; closed by Thaw

	mu       sync.Mutex
	conns    map[*liveConn]struct{}
	answered map[uint16]int64
}

// liveConn is a connection being served, for CloseAll.
type liveConn struct {
	nc     net.Conn
	killed atomic.Bool // closed by CloseAll
}

// New builds a Server. It starts nothing.
func New(o Options) *Server {
	s := &Server{
		opts:     o,
		hint:     negTokenInitHint(),
		conns:    map[*liveConn]struct{}{},
		answered: map[uint16]int64{},
	}
	_, _ = rand.Read(s.guid[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return s
}

// Serve accepts connections from l and serves each in its own goroutine
// until ctx ends or Accept fails. It then closes l and every connection, and
// returns after all its goroutines have exited: nil when ctx ended, else the
// Accept error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		<-ctx.Done()
		_ = l.Close()
	})
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("smbresponder: accept: %w", err)
		}
		wg.Go(func() { _ = s.ServeConn(ctx, nc) })
	}
}

// ServeConn serves one connection until the peer closes it, it breaks the
// protocol, a read or write fails, CloseAll closes it or ctx ends. It closes
// nc before returning and leaves no goroutine behind. It returns nil for the
// peer closing, CloseAll and ctx; otherwise the error, wrapping ErrProtocol
// when the peer broke the protocol.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	lc := s.track(nc)
	defer s.untrack(lc)

	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		_ = nc.Close()
	})
	frames := make(chan []byte)
	readErr := make(chan error, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { readErr <- readLoop(nc, frames, done) })

	err := newConn(s, nc).serve(ctx, frames, readErr)

	close(done)
	_ = nc.Close()
	wg.Wait()
	if !stop() {
		<-closed
	}
	switch {
	case err == nil, ctx.Err() != nil, lc.killed.Load(), peerClosed(err):
		return nil
	default:
		return fmt.Errorf("smbresponder: serving %v: %w", nc.RemoteAddr(), err)
	}
}

// peerClosed reports whether err means the peer closed or reset the
// connection (at a frame boundary, for reads).
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// Freeze stops answering on every connection, current and future, until
// Thaw; requests are still read, so the peer's writes never block, and their
// answers are held. It models a SIGSTOPped smbd: TCP alive, no answers.
// Freezing a frozen server does nothing. In a testing/synctest bubble, call
// Freeze from the bubble whose connections it should hold (the channel they
// wait on belongs to the caller's bubble).
func (s *Server) Freeze() {
	ch := make(chan struct{})
	s.thaw.CompareAndSwap(nil, &ch)
}

// Thaw resumes answering; the answers held while frozen are sent first, in
// order. Thawing a server that is not frozen does nothing.
func (s *Server) Thaw() {
	if ch := s.thaw.Swap(nil); ch != nil {
		close(*ch)
	}
}

// frozen returns a channel closed by the next Thaw while the server is
// frozen, and nil otherwise.
func (s *Server) frozen() <-chan struct{} {
	if ch := s.thaw.Load(); ch != nil {
		return *ch
	}
	return nil
}

// CloseAll closes every live connection now, as a killed smbd would. Serve
// keeps accepting new ones.
func (s *Server) CloseAll() {
	s.mu.Lock()
	victims := make([]*liveConn, 0, len(s.conns))
	for lc := range s.conns {
		victims = append(victims, lc)
	}
	s.mu.Unlock()
	for _, lc := range victims {
		lc.killed.Store(true)
		_ = lc.nc.Close()
	}
}

// Requests returns how many requests with command code cmd were answered
// (whatever the status) on all connections so far. Answers still held by
// Delay or Freeze are not counted yet.
func (s *Server) Requests(cmd uint16) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answered[cmd]
}

func (s *Server) count(cmd uint16) {
	s.mu.Lock()
	s.answered[cmd]++
	s.mu.Unlock()
}

func (s *Server) delay(cmd uint16) time.Duration {
	if s.opts.Delay == nil {
		return 0
	}
	return max(s.opts.Delay(cmd), 0)
}

func (s *Server) track(nc net.Conn) *liveConn {
	lc := &liveConn{nc: nc}
	s.mu.Lock()
	s.conns[lc] = struct{}{}
	s.mu.Unlock()
	return lc
}

func (s *Server) untrack(lc *liveConn) {
	s.mu.Lock()
	delete(s.conns, lc)
	s.mu.Unlock()
}
