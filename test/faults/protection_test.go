//go:build integration

package faults

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestServerThatRequiresEncryption: Samba 4.17 with `smb encrypt =
// required` drops the connection on the first unencrypted request after
// the session setup, ECHO included (measured: EOF). With AES-GCM (what
// Samba chooses from go-smb2's offer) the driver encrypts its own requests
// with the session's keys: ECHO, the referral IOCTL, and the watch's
// CREATE, CHANGE_NOTIFY, CANCEL and CLOSE; the prober finds the server
// healthy and sees a kill and a freeze. With AES-CCM only, the probe
// session keeps go-smb2's session and ECHOs through it, and the driver's
// own requests say smb.ErrEncrypted.
func TestServerThatRequiresEncryption(t *testing.T) {
	t.Run("gcm", func(t *testing.T) {
		ctx, ps := protectedSession(t, "smb encrypt = required\n")
		addr, d := victimIP+":445", smb.ProbeDialer{}
		if sec := ps.Security(); !sec.SessionEncrypted() || sec.Cipher() != 2 {
			t.Fatalf("the session is not encrypted with AES-128-GCM: %+v", sec)
		}
		echoes(t, ctx, ps)
		rctx, c := context.WithTimeout(ctx, 2*time.Second)
		_, err := ps.Referral(rctx, `\`+victimIP+`\share`)
		c()
		if !errors.Is(err, dfs.ErrNotDFS) {
			t.Fatalf("referral on an encrypted session: %v, want ErrNotDFS (an encrypted request the server answered)", err)
		}
		watchAndCancel(t, ctx, d, addr)

		// The whole prober: healthy and steady, and a kill and a freeze
		// seen through the encrypted session.
		w := startWatch(t, addr, realDialer())
		w.waitFor(t, addr, health.StateHealthy, time.Now(), 15*time.Second)
		time.Sleep(5 * time.Second)
		if n := w.count(health.StateDegraded, "") + w.count(health.StateUnreachable, ""); n != 0 {
			t.Fatalf("%d degraded or unreachable verdicts on a healthy encrypted server", n)
		}
		for _, f := range []struct{ name, breakIt, heal string }{{"killed", lab.ActKill, lab.ActStart}, {"frozen", lab.ActStop, lab.ActCont}} {
			start := time.Now()
			fault(t, f.breakIt, victim)
			detect := w.waitFor(t, addr, health.StateUnreachable, start, 30*time.Second)
			start = time.Now()
			fault(t, f.heal, victim)
			back := w.waitFor(t, addr, health.StateHealthy, start, 30*time.Second)
			fmt.Printf("RESULT encrypted server %s: unreachable after %v, healthy %v after it returned\n", f.name, detect.Round(time.Millisecond), back.Round(time.Millisecond))
			if detect > 4*time.Second {
				t.Errorf("%s encrypted server seen after %v", f.name, detect)
			}
		}
	})
	t.Run("ccm", func(t *testing.T) {
		ctx, ps := protectedSession(t, "smb encrypt = required\nserver smb3 encryption algorithms = AES-128-CCM\n")
		if sec := ps.Security(); !sec.SessionEncrypted() || sec.Cipher() != 1 {
			t.Fatalf("the session is not encrypted with AES-128-CCM: %+v", sec)
		}
		echoes(t, ctx, ps)
		if _, err := ps.Referral(ctx, `\`+victimIP+`\share`); !errors.Is(err, smb.ErrEncrypted) {
			t.Fatalf("referral with AES-CCM: %v, want ErrEncrypted", err)
		}
		if _, err := (smb.ProbeDialer{}).DialTree(ctx, victimIP+":445", "share", labCreds); !errors.Is(err, smb.ErrEncrypted) {
			t.Fatalf("watch connection with AES-CCM: %v, want ErrEncrypted", err)
		}
	})
}

// echoes sends five ECHOs on ps, each answered within 2 s.
func echoes(t *testing.T, ctx context.Context, ps *smb.ProbeSession) {
	t.Helper()
	for i := range 5 {
		ectx, c := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		err := ps.Echo(ectx)
		c()
		if err != nil {
			t.Fatalf("echo %d on the encrypted session: %v", i, err)
		}
		fmt.Printf("RESULT %s: echo %d answered in %v\n", t.Name(), i, time.Since(start).Round(10*time.Microsecond))
		if err := ps.Idle(ctx, time.Now().Add(100*time.Millisecond)); err != nil {
			t.Fatalf("idle: %v", err)
		}
	}
}

// watchAndCancel opens the share root on a watch connection, cancels a
// notify and closes the open: the requests a directory watch sends.
func watchAndCancel(t *testing.T, ctx context.Context, d smb.ProbeDialer, addr string) {
	t.Helper()
	c, err := d.DialTree(ctx, addr, "share", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fid, err := c.OpenDir(ctx, "")
	if err != nil {
		t.Fatalf("open the share root: %v", err)
	}
	nctx, ncancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Notify(nctx, fid, wire.MaxNotifyOutput)
	ncancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled notify: %v", err)
	}
	if err := c.CloseFile(ctx, fid); err != nil {
		t.Fatalf("close after a cancel: %v", err)
	}
	select {
	case <-c.Done():
		t.Fatal("the connection ended after the cancel")
	default:
	}
}

// TestServerThatRequiresSigning: Samba 4.17 with `server signing =
// mandatory` answers the driver's own requests on a session go-smb2 set up:
// the ECHO, the referral IOCTL, and the watch's CREATE, CHANGE_NOTIFY,
// CANCEL and CLOSE.
func TestServerThatRequiresSigning(t *testing.T) {
	ctx, ps := protectedSession(t, "server signing = mandatory\n")
	addr, d := victimIP+":445", smb.ProbeDialer{}
	if sec := ps.Security(); !sec.SessionSigned() {
		t.Fatalf("the session is not signed: %+v", sec)
	}
	if err := ps.Echo(ctx); err != nil {
		t.Fatalf("echo: %v", err)
	}
	_, err := ps.Referral(ctx, `\`+victimIP+`\share`)
	fmt.Printf("RESULT signing required: referral for a plain share: %v\n", err)
	if !errors.Is(err, dfs.ErrNotDFS) {
		t.Errorf("referral: %v, want ErrNotDFS (a signed request the server answered)", err)
	}
	watchAndCancel(t, ctx, d, addr)
}

// protectedSession restarts the victim with conf and sets up a probe
// session to it as the lab user; both end with the test.
func protectedSession(t *testing.T, conf string) (context.Context, *smb.ProbeSession) {
	t.Helper()
	withServerConf(t, conf)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	ps, err := smb.ProbeDialer{}.DialProbe(ctx, victimIP+":445", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	return ctx, ps
}
