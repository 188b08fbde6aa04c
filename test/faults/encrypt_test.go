//go:build integration

package faults

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestServerThatRequiresEncryption: Samba 4.17 with `smb encrypt =
// required` drops the connection on the first unencrypted request after
// the session setup, ECHO included (measured: EOF). The probe session
// therefore keeps go-smb2's encrypted session and ECHOs through it: the
// prober finds the server healthy, and a kill is still seen. What the
// driver sends itself (referrals, CHANGE_NOTIFY) is not sent, with
// smb.ErrEncrypted, and the watch says it is unsupported, not lost.
func TestServerThatRequiresEncryption(t *testing.T) {
	withServerConf(t, "smb encrypt = required\n")
	addr := victimIP + ":445"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := smb.ProbeDialer{}
	ps, err := d.DialProbe(ctx, addr, labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ps.Close() }()
	if sec := ps.Security(); !sec.SessionEncrypted() {
		t.Fatalf("the session is not encrypted: %+v", sec)
	}
	for i := range 5 {
		ectx, c := context.WithTimeout(ctx, 2*time.Second)
		start := time.Now()
		err := ps.Echo(ectx)
		c()
		if err != nil {
			t.Fatalf("echo %d on the encrypted session: %v", i, err)
		}
		fmt.Printf("RESULT encrypted server: echo %d answered in %v\n", i, time.Since(start).Round(10*time.Microsecond))
		if err := ps.Idle(ctx, time.Now().Add(100*time.Millisecond)); err != nil {
			t.Fatalf("idle: %v", err)
		}
	}
	rctx, c := context.WithTimeout(ctx, 2*time.Second)
	_, err = ps.Referral(rctx, `\`+victimIP+`\share`)
	c()
	if !errors.Is(err, smb.ErrEncrypted) {
		t.Fatalf("referral on an encrypted session: %v, want ErrEncrypted", err)
	}
	if _, err := d.DialTree(ctx, addr, "share", labCreds); !errors.Is(err, smb.ErrEncrypted) {
		t.Fatalf("watch connection: %v, want ErrEncrypted", err)
	}

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
}
