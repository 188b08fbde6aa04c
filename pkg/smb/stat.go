package smb

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"sync"
	"time"

	smb2 "github.com/cloudsoda/go-smb2"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// ShareStat is what StatShare saw: the entry at the path, and what the
// server said while the connection was set up (Security.Tree is the
// share's TREE_CONNECT answer: its type, DFS and encryption flags).
type ShareStat struct {
	Info     fs.FileInfo
	Security Security
}

// StatShare stats path (slash-separated, relative to the share root; ""
// is the root) on share of the server at addr (host:port), over a
// connection of its own set up with exactly creds (no anonymous retry),
// and closes it. Every step is bounded by ctx. What the server said about
// the connection is returned even when a later step fails. A missing path
// is os.ErrNotExist, a missing share ErrShareNotFound, refused credentials
// ErrAuth.
func (d ProbeDialer) StatShare(ctx context.Context, addr, share, path string, creds auth.Credentials) (ShareStat, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ShareStat{}, fmt.Errorf("stat address %q: %w", addr, err)
	}
	raw, err := d.dialFunc()(ctx, "tcp", addr)
	if err != nil {
		return ShareStat{}, classify("connect to "+addr, err)
	}
	defer func() { _ = raw.Close() }() // ends go-smb2's goroutines; no LOGOFF round trip
	oc := &observedConn{Conn: raw}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl) // go-smb2 bounds its calls by ctx, not the socket
	}
	dialer := &smb2.Dialer{Initiator: &smb2.NTLMInitiator{User: creds.Username, Password: creds.Password, Domain: creds.Domain}}
	sess, err := dialer.DialConn(ctx, oc, host)
	if err != nil {
		return ShareStat{Security: oc.security()}, classify(fmt.Sprintf("logon to %s as %s", addr, creds), err)
	}
	sh, err := sess.WithContext(ctx).Mount(`\\` + host + `\` + share)
	if err != nil {
		return ShareStat{Security: oc.security()}, classify(fmt.Sprintf(`tree connect to \\%s\%s`, host, share), err)
	}
	sec := oc.security() // the setup's answers, not the stat's
	fi, err := sh.WithContext(ctx).Stat(path)
	if err != nil {
		return ShareStat{Security: sec}, classify(fmt.Sprintf(`stat %q on \\%s\%s`, path, host, share), err)
	}
	return ShareStat{Info: fi, Security: sec}, nil
}

// dialFunc is Dial, or a net.Dialer with Mark on its sockets.
func (d ProbeDialer) dialFunc() DialFunc {
	if d.Dial != nil {
		return d.Dial
	}
	nd := &net.Dialer{KeepAlive: 15 * time.Second}
	if d.Mark != 0 {
		nd.Control = markSocket(d.Mark)
	}
	return nd.DialContext
}

// observedConn decodes what the server says during setup (Security) from
// the frames go-smb2 reads through it.
type observedConn struct {
	net.Conn
	mu     sync.Mutex
	frames frameScanner
	sec    Security
}

func (c *observedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.frames.feed(b[:n], c.sec.observe)
	c.mu.Unlock()
	return n, err
}

func (c *observedConn) security() Security {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sec
}
