package smb

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// TestProbeSessionSecurity: what the responder (SMB 2.1, signing enabled
// but not required, guest for a user and null for an anonymous logon, IPC$
// a pipe share) says during setup reaches the session's Security.
func TestProbeSessionSecurity(t *testing.T) {
	for _, tc := range []struct {
		name      string
		creds     auth.Credentials
		guest     bool
		anonymous bool
	}{
		{"user", auth.Credentials{Username: "u", Password: "p"}, true, false},
		{"anonymous", auth.Credentials{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := pipeDialer(ctx, smbresponder.New(smbresponder.Options{})).DialWith(ctx, "10.0.0.1:445", tc.creds)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				sec := s.Security()
				if !sec.Negotiated || sec.Negotiate.Dialect != 0x0210 || sec.Negotiate.SecurityMode != wire.SigningEnabled || sec.SigningRequired() {
					t.Fatalf("negotiate %+v", sec)
				}
				if !sec.SessionDone || sec.Guest() != tc.guest || sec.Anonymous() != tc.anonymous || sec.SessionSigned() || sec.SessionEncrypted() {
					t.Fatalf("session %+v", sec)
				}
				if !sec.TreeDone || sec.Tree.ShareType != wire.ShareTypePipe || sec.Answers != 4 || sec.Signed != 0 || sec.Encrypted != 0 {
					t.Fatalf("tree and counts %+v", sec)
				}
			})
		})
	}
}

// TestStatShare: the responder serves only IPC$, so a data share is
// ErrShareNotFound, and what the server said before is still reported.
func TestStatShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := pipeDialer(ctx, smbresponder.New(smbresponder.Options{}))
		st, err := d.StatShare(ctx, "10.0.0.1:445", "data", "dir", auth.Credentials{})
		if !errors.Is(err, ErrShareNotFound) || st.Info != nil || !st.Security.Negotiated || !st.Security.SessionDone || st.Security.TreeDone {
			t.Fatalf("StatShare of a missing share: %+v, %v", st, err)
		}
		if _, err := d.StatShare(ctx, "10.0.0.1:445", "IPC$", "", auth.Credentials{}); err == nil {
			t.Fatal("stat on IPC$ (CREATE not supported by the responder) succeeded")
		}
		if _, err := d.StatShare(ctx, "no-port", "data", "", auth.Credentials{}); err == nil {
			t.Fatal("an address without a port was accepted")
		}
	})
}

func TestFrameScanner(t *testing.T) {
	frame := wire.EchoRequest(3)
	var got int
	var f frameScanner
	count := func([]byte) { got++ }
	for _, b := range frame { // one byte at a time
		f.feed([]byte{b}, count)
	}
	f.feed(append(append([]byte(nil), frame...), frame[:10]...), count)
	f.feed(frame[10:], count)
	if got != 3 || f.rx != nil {
		t.Fatalf("%d messages, %d bytes left; want 3 and none", got, len(f.rx))
	}
	f.feed([]byte{0x00, 0xFF, 0xFF, 0xFF}, count) // 16 MiB: not a probe frame
	f.feed(frame, count)
	if got != 3 || !f.stopped {
		t.Fatalf("after an oversized frame: %d messages, stopped %v", got, f.stopped)
	}
}
