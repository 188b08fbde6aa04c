package probe

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// resolveHops bounds a resolution in Timeouts: a referral of the root, of
// the link, and the questions to the link's targets whether they are DFS
// paths themselves (asked at once).
const resolveHops = 3

// dfs resolves src the way the node does (pkg/dfs: referral cache and
// resolver, pkg/smb referrals) and probes every storage target of the
// path, each like the server and with a stat of the path. It returns nil
// for a path in no DFS namespace.
func (p *run) dfs(ctx context.Context, src volume.Source, creds auth.Credentials) *DFSReport {
	referrer := &smb.Referrer{Dialer: p.dialer, Creds: func(string) auth.Credentials { return creds }}
	rec := &referrals{}
	cache := dfs.NewCache(func(ctx context.Context, path string) (dfs.Referral, error) {
		ref, err := referrer.Fetch(ctx, path)
		if err == nil {
			rec.add(ref)
		}
		return ref, err
	}, dfs.CacheOptions{FetchTimeout: p.opts.Timeout})
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = cache.Run(cctx) }() // Run waits for the fetches in flight
	defer func() { stop(); <-done }()
	resolver := dfs.NewResolver(cache)
	resolver.InterlinkTimeout = p.opts.Timeout
	rctx, cancel := context.WithTimeout(ctx, resolveHops*p.opts.Timeout)
	defer cancel()
	res, err := resolver.Resolve(rctx, locate.UNC(src))
	if errors.Is(err, dfs.ErrNotDFS) {
		return nil
	}
	if err != nil {
		return &DFSReport{Referrals: rec.list(), Targets: []TargetReport{}, Error: err.Error()}
	}
	if src.Path != "" {
		// The root above the link, for the tree (a server answers a link's
		// referral without it).
		_, _ = cache.Lookup(rctx, locate.UNC(volume.Source{Server: src.Server, Share: src.Share}))
	}
	r := &DFSReport{Link: res.Link, Referrals: rec.list(), Targets: make([]TargetReport, len(res.Targets))}
	var wg sync.WaitGroup
	for i, t := range res.Targets {
		wg.Go(func() { r.Targets[i] = p.target(ctx, t, creds) })
	}
	wg.Wait()
	return r
}

// target probes one storage target (\server\share[\path]).
func (p *run) target(ctx context.Context, path string, creds auth.Credentials) TargetReport {
	tr := TargetReport{Path: path}
	src, err := volume.ParseSource("DFS target", `\`+path)
	if err != nil {
		tr.Server = ServerReport{Error: err.Error(), Echo: EchoReport{RTTMs: []float64{}}}
		tr.Share = ShareReport{Status: ShareSkipped}
		return tr
	}
	tr.Server = p.server(ctx, src.Address(), creds)
	tr.Share = ShareReport{Address: src.Address(), Share: src.Share, Path: src.Path, Status: ShareSkipped}
	if tr.Server.Reachable {
		tr.Share = p.share(ctx, src, creds)
	}
	return tr
}

// referrals records the referrals a resolution fetched.
type referrals struct {
	mu   sync.Mutex
	seen []ReferralReport
}

func (r *referrals) add(ref dfs.Referral) {
	kind := "link"
	if ref.Root {
		kind = "root"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seen {
		if strings.EqualFold(s.Path, ref.Path) {
			return
		}
	}
	r.seen = append(r.seen, ReferralReport{Path: ref.Path, Kind: kind, TTLSeconds: int64(ref.TTL.Seconds()),
		Targets: append([]string{}, ref.Targets...)})
}

// list is the referrals, roots first, each kind in the order fetched.
func (r *referrals) list() []ReferralReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]ReferralReport{}, r.seen...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Kind == "root" && out[j].Kind != "root" })
	return out
}
