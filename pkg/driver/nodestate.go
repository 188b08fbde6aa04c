package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/failover"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// VolumeMonitor watches staged volumes (pkg/health.Monitor); its verdicts
// are in the store.
type VolumeMonitor interface {
	Add(spec health.VolumeSpec)
	Remove(id string)
	Remounted(id string, err error)
}

// staged is what the node remembers about a staged volume: enough to
// remount it and to name the objects that use it. Credentials stay in
// memory only.
type staged struct {
	vol     volume.Volume
	staging string
	source  string
	options []string
	creds   auth.Credentials
	dfs     []string // ip:port of every target of its DFS link; nil: not DFS
	// consistency: dfsFailover=consistency, never leave a frozen target
	consistency bool
	claim       []kube.Object          // the PVC, from the volume context
	targets     map[string]publication // publish path -> what is there
}

type publication struct {
	readOnly bool
	pods     []kube.Object
}

// nodeState is the node's memory of its volumes, for remounts and for
// answering health calls by path without touching the mount table.
type nodeState struct {
	mu   sync.Mutex
	vols map[string]*staged
}

func newNodeState() *nodeState { return &nodeState{vols: map[string]*staged{}} }

func (n *nodeState) put(id string, s *staged) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.vols[id]; ok {
		s.targets = old.targets
	}
	if s.targets == nil {
		s.targets = map[string]publication{}
	}
	n.vols[id] = s
}

func (n *nodeState) drop(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.vols, id)
}

func (n *nodeState) get(id string) (staged, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.vols[id]
	if !ok {
		return staged{}, false
	}
	c := *s
	c.targets = maps.Clone(s.targets)
	return c, true
}

func (n *nodeState) publish(id, target string, readOnly bool, pods []kube.Object) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.vols[id]; ok {
		s.targets[target] = publication{readOnly: readOnly, pods: pods}
	}
}

func (n *nodeState) unpublish(id, target string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.vols[id]; ok {
		delete(s.targets, target)
	}
}

// objects returns the pods and the PVC that use a volume.
func (n *nodeState) objects(id string) []kube.Object {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.vols[id]
	if !ok {
		return nil
	}
	out := slices.Clone(s.claim)
	for _, p := range s.targets {
		for _, o := range p.pods {
			if !slices.ContainsFunc(out, func(x kube.Object) bool { return x.Kind == o.Kind && x.Namespace == o.Namespace && x.Name == o.Name }) {
				out = append(out, o)
			}
		}
	}
	return out
}

// knowsPath reports whether path is the staging or a publish path of id.
func (n *nodeState) knowsPath(id, path string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.vols[id]
	if !ok {
		return false
	}
	_, pub := s.targets[path]
	return pub || s.staging == path
}

// watch registers a staged volume with the monitor, seeded with a check
// made now, so stats and health have an answer before the first
// background check.
func (d *Driver) watch(ctx context.Context, id string, s *staged) {
	sctx, cancel := context.WithTimeout(ctx, d.opts.StatsTimeout)
	res, err := d.deps.Statter.Statfs(sctx, s.staging)
	cancel()
	var initial *mount.StatResult
	if err == nil {
		initial = &res
	}
	server := serverAddr(s.vol.Source)
	if s.dfs != nil {
		server = s.dfs[0]
		if info, ok, err := d.deps.Mounter.Find(s.staging); err == nil && ok && info.ServerAddr() != "" {
			server = info.ServerAddr()
		}
	}
	spec := health.VolumeSpec{
		ID: id, Staging: s.staging, Server: server, Targets: s.dfs, DFSFallback: s.dfs != nil && d.opts.DFSFailover && !s.consistency,
		Creds: s.creds, Remountable: true, Initial: initial,
	}
	// A plain share's volume directory is watched; a DFS volume's lives on
	// whichever target serves it (not watched yet).
	if parent, name, ok := s.vol.Parent(); ok && s.dfs == nil {
		spec.Dir = &health.DirTarget{Addr: server, Share: s.vol.Source.Share, Dir: parent, Name: name}
	}
	d.deps.Monitor.Add(spec)
	if s.dfs != nil {
		d.deps.DFS.Add(failover.Volume{ID: id, Staging: s.staging, Targets: s.dfs, Consistency: s.consistency,
			Path: locate.UNC(s.vol.Location())}, server)
	}
}

func serverAddr(src volume.Source) string { return src.Address() }

// remountWedged remounts each volume the Monitor asks for (RemountWanted),
// one goroutine per volume at most, and tells the Monitor how it went.
func (d *Driver) remountWedged(ctx context.Context, sub *health.Subscription) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	busy := map[string]bool{}
	_ = health.Consume(ctx, sub, func(u health.Update) {
		if u.Kind != health.KindVolume || u.Gone || u.Volume.RemountWanted.IsZero() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if busy[u.Name] {
			return // the running remount reports; the Monitor asks again if needed
		}
		busy[u.Name] = true
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, 2*d.opts.MountTimeout)
			err := d.remount(rctx, u.Name)
			cancel()
			if d.deps.Remounts != nil {
				d.deps.Remounts.Remounted(err)
			}
			d.deps.Monitor.Remounted(u.Name, err)
			mu.Lock()
			delete(busy, u.Name)
			mu.Unlock()
		})
	})
}

// remount is the remedy for a wedged mount: detach the publish bind mounts
// and the staging mount, mount the share again and re-bind. Pods that mount
// the volume with HostToContainer propagation see the new mount at once;
// others keep the old one until they restart, and new pods get the new one.
func (d *Driver) remount(ctx context.Context, id string) error {
	unlock, err := d.locks.tryLock("id/" + id)
	if err != nil {
		return err // an RPC is working on the volume; try again later
	}
	defer unlock()
	s, ok := d.node.get(id)
	if !ok {
		return fmt.Errorf("%w: %s", errNotStaged, id)
	}
	var errs []error
	for target := range s.targets {
		errs = append(errs, d.deps.Mounter.Unmount(ctx, target))
	}
	if err := d.deps.Mounter.Unmount(ctx, s.staging); err != nil {
		return errors.Join(append(errs, err)...)
	}
	mctx, cancel := context.WithTimeout(ctx, d.opts.MountTimeout)
	err = d.deps.Mounter.MountCIFS(mctx, s.source, s.staging, s.options, s.creds)
	cancel()
	if err != nil {
		return fmt.Errorf("remount %s: %w", s.source, err)
	}
	for target, p := range s.targets {
		if err := os.MkdirAll(target, 0o750); err != nil {
			errs = append(errs, err)
			continue
		}
		bctx, cancel := context.WithTimeout(ctx, d.opts.MountTimeout)
		errs = append(errs, d.deps.Mounter.BindMount(bctx, s.staging, target, p.readOnly))
		cancel()
	}
	err = errors.Join(errs...)
	klog.InfoS("wedged mount remounted", "volumeID", id, "source", s.source, "staging", s.staging,
		"republished", len(s.targets), "err", err)
	return err
}
