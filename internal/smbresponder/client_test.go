package smbresponder

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	smb2 "github.com/cloudsoda/go-smb2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ipc = `\\10.0.0.1\IPC$`

// servePipe serves one end of a net.Pipe and returns the other; wait returns
// ServeConn's result.
func servePipe(ctx context.Context, s *Server) (client net.Conn, wait func() error) {
	client, server := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- s.ServeConn(ctx, server) }()
	return client, func() error { return <-errc }
}

// dial opens an SMB session on nc the way the health prober does.
func dial(ctx context.Context, nc net.Conn, init *smb2.NTLMInitiator) (*smb2.Session, error) {
	d := &smb2.Dialer{Initiator: init}
	return d.DialConn(ctx, nc, "10.0.0.1")
}

// TestClientPipe runs the real client's whole probe sequence in a bubble.
func TestClientPipe(t *testing.T) {
	for _, tc := range []struct {
		name string
		init *smb2.NTLMInitiator
	}{
		{"anonymous", &smb2.NTLMInitiator{}},
		{"guest", &smb2.NTLMInitiator{User: "alice", Password: "secret", Domain: "LAB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				srv := New(Options{})
				nc, wait := servePipe(ctx, srv)
				sess, err := dial(ctx, nc, tc.init)
				if err != nil {
					t.Fatalf("DialConn: %v", err)
				}
				tree, err := sess.WithContext(ctx).Mount(ipc)
				if err != nil {
					t.Fatalf("Mount: %v", err)
				}
				for i := range 100 {
					if err := sess.WithContext(ctx).Echo(); err != nil {
						t.Fatalf("Echo %d: %v", i, err)
					}
				}
				if err := tree.WithContext(ctx).Umount(); err != nil {
					t.Fatalf("Umount: %v", err)
				}
				if err := sess.WithContext(ctx).Logoff(); err != nil {
					t.Fatalf("Logoff: %v", err)
				}
				if err := wait(); err != nil {
					t.Fatalf("ServeConn: %v", err)
				}
				want := map[uint16]int64{
					CmdNegotiate: 1, CmdSessionSetup: 2, CmdTreeConnect: 1,
					CmdEcho: 100, CmdTreeDisconnect: 1, CmdLogoff: 1,
				}
				for cmd, n := range want {
					if got := srv.Requests(cmd); got != n {
						t.Errorf("Requests(%#x) = %d, want %d", cmd, got, n)
					}
				}
			})
		})
	}
}

func TestMountUnknownShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		nc, wait := servePipe(ctx, New(Options{}))
		sess, err := dial(ctx, nc, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn: %v", err)
		}
		_, err = sess.WithContext(ctx).Mount(`\\10.0.0.1\data`)
		var re *smb2.ResponseError
		if !errors.As(err, &re) || re.Code != statusBadNetworkName {
			t.Errorf("Mount data: %v, want STATUS_BAD_NETWORK_NAME", err)
		}
		_ = sess.WithContext(ctx).Logoff()
		if err := wait(); err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
}

// TestServeTCP runs concurrent clients over loopback TCP, then shuts down
// with sessions still open.
func TestServeTCP(t *testing.T) {
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{})
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()

	const clients, echoes = 20, 10
	var wg sync.WaitGroup
	idle := make(chan *smb2.Session, clients)
	for i := range clients {
		wg.Go(func() {
			dctx, dcancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer dcancel()
			nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", l.Addr().String())
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			sess, err := dial(dctx, nc, &smb2.NTLMInitiator{})
			if err != nil {
				_ = nc.Close()
				t.Errorf("DialConn: %v", err)
				return
			}
			if _, err := sess.WithContext(dctx).Mount(ipc); err != nil {
				t.Errorf("Mount: %v", err)
			}
			for range echoes {
				if err := sess.WithContext(dctx).Echo(); err != nil {
					t.Errorf("Echo: %v", err)
				}
			}
			if i%2 == 0 {
				if err := sess.WithContext(dctx).Logoff(); err != nil {
					t.Errorf("Logoff: %v", err)
				}
				return
			}
			idle <- sess // left open: Serve must close it on shutdown
		})
	}
	wg.Wait()
	close(idle)
	if got := srv.Requests(CmdEcho); got != clients*echoes {
		t.Errorf("Requests(ECHO) = %d, want %d", got, clients*echoes)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	for sess := range idle {
		ectx, ecancel := context.WithTimeout(t.Context(), 10*time.Second)
		if err := sess.WithContext(ectx).Echo(); err == nil {
			t.Error("Echo after shutdown succeeded")
		}
		_ = sess.WithContext(ectx).Logoff() // closes the client's connection
		ecancel()
	}
}

func TestFreeze(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		srv := New(Options{})
		nc1, wait1 := servePipe(ctx, srv)
		old, err := dial(ctx, nc1, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn: %v", err)
		}

		srv.Freeze()
		srv.Freeze() // idempotent
		ectx, ecancel := context.WithTimeout(ctx, 200*time.Millisecond)
		start := time.Now()
		err = old.WithContext(ectx).Echo()
		ecancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 200*time.Millisecond {
			t.Fatalf("frozen Echo: %v after %v, want DeadlineExceeded after 200ms", err, time.Since(start))
		}
		// A new connection is read but not answered either.
		nc2, wait2 := servePipe(ctx, srv)
		dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		if _, err := dial(dctx, nc2, &smb2.NTLMInitiator{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("frozen DialConn: %v, want DeadlineExceeded", err)
		}
		dcancel()
		_ = nc2.Close()
		if err := wait2(); err != nil {
			t.Errorf("ServeConn 2: %v", err)
		}
		if got := srv.Requests(CmdEcho); got != 0 {
			t.Errorf("Requests(ECHO) while frozen = %d, want 0", got)
		}

		srv.Thaw()
		srv.Thaw() // idempotent
		synctest.Wait()
		if got := srv.Requests(CmdEcho); got != 1 {
			t.Errorf("Requests(ECHO) after Thaw = %d, want 1 (the held answer)", got)
		}
		nc3, wait3 := servePipe(ctx, srv)
		fresh, err := dial(ctx, nc3, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn after Thaw: %v", err)
		}
		if err := fresh.WithContext(ctx).Echo(); err != nil {
			t.Errorf("Echo after Thaw: %v", err)
		}
		for _, s := range []*smb2.Session{old, fresh} {
			if err := s.WithContext(ctx).Logoff(); err != nil {
				t.Errorf("Logoff: %v", err)
			}
		}
		for _, wait := range []func() error{wait1, wait3} {
			if err := wait(); err != nil {
				t.Errorf("ServeConn: %v", err)
			}
		}
	})
}

func TestCloseAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		srv := New(Options{})
		nc, wait := servePipe(ctx, srv)
		sess, err := dial(ctx, nc, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn: %v", err)
		}
		if err := sess.WithContext(ctx).Echo(); err != nil {
			t.Fatalf("Echo: %v", err)
		}
		srv.CloseAll()
		if err := wait(); err != nil {
			t.Errorf("ServeConn after CloseAll: %v, want nil", err)
		}
		if err := sess.WithContext(ctx).Echo(); err == nil {
			t.Error("Echo after CloseAll succeeded")
		}
		_ = sess.WithContext(ctx).Logoff()

		// The server itself lives on.
		nc2, wait2 := servePipe(ctx, srv)
		sess2, err := dial(ctx, nc2, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn after CloseAll: %v", err)
		}
		_ = sess2.WithContext(ctx).Logoff()
		if err := wait2(); err != nil {
			t.Errorf("ServeConn 2: %v", err)
		}
	})
}

func TestDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		srv := New(Options{Delay: func(cmd uint16) time.Duration {
			if cmd == CmdEcho {
				return 300 * time.Millisecond
			}
			return 0
		}})
		nc, wait := servePipe(ctx, srv)
		start := time.Now()
		sess, err := dial(ctx, nc, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn: %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("DialConn took %v, want 0 (no delay but for ECHO)", d)
		}
		start = time.Now()
		if err := sess.WithContext(ctx).Echo(); err != nil {
			t.Fatalf("Echo: %v", err)
		}
		if d := time.Since(start); d != 300*time.Millisecond {
			t.Errorf("Echo took %v, want exactly 300ms", d)
		}
		_ = sess.WithContext(ctx).Logoff()
		if err := wait(); err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
}

// TestDelayRespectsContext: a held answer does not keep ServeConn alive
// once its context ends.
func TestDelayRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := New(Options{Delay: func(cmd uint16) time.Duration {
			if cmd == CmdEcho {
				return time.Hour
			}
			return 0
		}})
		ctx, cancel := context.WithCancel(t.Context())
		nc, wait := servePipe(ctx, srv)
		sess, err := dial(t.Context(), nc, &smb2.NTLMInitiator{})
		if err != nil {
			t.Fatalf("DialConn: %v", err)
		}
		ectx, ecancel := context.WithTimeout(t.Context(), time.Second)
		defer ecancel()
		if err := sess.WithContext(ectx).Echo(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Echo: %v, want DeadlineExceeded", err)
		}
		start := time.Now()
		cancel()
		if err := wait(); err != nil {
			t.Errorf("ServeConn: %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("ServeConn returned %v after cancel, want at once", d)
		}
		_ = sess.WithContext(t.Context()).Logoff()
	})
}

// TestLogonRefused: Options.Logon refuses a user as a wrong password would
// (STATUS_LOGON_FAILURE), and sees the user the client sent; anonymous
// logons are not asked about.
func TestLogonRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		var asked []string
		srv := New(Options{Logon: func(user string) bool { asked = append(asked, user); return user == "alice" }})
		for _, tc := range []struct {
			init *smb2.NTLMInitiator
			ok   bool
		}{
			{&smb2.NTLMInitiator{User: "mallory", Password: "x"}, false},
			{&smb2.NTLMInitiator{User: "alice", Password: "anything"}, true},
			{&smb2.NTLMInitiator{}, true},
		} {
			nc, wait := servePipe(ctx, srv)
			sess, err := dial(ctx, nc, tc.init)
			var re *smb2.ResponseError
			switch {
			case tc.ok && err != nil:
				t.Fatalf("%s: %v", tc.init.User, err)
			case !tc.ok && (!errors.As(err, &re) || re.Code != statusLogonFailure):
				t.Fatalf("%s: %v, want STATUS_LOGON_FAILURE", tc.init.User, err)
			case tc.ok:
				_ = sess.WithContext(ctx).Logoff()
			}
			_ = nc.Close()
			_ = wait()
		}
		if len(asked) != 2 || asked[0] != "mallory" || asked[1] != "alice" {
			t.Fatalf("Logon asked about %q", asked)
		}
	})
}
