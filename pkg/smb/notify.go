package smb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// Errors of a directory watch.
var (
	// ErrNotifyOverflow: the server dropped changes (STATUS_NOTIFY_ENUM_DIR);
	// list the directory again.
	ErrNotifyOverflow = errors.New("change notify overflowed: rescan the directory")
	// ErrWatchedDirGone: the watched directory itself was deleted or its
	// handle closed under the watch.
	ErrWatchedDirGone = errors.New("watched directory gone")
	// ErrNoCredits: the server granted no credit for another request.
	ErrNoCredits = errors.New("no SMB2 credits left")
	// ErrConnClosed: the connection ended (closed, reset, or killed after a
	// CANCEL went unanswered).
	ErrConnClosed = errors.New("smb connection closed")
)

const (
	// wantCredits is the balance a TreeConn asks the server to keep: one
	// per pending notify plus room for opens, closes and cancels.
	wantCredits = 64
	// cancelWait bounds the wait for the answer to a CANCEL; past it the
	// connection is dropped, since its credits can no longer be known.
	cancelWait = 2 * time.Second
	// writeTimeout bounds a write to a server that stopped reading.
	writeTimeout = 10 * time.Second
)

// TreeConn is a connection with one tree connect (a disk share) that sends
// its own requests after go-smb2 logged on: directory opens, CHANGE_NOTIFY,
// CANCEL, CLOSE. Many requests can be outstanding (one notify per watched
// directory); one reader goroutine, started by DialTree and ended by Close
// or by the connection's end, hands each answer to its caller.
type TreeConn struct {
	conn    net.Conn
	session uint64
	tree    uint32
	wmu     sync.Mutex // one frame at a time on the socket
	mu      sync.Mutex
	next    uint64
	credits int
	calls   map[uint64]*call
	err     error // why the reader ended
	done    chan struct{}
	prot    protection // signs or encrypts requests, as the server requires
}

type call struct {
	answer chan []byte // the final response, or closed when the connection ends
	async  uint64      // from an interim answer, for CANCEL
}

// DialTree connects to addr, logs on with creds and connects to share, all
// bounded by ctx. The caller closes the TreeConn.
func (d ProbeDialer) DialTree(ctx context.Context, addr, share string, creds auth.Credentials) (*TreeConn, error) {
	h, err := d.dialTree(ctx, addr, share, creds)
	if err != nil {
		return nil, err
	}
	if h.gs != nil {
		_ = h.conn.Close()
		return nil, fmt.Errorf(`watch connection to \%s\%s: %w`, addr, share, ErrEncrypted)
	}
	return startTreeConn(h), nil
}

func startTreeConn(h handedOver) *TreeConn {
	c := &TreeConn{conn: h.conn, session: h.session, tree: h.tree, next: h.next, credits: h.credits,
		prot: h.prot, calls: map[uint64]*call{}, done: make(chan struct{})}
	go c.read()
	return c
}

// read hands answers to their calls until the connection fails.
func (c *TreeConn) read() {
	rd := bufio.NewReaderSize(c.conn, 4096)
	var err error
	for {
		var msg []byte
		if msg, err = wire.ReadFrame(rd, nil); err != nil {
			break
		}
		if msg, err = c.prot.incoming(msg); err != nil {
			break
		}
		var h wire.Header
		if h, err = wire.ParseHeader(msg); err != nil {
			break
		}
		c.mu.Lock()
		c.credits += int(h.CreditResponse)
		cl := c.calls[h.MessageID]
		switch {
		case !h.Response() || h.Unsolicited() || cl == nil:
			// an oplock break, or the late answer to a call given up on
		case h.Interim():
			cl.async = h.AsyncID
		default:
			delete(c.calls, h.MessageID)
			cl.answer <- msg
		}
		c.mu.Unlock()
	}
	_ = c.conn.Close()
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %w", ErrConnClosed, err)
	for id, cl := range c.calls {
		close(cl.answer)
		delete(c.calls, id)
	}
	c.mu.Unlock()
	close(c.done)
}

// Done is closed when the connection has ended.
func (c *TreeConn) Done() <-chan struct{} { return c.done }

// Close drops the connection and waits for its reader.
func (c *TreeConn) Close() error {
	err := c.conn.Close()
	<-c.done
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close smb connection: %w", err)
	}
	return nil
}

type encodeFunc func(messageID uint64, credits uint16) ([]byte, error)

// roundTrip sends one request and waits for its final answer. When ctx
// ends first it sends a CANCEL and waits cancelWait for the cancelled
// answer; if none comes the connection is closed.
func (c *TreeConn) roundTrip(ctx context.Context, encode encodeFunc) (wire.Header, []byte, error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return wire.Header{}, nil, c.err
	}
	if c.credits < 1 {
		c.mu.Unlock()
		return wire.Header{}, nil, ErrNoCredits
	}
	id := c.next
	ask := uint16(max(1, min(wantCredits-c.credits+1, wantCredits))) //nolint:gosec // in [1, wantCredits]
	req, err := encode(id, ask)
	if err != nil {
		c.mu.Unlock()
		return wire.Header{}, nil, err
	}
	c.next++
	c.credits--
	cl := &call{answer: make(chan []byte, 1)}
	c.calls[id] = cl
	c.mu.Unlock()
	if err := c.write(req); err != nil {
		return wire.Header{}, nil, err
	}
	select {
	case msg, ok := <-cl.answer:
		return c.answered(msg, ok)
	case <-ctx.Done():
	}
	c.mu.Lock()
	async := cl.async
	c.mu.Unlock()
	if err := c.write(wire.CancelRequest(id, c.session, async, c.tree)); err == nil {
		t := time.NewTimer(cancelWait)
		defer t.Stop()
		select {
		case msg, ok := <-cl.answer:
			if h, _, err := c.answered(msg, ok); err != nil || h.Status != wire.StatusCancelled {
				return h, msg, err // it completed before the CANCEL arrived
			}
			return wire.Header{}, nil, ctx.Err()
		case <-t.C:
		}
	}
	_ = c.conn.Close()
	return wire.Header{}, nil, ctx.Err()
}

func (c *TreeConn) answered(msg []byte, ok bool) (wire.Header, []byte, error) {
	if !ok {
		<-c.done
		return wire.Header{}, nil, c.err
	}
	h, err := wire.ParseHeader(msg)
	return h, msg, err
}

func (c *TreeConn) write(frame []byte) error {
	frame, err := c.prot.outgoing(frame)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.conn.Write(frame); err != nil {
		_ = c.conn.Close()
		return fmt.Errorf("%w: %w", ErrConnClosed, err)
	}
	return nil
}

// OpenDir opens the directory dir (slash-separated, relative to the share)
// for watching; os.ErrNotExist when it does not exist.
func (c *TreeConn) OpenDir(ctx context.Context, dir string) (wire.FileID, error) {
	h, msg, err := c.roundTrip(ctx, func(id uint64, credits uint16) ([]byte, error) {
		return wire.CreateDirRequest(id, c.session, c.tree, dir, credits)
	})
	if err != nil {
		return wire.FileID{}, fmt.Errorf("open directory %q: %w", dir, err)
	}
	switch h.Status {
	case wire.StatusSuccess:
		return wire.CreateFileID(msg)
	case wire.StatusNameNotFound, wire.StatusPathNotFound:
		return wire.FileID{}, fmt.Errorf("open directory %q: %w", dir, os.ErrNotExist)
	case statusAccessDenied:
		return wire.FileID{}, fmt.Errorf("open directory %q: %w", dir, ErrAccessDenied)
	}
	return wire.FileID{}, fmt.Errorf("open directory %q: status %#08x", dir, h.Status)
}

// Notify waits, with no deadline of its own, until the server reports a
// change of names in the directory fid (at most maxOut bytes of records),
// ctx ends (the request is cancelled), or the connection ends. Changes
// between two calls are kept by the server for the open.
func (c *TreeConn) Notify(ctx context.Context, fid wire.FileID, maxOut uint32) ([]wire.NotifyEvent, error) {
	return c.NotifyChanges(ctx, fid, maxOut, wire.NotifyDirName|wire.NotifyFileName, false)
}

// NotifyChanges is Notify for the changes filter names (wire.Notify*
// bits), in the whole subtree when tree is set.
func (c *TreeConn) NotifyChanges(ctx context.Context, fid wire.FileID, maxOut, filter uint32, tree bool) ([]wire.NotifyEvent, error) {
	h, msg, err := c.roundTrip(ctx, func(id uint64, credits uint16) ([]byte, error) {
		return wire.ChangeNotifyRequest(id, c.session, c.tree, fid, filter, maxOut, tree, credits)
	})
	if err != nil {
		return nil, err
	}
	switch h.Status {
	case wire.StatusSuccess:
	case wire.StatusNotifyEnumDir:
		return nil, ErrNotifyOverflow
	case wire.StatusDeletePending, wire.StatusNotifyCleanup, wire.StatusFileClosed:
		return nil, fmt.Errorf("%w: status %#08x", ErrWatchedDirGone, h.Status)
	default:
		return nil, fmt.Errorf("change notify: status %#08x", h.Status)
	}
	out, err := wire.ChangeNotifyOutput(msg)
	if err != nil {
		return nil, err
	}
	return wire.ParseNotifyInformation(out)
}

// CloseFile closes an open; a failure leaves the handle to the end of the
// session.
func (c *TreeConn) CloseFile(ctx context.Context, fid wire.FileID) error {
	h, _, err := c.roundTrip(ctx, func(id uint64, credits uint16) ([]byte, error) {
		return wire.CloseRequest(id, c.session, c.tree, fid, credits), nil
	})
	if err == nil && h.Status != wire.StatusSuccess {
		err = fmt.Errorf("status %#08x", h.Status)
	}
	if err != nil {
		return fmt.Errorf("close directory handle: %w", err)
	}
	return nil
}
