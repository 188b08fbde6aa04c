package smb

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	smb2 "github.com/cloudsoda/go-smb2"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// DialFunc opens the TCP connection; tests put proxies in between.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configure a Pool. Zero values get defaults.
type Options struct {
	Dial        DialFunc      // default net.Dialer.DialContext
	IdleTimeout time.Duration // close sessions unused this long; default 5 min
	Port        int           // default 445
	// MaxConns caps the connections per (server, share, credentials); a new
	// one is dialed only when every existing one is busy. Samba serves each
	// connection with one single-threaded smbd, so a few let concurrent
	// CreateVolume calls use more than one server core. Default 4.
	MaxConns int
}

// Pool shares SMB sessions and tree connects per (server, share,
// credentials) between concurrent RPCs: the least busy one, growing up to
// MaxConns under load. A session that fails at the transport level is
// dropped and redialed on next use.
type Pool struct {
	opts    Options
	mu      sync.Mutex
	entries map[poolKey][]*entry
}

type poolKey struct {
	server, share, user, domain string
	password                    [sha256.Size]byte // never the password itself
}

type entry struct {
	ready    chan struct{} // closed when dialing finished
	err      error
	conn     net.Conn
	session  *smb2.Session
	share    *smb2.Share
	refs     int
	lastUsed time.Time
	broken   bool // a transport error was seen: no new users
	evicted  bool // out of the map: the last user closes it
	once     sync.Once
}

// NewPool builds a pool; Run maintains it.
func NewPool(o Options) *Pool {
	if o.Dial == nil {
		d := &net.Dialer{KeepAlive: 15 * time.Second}
		o.Dial = d.DialContext
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.Port == 0 {
		o.Port = 445
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 4
	}
	return &Pool{opts: o, entries: map[poolKey][]*entry{}}
}

// Run closes idle sessions until ctx ends, then closes all of them.
func (p *Pool) Run(ctx context.Context) error {
	t := time.NewTicker(p.opts.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.closeIdle(time.Time{}, true)
			return nil
		case now := <-t.C:
			p.closeIdle(now.Add(-p.opts.IdleTimeout), false)
		}
	}
}

// closeIdle evicts unused entries that are broken, idle since before, or
// all of them; entries in use are evicted too when all is set and closed by
// their last user.
func (p *Pool) closeIdle(before time.Time, all bool) {
	var victims []*entry
	p.mu.Lock()
	for k, es := range p.entries {
		kept := es[:0]
		for _, e := range es {
			if e.dialed() && (all || (e.refs == 0 && (e.broken || e.lastUsed.Before(before)))) {
				e.evicted = true
				if e.refs == 0 {
					victims = append(victims, e)
				}
				continue
			}
			kept = append(kept, e)
		}
		if len(kept) == 0 {
			delete(p.entries, k)
		} else {
			p.entries[k] = kept
		}
	}
	p.mu.Unlock()
	for _, e := range victims {
		e.close()
	}
}

func (e *entry) dialed() bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

// Share returns a handle on \\server\share for creds, dialing if needed.
// Call release when done with it. Every network step is bounded by ctx.
func (p *Pool) Share(ctx context.Context, server, share string, creds auth.Credentials) (*Share, func(), error) {
	key := poolKey{server: server, share: share, user: creds.Username, domain: creds.Domain,
		password: sha256.Sum256([]byte(creds.Password))}
	p.mu.Lock()
	e, fresh, stale := p.pick(key)
	e.refs++
	p.mu.Unlock()
	for _, x := range stale {
		x.close()
	}
	if fresh {
		p.dial(ctx, key, e, creds)
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		p.release(e)
		return nil, nil, classify("connect to "+server, ctx.Err())
	}
	if e.err != nil {
		p.release(e)
		return nil, nil, e.err
	}
	return &Share{pool: p, e: e, reused: !fresh}, func() { p.release(e) }, nil
}

// pick returns the least busy live entry of key, or a new one to dial when
// all are busy and there is room. It drops broken entries; those nobody uses
// are returned to be closed. Called with p.mu held.
func (p *Pool) pick(key poolKey) (e *entry, fresh bool, stale []*entry) {
	var live []*entry
	for _, x := range p.entries[key] {
		if x.broken {
			x.evicted = true
			if x.refs == 0 {
				stale = append(stale, x)
			}
			continue
		}
		live = append(live, x)
		if e == nil || x.refs < e.refs {
			e = x
		}
	}
	if e == nil || (e.refs > 0 && len(live) < p.opts.MaxConns) {
		e, fresh = &entry{ready: make(chan struct{})}, true
		live = append(live, e)
	}
	p.entries[key] = live
	return e, fresh, stale
}

// release drops a reference; the last user of an evicted entry closes it.
func (p *Pool) release(e *entry) {
	p.mu.Lock()
	e.refs--
	e.lastUsed = time.Now()
	closeNow := e.evicted && e.refs == 0
	p.mu.Unlock()
	if closeNow {
		e.close()
	}
}

// dial connects, authenticates and tree-connects; failures are not cached.
func (p *Pool) dial(ctx context.Context, key poolKey, e *entry, creds auth.Credentials) {
	defer close(e.ready)
	addr := net.JoinHostPort(trimBrackets(key.server), strconv.Itoa(p.opts.Port))
	conn, err := p.opts.Dial(ctx, "tcp", addr)
	if err != nil {
		e.err = classify("connect to "+key.server, err)
		p.drop(key, e)
		return
	}
	// go-smb2 bounds NEGOTIATE/SESSION_SETUP by ctx but not the socket; a
	// deadline on the socket keeps a frozen server from holding us past ctx.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// An NTLM initiator with no user and no password is an anonymous session.
	d := &smb2.Dialer{Initiator: &smb2.NTLMInitiator{User: creds.Username, Password: creds.Password, Domain: creds.Domain}}
	sess, err := d.DialConn(ctx, conn, key.server)
	if err != nil {
		_ = conn.Close()
		e.err = classify(fmt.Sprintf("logon to %s as %s", key.server, creds), err)
		p.drop(key, e)
		return
	}
	sh, err := sess.WithContext(ctx).Mount(key.share)
	if err != nil {
		_ = conn.Close()
		e.err = classify(fmt.Sprintf(`tree connect to \\%s\%s`, key.server, key.share), err)
		p.drop(key, e)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	e.conn, e.session, e.share = conn, sess, sh
}

func (p *Pool) drop(key poolKey, e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	es := p.entries[key]
	for i, x := range es {
		if x == e {
			es = append(es[:i:i], es[i+1:]...)
			break
		}
	}
	if len(es) == 0 {
		delete(p.entries, key)
	} else {
		p.entries[key] = es
	}
	e.evicted = true
}

// markBroken keeps new users off e; it is replaced on the next Share call.
func (p *Pool) markBroken(e *entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.broken = true
}

func (e *entry) close() {
	e.once.Do(func() {
		if e.conn == nil {
			return
		}
		// Logoff needs a round trip; on a dead server closing the socket is
		// what ends go-smb2's goroutines, so bound the polite part.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if !e.broken {
			_ = e.share.WithContext(ctx).Umount()
			_ = e.session.WithContext(ctx).Logoff()
		}
		if err := e.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			klog.V(4).InfoS("closing smb connection", "err", err)
		}
	})
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
