package smbresponder

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// creditWindow tracks the MessageIds a client may use (MS-SMB2 3.3.1.1,
// 3.3.5.2.3). MessageIds must increase, as they do from every client that
// numbers one connection from one counter; that is stricter than Windows,
// which takes any unused id inside the window.
type creditWindow struct {
	next     uint64 // lowest MessageId the client may still use
	high     uint64 // first MessageId not granted yet
	inFlight int    // requests consumed but not answered yet
}

// newCreditWindow grants MessageId 0, for the first NEGOTIATE.
func newCreditWindow() creditWindow { return creditWindow{high: 1} }

// consume takes the ids of one request, CreditCharge of them from id on (a
// CreditCharge of 0, as 2.0.2 sends, counts as 1). It reports false when they
// are not all inside the window.
func (w *creditWindow) consume(id uint64, charge uint16) bool {
	n := uint64(max(charge, 1))
	if id < w.next || id > w.high || n > w.high-id {
		return false
	}
	w.next = id + n
	w.inFlight++
	return true
}

// grant settles one answered request and returns the credits to grant with
// its answer: what the client asked for, at least one, and no more than keeps
// the credits it holds plus its requests in flight within maxCredits. So
// inFlight never exceeds maxCredits, and the grant is never zero (MS-SMB2
// 3.3.1.2: a client must not be left without credits).
func (w *creditWindow) grant(requested uint16) uint16 {
	w.inFlight--
	held := int(w.high - w.next) //nolint:gosec // at most maxCredits
	g := min(int(max(requested, 1)), maxCredits-held-w.inFlight)
	w.high += uint64(g) //nolint:gosec // g ≥ 1, see above
	return uint16(g)    //nolint:gosec // g ≤ maxCredits
}

// answer is one queued response.
type answer struct {
	cmd           uint16
	creditRequest uint16
	frame         []byte    // CreditResponse is filled in when it is sent
	due           time.Time // valid once timed: when Delay has passed
	timed         bool
}

// conn serves one connection. All fields belong to the goroutine running
// serve.
type conn struct {
	srv   *Server
	nc    net.Conn
	st    state
	win   creditWindow
	queue []answer // answers in request order; at most maxCredits
	timer *time.Timer
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{srv: s, nc: nc, st: state{srv: s}, win: newCreditWindow()}
}

// readLoop hands every frame read from r to frames until a read fails or
// done is closed.
func readLoop(r io.Reader, frames chan<- []byte, done <-chan struct{}) error {
	var lenBuf [4]byte
	for {
		f, err := readFrame(r, &lenBuf)
		if err != nil {
			return err
		}
		select {
		case frames <- f:
		case <-done:
			return nil
		}
	}
}

// serve handles frames as they arrive and sends the queued answers when
// their Delay has passed and the server is not frozen, until the reader
// fails, a request forces the connection closed, a write fails or ctx ends.
func (c *conn) serve(ctx context.Context, frames <-chan []byte, readErr <-chan error) error {
	defer func() {
		if c.timer != nil {
			c.timer.Stop()
		}
	}()
	for {
		wake, thaw, err := c.flush()
		if err != nil {
			return err
		}
		select {
		case f := <-frames:
			if err := c.handleFrame(f); err != nil {
				return err
			}
		case err := <-readErr:
			return err
		case <-wake:
		case <-thaw:
		case <-ctx.Done():
			return ctx.Err() //nolint:wrapcheck // classified by ServeConn
		}
	}
}

// flush sends the answers at the head of the queue that may go now, in
// order. It returns what to wait for before the next one may: its Delay
// timer, or the server's thaw channel.
func (c *conn) flush() (<-chan time.Time, <-chan struct{}, error) {
	for len(c.queue) > 0 {
		a := &c.queue[0]
		if !a.timed {
			a.due = time.Now().Add(c.srv.delay(a.cmd))
			a.timed = true
		}
		if thaw := c.srv.frozen(); thaw != nil {
			return nil, thaw, nil
		}
		if d := time.Until(a.due); d > 0 {
			if c.timer == nil {
				c.timer = time.NewTimer(d)
			} else {
				c.timer.Reset(d)
			}
			return c.timer.C, nil, nil
		}
		if err := c.send(a); err != nil {
			return nil, nil, err
		}
		c.queue[0] = answer{}
		c.queue = c.queue[1:]
	}
	return nil, nil, nil
}

// send grants credits to a and writes it. It is counted first, so a client
// that got the answer always sees it in Server.Requests.
func (c *conn) send(a *answer) error {
	put16(a.frame[creditResponseOffset:], c.win.grant(a.creditRequest))
	c.srv.count(a.cmd)
	if _, err := c.nc.Write(a.frame); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// handleFrame handles the SMB2 messages of one frame: one request, or a
// compound chain (MS-SMB2 3.3.5.2.7) whose requests are handled one by one
// and answered separately. Related compounds, which only file operations
// use, are not tracked: every request stands on its own header.
func (c *conn) handleFrame(frame []byte) error {
	switch string(frame[:4]) { // readFrame returns at least headerSize bytes
	case protocolID:
	case protocolIDSMB1:
		return protocolErrorf("SMB1 is not supported")
	case protocolIDXform:
		return protocolErrorf("encrypted message, but encryption was never negotiated")
	default:
		return protocolErrorf("bad protocol id %x", frame[:4])
	}
	// Each pass consumes at least headerSize bytes, so the loop is bounded.
	for pkt := frame; ; {
		h, err := parseHeader(pkt)
		if err != nil {
			return err
		}
		msg := pkt
		if n := h.nextCommand; n != 0 {
			if n < headerSize || n%8 != 0 || uint64(n) >= uint64(len(pkt)) {
				return protocolErrorf("NextCommand %d in a %d-byte message", n, len(pkt))
			}
			msg, pkt = pkt[:n], pkt[n:]
		}
		if err := c.handleRequest(h, msg); err != nil {
			return err
		}
		if h.nextCommand == 0 {
			return nil
		}
	}
}

// handleRequest checks one request against the connection state and the
// credit window (MS-SMB2 3.3.5.2), runs it and queues the answer.
func (c *conn) handleRequest(h header, msg []byte) error {
	if c.st.dialect == 0 && h.command != CmdNegotiate {
		return protocolErrorf("command %#04x before NEGOTIATE", h.command)
	}
	if h.command == cmdCancel {
		// CANCEL takes no credit and gets no answer (MS-SMB2 3.3.5.16);
		// nothing here is asynchronous, so there is nothing to cancel.
		return nil
	}
	if !c.win.consume(h.messageID, h.creditCharge) {
		return protocolErrorf("MessageId %d (CreditCharge %d) outside the window [%d, %d)",
			h.messageID, h.creditCharge, c.win.next, c.win.high)
	}
	r, err := c.st.dispatch(h, msg, time.Now())
	if err != nil {
		return err
	}
	if len(c.queue) >= maxCredits { // unreachable: inFlight ≤ maxCredits
		return protocolErrorf("more than %d requests in flight", maxCredits)
	}
	c.queue = append(c.queue, answer{cmd: h.command, creditRequest: h.creditRequest, frame: encodeAnswer(h, r)})
	return nil
}
