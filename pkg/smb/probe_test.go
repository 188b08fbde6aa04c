package smb

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeDialer connects to srv over net.Pipe (usable in synctest bubbles).
func pipeDialer(ctx context.Context, srv *smbresponder.Server) ProbeDialer {
	return ProbeDialer{Dial: func(context.Context, string, string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() { _ = srv.ServeConn(ctx, s) }()
		return c, nil
	}}
}

func TestProbeSessionEchoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := smbresponder.New(smbresponder.Options{})
		s, err := pipeDialer(ctx, srv).DialProbe(ctx, "10.0.0.1:445", auth.Credentials{Username: "u", Password: "p"})
		if err != nil {
			t.Fatal(err)
		}
		// go-smb2 has handed the connection over: its goroutines are gone.
		synctest.Wait()
		for i := range 100 {
			ectx, ecancel := context.WithTimeout(ctx, time.Second)
			err := s.Echo(ectx)
			ecancel()
			if err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
		}
		if n := srv.Requests(smbresponder.CmdEcho); n != 100 {
			t.Fatalf("server answered %d ECHOs, want 100", n)
		}
		start := time.Now()
		if err := s.Idle(ctx, time.Now().Add(time.Second)); err != nil || time.Since(start) != time.Second {
			t.Fatalf("idle on a healthy connection: %v after %v, want nil at its deadline", err, time.Since(start))
		}
		ictx, icancel := context.WithCancel(ctx)
		go func() { time.Sleep(100 * time.Millisecond); icancel() }()
		if err := s.Idle(ictx, time.Now().Add(time.Hour)); !errors.Is(err, context.Canceled) || time.Since(start) != 1100*time.Millisecond {
			t.Fatalf("idle cancelled after 100ms: %v at %v", err, time.Since(start))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestProbeSessionFrozenAndKilled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := smbresponder.New(smbresponder.Options{})
		s, err := pipeDialer(ctx, srv).DialProbe(ctx, "10.0.0.1:445", auth.Credentials{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		srv.Freeze()
		ectx, ecancel := context.WithTimeout(ctx, 500*time.Millisecond)
		start := time.Now()
		err = s.Echo(ectx)
		ecancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 500*time.Millisecond {
			t.Fatalf("echo to a frozen server: %v after %v, want DeadlineExceeded at 500ms", err, time.Since(start))
		}
		srv.Thaw()
		// The answer held while frozen arrives now; the next ECHO skips it
		// (its MessageId is not the one asked for) and gets its own.
		ectx, ecancel = context.WithTimeout(ctx, time.Second)
		err = s.Echo(ectx)
		ecancel()
		if err != nil {
			t.Fatalf("echo after the thaw: %v", err)
		}
		go func() { time.Sleep(300 * time.Millisecond); srv.CloseAll() }()
		start = time.Now()
		err = s.Idle(ctx, time.Now().Add(time.Hour))
		if err == nil || time.Since(start) != 300*time.Millisecond {
			t.Fatalf("idle across a killed server: %v after %v, want an error at once (300ms)", err, time.Since(start))
		}
	})
}

func TestHandoverRecordsMessageIDsAndCredits(t *testing.T) {
	c := &handoverConn{Conn: nopConn{}, released: make(chan struct{}), credits: 1}
	for _, id := range []uint64{0, 1, 2, 3} {
		frame := wire.EchoRequest(id)
		if _, err := c.Write(frame[:4]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(frame[4:]); err != nil {
			t.Fatal(err)
		}
	}
	if c.next != 4 || c.credits != -3 {
		t.Fatalf("next message id %d, credits %d, want 4 and -3", c.next, c.credits)
	}
	// Two answers granting 5 credits each, in one read.
	answer := func(id uint64) []byte {
		f := wire.EchoRequest(id)
		f[4+16] = 1 // SMB2_FLAGS_SERVER_TO_REDIR
		f[4+14] = 5 // CreditResponse
		return f
	}
	c.scan(append(answer(0), answer(1)...))
	if c.credits != 7 {
		t.Fatalf("credits %d after two grants of 5, want 7", c.credits)
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Write(b []byte) (int, error) { return len(b), nil }
