package smb

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
)

// namespace answers referrals as a Samba msdfs root on 10.0.0.1 with the
// link multi -> 10.0.0.2\shareA, 10.0.0.3\shareA does.
func namespace(path string) ([]byte, uint32) {
	const link = `\10.0.0.1\dfs\multi`
	if !strings.HasPrefix(strings.ToLower(path), strings.ToLower(link)) {
		return nil, 0xC0000225 // STATUS_NOT_FOUND
	}
	b, err := dfs.EncodeResponse(dfs.Response{PathConsumed: uint16(2 * len(link)), Flags: dfs.HeaderStorageServers, Entries: []dfs.Entry{
		{Version: 3, TTL: 600, Path: link, AltPath: link, Target: `\10.0.0.2\shareA`},
		{Version: 3, TTL: 600, Path: link, AltPath: link, Target: `\10.0.0.3\shareA`},
	}})
	if err != nil {
		panic(err)
	}
	return b, 0
}

func TestReferrerFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv := smbresponder.New(smbresponder.Options{Referral: namespace})
		r := &Referrer{Dialer: pipeDialer(ctx, srv)}
		ref, err := r.Fetch(ctx, `\10.0.0.1\dfs\multi\pvc-1`)
		if err != nil {
			t.Fatal(err)
		}
		if ref.Path != `\10.0.0.1\dfs\multi` || ref.Root || ref.TTL != 600*time.Second ||
			!slices.Equal(ref.Targets, []string{`\10.0.0.2\shareA`, `\10.0.0.3\shareA`}) {
			t.Fatalf("referral %+v", ref)
		}
		if _, err := r.Fetch(ctx, `\10.0.0.1\share\x`); !errors.Is(err, dfs.ErrNotDFS) {
			t.Fatalf("a path outside the namespace: %v, want ErrNotDFS", err)
		}
		if _, err := (&Referrer{Dialer: pipeDialer(ctx, smbresponder.New(smbresponder.Options{}))}).Fetch(ctx, `\10.0.0.1\dfs\multi`); !errors.Is(err, dfs.ErrNotDFS) {
			t.Fatalf("a server without DFS support: %v, want ErrNotDFS", err)
		}
		if n := srv.Requests(smbresponder.CmdIoctl); n != 2 {
			t.Fatalf("%d IOCTLs answered, want 2", n)
		}
	})
}

// TestReferralOfAFrozenServer: a referral request to a server that stops
// answering ends at the caller's deadline.
func TestReferralOfAFrozenServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := smbresponder.New(smbresponder.Options{Referral: namespace})
		s, err := pipeDialer(ctx, srv).DialProbe(ctx, "10.0.0.1:445", auth.Credentials{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		srv.Freeze()
		defer srv.Thaw()
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		start := time.Now()
		if _, err := s.Referral(rctx, `\10.0.0.1\dfs\multi`); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Fatalf("referral from a frozen server: %v after %v", err, time.Since(start))
		}
	})
}

// TestFrozenServerIsSilent: a server that accepts the connection and never
// answers is ErrSilent (frozen); one whose connect times out is not.
func TestFrozenServerIsSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := smbresponder.New(smbresponder.Options{})
		srv.Freeze()
		defer srv.Thaw()
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		defer dcancel()
		if _, err := pipeDialer(ctx, srv).DialProbe(dctx, "10.0.0.1:445", auth.Credentials{}); !errors.Is(err, ErrSilent) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("frozen server: %v, want ErrSilent and a deadline", err)
		}
		cut := ProbeDialer{Dial: func(ctx context.Context, _, _ string) (net.Conn, error) { <-ctx.Done(); return nil, ctx.Err() }}
		dctx2, dcancel2 := context.WithTimeout(ctx, time.Second)
		defer dcancel2()
		if _, err := cut.DialProbe(dctx2, "10.0.0.1:445", auth.Credentials{}); errors.Is(err, ErrSilent) || err == nil {
			t.Fatalf("cut-off server: %v, want a timeout that is not ErrSilent", err)
		}
	})
}
