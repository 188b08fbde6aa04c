package driver

import (
	"context"
	"time"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/failover"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// DFSNode is the node's DFS support (pkg/dfs, pkg/failover, the prober).
type DFSNode interface {
	Resolve(ctx context.Context, path string, creds auth.Credentials) (dfs.Resolution, error)
	// Acquire probes the targets until release.
	Acquire(targets []string, creds auth.Credentials) (release func())
	// Prepare fences the targets known dead, waiting up to ctx for first
	// verdicts; the targets stay in use until done.
	Prepare(ctx context.Context, targets []string) (done func(), err error)
	Add(v failover.Volume, active string)
	Remove(id string)
}

// prepareWait bounds how long a DFS stage waits for the first verdicts on
// its targets when none answers.
const prepareWait = 3 * time.Second

// resolveWait bounds the referral question at stage time: a cached
// referral answers at once, a live server in a few round trips; a server
// that does not answer (frozen, cut off) is not kept waiting for — the
// mount goes ahead without DFS failover, and the fetch, which goes on in
// the background, is cached for the next stage.
const resolveWait = 3 * time.Second

// dfsTargets resolves the volume's location and returns the ip:port of
// every storage target of its link, or nil for a path in no DFS namespace.
// A resolution that fails otherwise (the root down and nothing cached) is
// logged and the path mounted as it is: the kernel resolves DFS itself.
func (d *Driver) dfsTargets(ctx context.Context, vol volume.Volume, creds auth.Credentials) []string {
	if d.deps.DFS == nil {
		return nil
	}
	loc := vol.Location()
	rctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	out, res, err := locate.Targets(rctx, d.deps.DFS.Resolve, loc, creds)
	if err != nil {
		klog.InfoS("cannot resolve the DFS referral of a volume; mounting it without DFS failover", "source", loc, "err", err)
		return nil
	}
	if out != nil {
		klog.InfoS("volume is on a DFS link", "source", loc, "link", res.Link, "targets", res.Targets, "addresses", out)
	}
	return out
}
