// Package locate finds where the controller acts on a volume's directory:
// the share its source names, or, for a source on a DFS link, a share of
// one of the link's targets (the targets of one link are replicas: DFS-R,
// or a clustered NAS serving one file system from several nodes), tried in
// order until one answers.
package locate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// OpenShare opens a pooled SMB share (pkg/smb).
type OpenShare func(ctx context.Context, server, share string, creds auth.Credentials) (provision.FS, func(), error)

// Resolve resolves a DFS path (pkg/dfs through pkg/smb).
type Resolve func(ctx context.Context, path string, creds auth.Credentials) (dfs.Resolution, error)

// Locator runs file system work on a volume's share.
type Locator struct {
	open    OpenShare
	resolve Resolve // nil: sources are taken as they are
}

// New builds a locator; resolve may be nil.
func New(open OpenShare, resolve Resolve) *Locator { return &Locator{open: open, resolve: resolve} }

// With runs fn on the share of src, with paths as the volume package
// builds them (relative to src's share). A source on a DFS link runs on
// the first of its targets that answers, its paths rebased onto that
// target's share.
func (l *Locator) With(ctx context.Context, src volume.Source, creds auth.Credentials, fn func(provision.FS) error) error {
	if l.resolve == nil {
		return l.withShare(ctx, src.Server, src.Share, creds, fn)
	}
	res, err := l.resolve(ctx, UNC(src), creds)
	if err != nil {
		if !errors.Is(err, dfs.ErrNotDFS) {
			klog.V(2).InfoS("cannot resolve a DFS referral; using the source as it is", "source", src, "err", err)
		}
		return l.withShare(ctx, src.Server, src.Share, creds, fn)
	}
	var errs []error
	for _, t := range res.Targets {
		server, share, tpath, ok := splitUNC(t)
		if !ok {
			errs = append(errs, fmt.Errorf("DFS target %q is not \\\\server\\share[\\path]", t))
			continue
		}
		err := l.withShare(ctx, server, share, creds, func(fsys provision.FS) error {
			return fn(provision.Rebase(fsys, src.Path, tpath))
		})
		if err == nil || !errors.Is(err, smb.ErrUnreachable) || ctx.Err() != nil {
			return err
		}
		klog.InfoS("DFS target unreachable; trying the next one", "source", src, "target", t, "err", err)
		errs = append(errs, err)
	}
	return fmt.Errorf("no target of DFS link %s answers: %w", res.Link, errors.Join(errs...))
}

// splitUNC splits \server\share[\path] (path slash-separated).
func splitUNC(t string) (server, share, p string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(t, `\`), `\`, 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", "", false
	}
	if len(parts) == 3 {
		p = path.Clean(strings.ReplaceAll(parts[2], `\`, "/"))
		if p == "." {
			p = ""
		}
	}
	return parts[0], parts[1], p, true
}

// withShare runs fn on a pooled share. When fn fails at the transport
// level on a reused session (the server restarted since), it runs once
// more on a fresh one: the operations are idempotent.
func (l *Locator) withShare(ctx context.Context, server, share string, creds auth.Credentials, fn func(provision.FS) error) error {
	for attempt := 0; ; attempt++ {
		fsys, release, err := l.open(ctx, server, share, creds)
		if err != nil {
			return err
		}
		err = fn(fsys)
		release()
		r, pooled := fsys.(interface{ Reused() bool })
		if err == nil || attempt > 0 || !errors.Is(err, smb.ErrUnreachable) || !pooled || !r.Reused() || ctx.Err() != nil {
			return err
		}
		klog.V(2).InfoS("pooled SMB session failed; retrying on a fresh one", "server", server, "err", err)
	}
}

// Targets resolves src and returns the ip:445 of every storage target of
// its DFS link with the resolution; nil targets and no error for a source
// in no DFS namespace.
func Targets(ctx context.Context, resolve Resolve, src volume.Source, creds auth.Credentials) ([]string, dfs.Resolution, error) {
	res, err := resolve(ctx, UNC(src), creds)
	if errors.Is(err, dfs.ErrNotDFS) {
		return nil, dfs.Resolution{}, nil
	}
	if err != nil {
		return nil, dfs.Resolution{}, err
	}
	return Addresses(ctx, res), res, nil
}

// Addresses returns the ip:445 of every storage target of res, in order,
// without duplicates; a target whose name does not resolve is left out
// (and logged).
func Addresses(ctx context.Context, res dfs.Resolution) []string {
	var out []string
	for _, t := range res.Targets {
		host, _, _ := strings.Cut(strings.TrimPrefix(t, `\`), `\`)
		addrs, err := lookup(ctx, host)
		if err != nil {
			klog.InfoS("cannot resolve a DFS target's name; it is not watched", "target", t, "err", err)
			continue
		}
		for _, a := range addrs {
			if s := net.JoinHostPort(a.String(), "445"); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// lookup returns the addresses of host (an IP address is its own).
func lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip}, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	return addrs, nil
}

// UNC is \server\share[\path] of a source.
func UNC(s volume.Source) string {
	p := `\` + s.Server + `\` + s.Share
	if s.Path != "" {
		p += `\` + strings.ReplaceAll(s.Path, "/", `\`)
	}
	return p
}
