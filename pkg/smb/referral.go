package smb

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// maxReferralBytes bounds a referral answer: hundreds of targets fit.
const maxReferralBytes = 16 << 10

// What servers without DFS answer FSCTL_DFS_GET_REFERRALS with.
const (
	statusInvalidDeviceRequest = 0xC0000010
	statusNotSupported         = 0xC00000BB
	statusFSDriverRequired     = 0xC000019C
)

// Referral asks the server for the DFS referral of path (\server\share\...)
// with FSCTL_DFS_GET_REFERRALS on the session's IPC$ tree (MS-DFSC 3.1.4.1,
// at most level 4). A server that knows no DFS namespace at path answers
// STATUS_NOT_FOUND: dfs.ErrNotDFS.
func (s *ProbeSession) Referral(ctx context.Context, path string) (dfs.Response, error) {
	if s.gs != nil {
		return dfs.Response{}, fmt.Errorf("referral for %s: %w", path, ErrEncrypted)
	}
	if s.tree == 0 {
		return dfs.Response{}, fmt.Errorf("referral for %s: the session has no IPC$ tree", path)
	}
	in, err := dfs.EncodeRequest(4, path)
	if err != nil {
		return dfs.Response{}, err
	}
	id := s.next
	s.next++
	req, err := wire.IoctlRequest(id, s.session, s.tree, dfs.FsctlGetReferrals, in, maxReferralBytes)
	if err != nil {
		return dfs.Response{}, err
	}
	dl, _ := ctx.Deadline()
	_ = s.conn.SetDeadline(dl)
	defer interruptOn(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })()
	if req, err = s.prot.outgoing(req); err != nil {
		return dfs.Response{}, err
	}
	if _, err := s.conn.Write(req); err != nil {
		return dfs.Response{}, ioErr(ctx, err)
	}
	for range 16 {
		msg, err := wire.ReadFrame(s.rd, nil)
		if err != nil {
			return dfs.Response{}, ioErr(ctx, err)
		}
		if msg, err = s.prot.incoming(msg); err != nil {
			return dfs.Response{}, err
		}
		h, err := wire.ParseHeader(msg)
		if err != nil {
			return dfs.Response{}, err
		}
		if !h.Response() || h.Unsolicited() || h.Interim() || h.MessageID != id {
			continue
		}
		switch {
		case h.Command != wire.CmdIoctl:
			return dfs.Response{}, fmt.Errorf("%w: answer to IOCTL %d is command %#x", wire.ErrMalformed, id, h.Command)
		case h.Status == wire.StatusNotFound:
			return dfs.Response{}, fmt.Errorf("%w: %s (the server has no namespace there)", dfs.ErrNotDFS, path)
		case h.Status == statusInvalidDeviceRequest, h.Status == statusNotSupported, h.Status == statusFSDriverRequired:
			return dfs.Response{}, fmt.Errorf("%w: %s (the server does not serve DFS: status %#08x)", dfs.ErrNotDFS, path, h.Status)
		case h.Status != wire.StatusSuccess:
			return dfs.Response{}, fmt.Errorf("referral for %s: status %#08x", path, h.Status)
		}
		out, err := wire.IoctlOutput(msg)
		if err != nil {
			return dfs.Response{}, err
		}
		return dfs.ParseResponse(out)
	}
	return dfs.Response{}, fmt.Errorf("%w: no answer to IOCTL %d among 16 messages", wire.ErrMalformed, id)
}

// Referrer fetches referrals over a short-lived session to the server the
// path names (its first component), with the credentials the context
// carries (WithCredentials), else Creds, else the last ones seen for that
// server, and, if the server refuses them, anonymously. Referrals are
// cached (pkg/dfs), so a connection per fetch costs little.
type Referrer struct {
	Dialer ProbeDialer
	Port   string // default "445"
	Creds  func(server string) auth.Credentials
	mu     sync.Mutex
	last   map[string]auth.Credentials // by server, for background refreshes
}

type credsKey struct{}

// WithCredentials returns ctx carrying creds for the referrals fetched
// under it.
func WithCredentials(ctx context.Context, creds auth.Credentials) context.Context {
	return context.WithValue(ctx, credsKey{}, creds)
}

// Fetch is a dfs.Fetch.
func (r *Referrer) Fetch(ctx context.Context, path string) (dfs.Referral, error) {
	server, _, _ := strings.Cut(strings.TrimPrefix(path, `\`), `\`)
	if server == "" {
		return dfs.Referral{}, fmt.Errorf("referral path %q names no server", path)
	}
	port := r.Port
	if port == "" {
		port = "445"
	}
	creds, given := ctx.Value(credsKey{}).(auth.Credentials)
	r.mu.Lock()
	switch {
	case given && creds.Username != "":
		if r.last == nil {
			r.last = map[string]auth.Credentials{}
		}
		r.last[strings.ToLower(server)] = creds
	case r.Creds != nil:
		creds = r.Creds(server)
	default:
		creds = r.last[strings.ToLower(server)]
	}
	r.mu.Unlock()
	s, err := r.Dialer.DialProbe(ctx, net.JoinHostPort(server, port), creds)
	if err != nil {
		return dfs.Referral{}, err
	}
	defer s.Close()
	resp, err := s.Referral(ctx, path)
	if err != nil {
		return dfs.Referral{}, err
	}
	return dfs.ReferralOf(path, resp)
}
