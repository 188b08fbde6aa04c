package smb

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// notifyServer is a scripted server for TreeConn: it answers CREATE and
// CLOSE at once, parks CHANGE_NOTIFY behind an interim answer until the
// test fires it, and answers CANCEL with STATUS_CANCELLED unless deaf.
type notifyServer struct {
	conn    net.Conn
	grant   uint16 // credits granted per answer
	deaf    bool   // ignore CANCEL: a frozen server
	parked  chan parked
	cancels chan uint64
}

type parked struct {
	id, async     uint64
	flags, filter uint32 // of the request: SMB2_WATCH_TREE, the completion filter
}

func newNotifyServer(t *testing.T, grant uint16) (*TreeConn, *notifyServer) {
	t.Helper()
	cli, srvConn := net.Pipe()
	s := &notifyServer{conn: srvConn, grant: grant, parked: make(chan parked, 16), cancels: make(chan uint64, 16)}
	go s.serve()
	c := startTreeConn(handedOver{conn: cli, session: 9, tree: 3, next: 10, credits: 2})
	t.Cleanup(func() { _ = c.Close(); _ = srvConn.Close() })
	return c, s
}

func (s *notifyServer) serve() {
	rd := bufio.NewReader(s.conn)
	for {
		msg, err := wire.ReadFrame(rd, nil)
		if err != nil {
			return
		}
		h, _ := wire.ParseHeader(msg)
		switch h.Command {
		case wire.CmdCreate:
			name := msg[wire.HeaderSize+56:]
			status := uint32(wire.StatusSuccess)
			if len(name) > 1 && name[0] == 'x' { // the directory "x" does not exist
				status = wire.StatusNameNotFound
			}
			body := make([]byte, 88)
			binary.LittleEndian.PutUint16(body, 89)
			body[64] = 0x42 // FileId
			s.reply(h.MessageID, 0, status, body)
		case wire.CmdClose:
			body := make([]byte, 60)
			binary.LittleEndian.PutUint16(body, 60)
			s.reply(h.MessageID, 0, wire.StatusSuccess, body)
		case wire.CmdChangeNotify:
			async := h.MessageID + 1000
			s.reply(h.MessageID, async, wire.StatusPending, make([]byte, 9))
			b := msg[wire.HeaderSize:]
			s.parked <- parked{h.MessageID, async, uint32(binary.LittleEndian.Uint16(b[2:])), binary.LittleEndian.Uint32(b[24:])}
		case wire.CmdCancel:
			s.cancels <- h.AsyncID
			if !s.deaf {
				s.reply(h.MessageID, h.AsyncID, wire.StatusCancelled, make([]byte, 9))
			}
		}
	}
}

// fire completes a parked notify with events (or with status).
func (s *notifyServer) fire(p parked, status uint32, events ...wire.NotifyEvent) {
	out := wire.EncodeNotifyInformation(events)
	body := make([]byte, 8+len(out))
	binary.LittleEndian.PutUint16(body, 9)
	binary.LittleEndian.PutUint16(body[2:], wire.HeaderSize+8)
	binary.LittleEndian.PutUint32(body[4:], uint32(len(out))) //nolint:gosec // test sizes
	copy(body[8:], out)
	s.reply(p.id, p.async, status, body)
}

func (s *notifyServer) reply(id, async uint64, status uint32, body []byte) {
	m := make([]byte, 4+wire.HeaderSize+len(body))
	binary.BigEndian.PutUint32(m, uint32(wire.HeaderSize+len(body))) //nolint:gosec // test sizes
	h := m[4:]
	copy(h, []byte{0xFE, 'S', 'M', 'B', 64})
	binary.LittleEndian.PutUint32(h[8:], status)
	binary.LittleEndian.PutUint16(h[14:], s.grant)
	flags := uint32(wire.FlagResponse)
	if async != 0 {
		flags |= wire.FlagAsync
		binary.LittleEndian.PutUint64(h[32:], async)
	}
	binary.LittleEndian.PutUint32(h[16:], flags)
	binary.LittleEndian.PutUint64(h[24:], id)
	copy(m[4+wire.HeaderSize:], body)
	_, _ = s.conn.Write(m)
}

func TestTreeConnNotify(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newNotifyServer(t, 1)
		ctx := context.Background()
		if _, err := c.OpenDir(ctx, "x"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("missing directory: %v", err)
		}
		fid, err := c.OpenDir(ctx, "base")
		if err != nil || fid[0] != 0x42 {
			t.Fatalf("open: %v %v", fid, err)
		}
		got := make(chan []wire.NotifyEvent, 1)
		go func() {
			ev, err := c.Notify(ctx, fid, 4096)
			if err != nil {
				t.Error(err)
			}
			got <- ev
		}()
		p := <-s.parked
		synctest.Wait() // the notify waits, with no deadline
		select {
		case <-got:
			t.Fatal("notify answered before any change")
		default:
		}
		want := []wire.NotifyEvent{{Action: wire.ActionRenamedOldName, Name: "pvc-1"}, {Action: wire.ActionRenamedNewName, Name: "pvc-1.old"}}
		s.fire(p, wire.StatusSuccess, want...)
		if ev := <-got; !reflect.DeepEqual(ev, want) {
			t.Fatalf("events %+v", ev)
		}
		go func() { p := <-s.parked; s.fire(p, wire.StatusNotifyEnumDir) }()
		if _, err := c.Notify(ctx, fid, 4096); !errors.Is(err, ErrNotifyOverflow) {
			t.Fatalf("overflow: %v", err)
		}
		go func() { p := <-s.parked; s.fire(p, wire.StatusDeletePending) }()
		if _, err := c.Notify(ctx, fid, 4096); !errors.Is(err, ErrWatchedDirGone) {
			t.Fatalf("directory deleted: %v", err)
		}
		if err := c.CloseFile(ctx, fid); err != nil {
			t.Fatal(err)
		}
	})
}

// TestTreeConnNotifyChanges: the filter and the subtree flag reach the
// server, and another open and close are answered beside a pending notify.
func TestTreeConnNotifyChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newNotifyServer(t, 1)
		ctx := context.Background()
		fid, err := c.OpenDir(ctx, "base")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			_, err := c.NotifyChanges(ctx, fid, 4096, wire.NotifyFileName|wire.NotifyLastWrite, true)
			got <- err
		}()
		p := <-s.parked
		if p.flags != 1 || p.filter != wire.NotifyFileName|wire.NotifyLastWrite {
			t.Errorf("request flags %#x filter %#x, want 1 (SMB2_WATCH_TREE) and %#x", p.flags, p.filter, wire.NotifyFileName|wire.NotifyLastWrite)
		}
		again, err := c.OpenDir(ctx, "base")
		if err != nil {
			t.Fatalf("open beside a pending notify: %v", err)
		}
		if err := c.CloseFile(ctx, again); err != nil {
			t.Fatal(err)
		}
		s.fire(p, wire.StatusSuccess, wire.NotifyEvent{Action: wire.ActionModified, Name: "a/b"})
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		go func() { p := <-s.parked; s.fire(p, wire.StatusSuccess) }()
		if _, err := c.Notify(ctx, fid, 4096); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTreeConnNotifyCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newNotifyServer(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := c.Notify(ctx, wire.FileID{}, 4096); errc <- err }()
		p := <-s.parked
		time.Sleep(time.Hour)
		cancel()
		if a := <-s.cancels; a != p.async {
			t.Fatalf("CANCEL names async %d, want %d", a, p.async)
		}
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled notify: %v", err)
		}
		// The connection is still good.
		if _, err := c.OpenDir(context.Background(), "base"); err != nil {
			t.Fatalf("after a cancel: %v", err)
		}
	})
}

func TestTreeConnUnansweredCancelDropsTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newNotifyServer(t, 1)
		s.deaf = true
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := c.Notify(ctx, wire.FileID{}, 4096); errc <- err }()
		<-s.parked
		start := time.Now()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || time.Since(start) != cancelWait {
			t.Fatalf("notify: %v after %v, want cancelled after %v", err, time.Since(start), cancelWait)
		}
		<-c.Done()
		if _, err := c.OpenDir(context.Background(), "base"); !errors.Is(err, ErrConnClosed) {
			t.Fatalf("after the drop: %v", err)
		}
	})
}

func TestTreeConnDeadConnectionEndsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := newNotifyServer(t, 1)
		errc := make(chan error, 1)
		go func() { _, err := c.Notify(context.Background(), wire.FileID{}, 4096); errc <- err }()
		<-s.parked
		_ = s.conn.Close() // the server is killed: RST
		if err := <-errc; !errors.Is(err, ErrConnClosed) {
			t.Fatalf("notify on a killed connection: %v", err)
		}
	})
}

func TestTreeConnCredits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newNotifyServer(t, 0) // a server that grants nothing
		ctx := context.Background()
		for range 2 { // the two credits go-smb2 left
			if _, err := c.OpenDir(ctx, "base"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.OpenDir(ctx, "base"); !errors.Is(err, ErrNoCredits) {
			t.Fatalf("third request with no credit: %v", err)
		}
	})
}
