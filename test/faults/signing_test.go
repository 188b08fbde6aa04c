//go:build integration

package faults

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// TestServerThatRequiresSigning: Samba 4.17 with `server signing =
// mandatory` answers the driver's own requests on a session go-smb2 set up:
// the ECHO, the referral IOCTL, and the watch's CREATE, CHANGE_NOTIFY,
// CANCEL and CLOSE.
func TestServerThatRequiresSigning(t *testing.T) {
	withServerConf(t, "server signing = mandatory\n")
	addr := victimIP + ":445"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := smb.ProbeDialer{}
	ps, err := d.DialProbe(ctx, addr, labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ps.Close() }()
	if sec := ps.Security(); !sec.SessionSigned() {
		t.Fatalf("the session is not signed: %+v", sec)
	}
	if err := ps.Echo(ctx); err != nil {
		t.Fatalf("echo: %v", err)
	}
	_, err = ps.Referral(ctx, `\`+victimIP+`\share`)
	fmt.Printf("RESULT signing required: referral for a plain share: %v\n", err)
	if !errors.Is(err, dfs.ErrNotDFS) {
		t.Errorf("referral: %v, want ErrNotDFS (a signed request the server answered)", err)
	}
	c, err := d.DialTree(ctx, addr, "share", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fid, err := c.OpenDir(ctx, "")
	fmt.Printf("RESULT signing required: open the share root: %v\n", err)
	if err != nil {
		t.Fatal(err)
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
}
