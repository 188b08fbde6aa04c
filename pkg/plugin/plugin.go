// Package plugin assembles the driver: the one place where the health
// store, its producers (prober, monitor) and its consumers (metrics,
// Events, the node's remounts) are built and wired. The command and every
// test that runs a whole driver build it here, replacing only the parts a
// test must fake.
package plugin

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/failover"
	"github.com/csi-smb/csi-smb/pkg/fence"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/httpserve"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/metrics"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/registration"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
	"github.com/csi-smb/csi-smb/pkg/watch"
)

// Parts are the collaborators a test may replace; zero values get the
// production ones.
type Parts struct {
	Dialer health.Dialer // probe sessions: SMB2 over TCP
	// Dial opens the TCP connections of the default prober and of DFS
	// referrals; default net.Dialer, with the fence's mark on the node.
	Dial      smb.DialFunc
	Mounter   driver.Mounter   // kernel cifs mounts
	Statfs    mount.StatfsFunc // statfs(2)
	OpenShare driver.OpenShare // the controller's SMB sessions: a pool
	// Kube is the API client for --kube-api; default from opts.Kubeconfig.
	Kube     kubernetes.Interface
	Registry *prometheus.Registry // metrics; default a new registry
	// Fence is the node's DFS fence; default one on the host's nftables
	// (the node only: it needs CAP_NET_ADMIN).
	Fence     *fence.Fence
	Prober    health.ProberOptions
	Monitor   health.MonitorOptions
	Inventory inventory.Options
	// WatchDial and WatchList are the directory watches' sessions (default:
	// SMB2 CHANGE_NOTIFY over the probe dialer) and listings (the pool).
	WatchDial watch.Dialer
	WatchList watch.Lister
}

// Plugin is an assembled driver with everything it runs.
type Plugin struct {
	Driver    *driver.Driver
	Store     *health.Store
	Prober    *health.Prober
	Monitor   *health.Monitor
	Inventory *inventory.Inventory
	// Watches watches the directories of the controller's volumes and of
	// the node's staged ones (--dir-watch); nil without.
	Watches  *watch.Watcher
	Failover *failover.Controller // node only
	// Registration registers the node with the kubelet
	// (--kubelet-registration-dir); nil without.
	Registration *registration.Server
	Registry     *prometheus.Registry
	opts         driver.Options
	runs         []func(context.Context) error
}

// New builds the driver for opts; nothing runs before Run.
func New(opts driver.Options, parts Parts) (*Plugin, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &Plugin{opts: opts, Store: health.NewStore(), Registry: parts.Registry}
	if p.Registry == nil {
		p.Registry = prometheus.NewRegistry()
	}
	m, err := metrics.New(p.Registry)
	if err != nil {
		return nil, err
	}
	if parts.Fence == nil && opts.ServesNode() {
		parts.Fence = fence.New(fence.Options{})
	}
	var mark uint32
	if opts.ServesNode() && opts.DFSFailover {
		mark = parts.Fence.Mark() // the prober's sockets pass the fence
	}
	probeDialer := smb.ProbeDialer{Dial: parts.Dial, Mark: mark}
	if parts.Dialer == nil {
		parts.Dialer = health.Adapt(probeDialer.DialProbe)
	}
	if parts.Mounter == nil {
		parts.Mounter = mount.New(mount.Options{})
	}
	pool := smb.NewPool(smb.Options{Dial: parts.Dial})
	p.runs = append(p.runs, pool.Run)
	if parts.OpenShare == nil {
		parts.OpenShare = func(ctx context.Context, server, share string, creds auth.Credentials) (provision.FS, func(), error) {
			return pool.Share(ctx, server, share, creds)
		}
	}
	if parts.WatchDial == nil {
		parts.WatchDial = func(ctx context.Context, addr, share string, creds auth.Credentials) (watch.Conn, error) {
			return probeDialer.DialTree(ctx, addr, share, creds)
		}
	}
	if parts.WatchList == nil {
		parts.WatchList = smb.Dirs{Pool: pool}
	}
	po := parts.Prober
	po.Recorder = m
	if po.Interval == 0 {
		po.Interval = opts.ProbeInterval
	}
	p.Prober = health.NewProber(parts.Dialer, p.Store, po)
	if parts.Monitor.CheckInterval == 0 {
		parts.Monitor.CheckInterval = opts.CheckInterval
	}
	if parts.Monitor.StatTimeout == 0 {
		parts.Monitor.StatTimeout = opts.StatsTimeout
	}
	if parts.Monitor.RemountGrace == 0 {
		parts.Monitor.RemountGrace = opts.RemountGrace
	}
	if opts.DirWatch {
		// One watcher for both services of a process: one watch per
		// directory, however many want it.
		role := "controller"
		switch {
		case opts.ServesNode() && opts.ServesController():
			role = "all"
		case opts.ServesNode():
			role = "node"
		}
		p.Watches = watch.New(parts.WatchDial, parts.WatchList, p.Store, watch.Options{Role: role})
		p.runs = append(p.runs, p.Watches.Run)
		if opts.ServesNode() && parts.Monitor.Watches == nil {
			parts.Monitor.Watches = p.Watches
		}
	}
	statter := mount.NewStatter(parts.Statfs)
	p.Monitor = health.NewMonitor(statter, p.Prober, p.Store, parts.Monitor)
	referrer := &smb.Referrer{Dialer: probeDialer}
	cache := dfs.NewCache(referrer.Fetch, dfs.CacheOptions{})
	resolver := dfs.NewResolver(cache)
	resolve := func(ctx context.Context, path string, creds auth.Credentials) (dfs.Resolution, error) {
		return resolver.Resolve(smb.WithCredentials(ctx, creds), path)
	}
	p.runs = append(p.runs, cache.Run)
	invOpts := parts.Inventory
	invOpts.Targets = func(ctx context.Context, v volume.Volume, creds auth.Credentials) ([]string, error) {
		targets, _, err := locate.Targets(ctx, resolve, v.Location(), creds)
		return targets, err
	}
	if p.Watches != nil && opts.ServesController() && invOpts.Watches == nil {
		invOpts.Watches = p.Watches
	}
	p.Inventory = inventory.New(dirChecker(locate.New(locate.OpenShare(parts.OpenShare), resolve)), p.Prober, p.Store, invOpts)
	deps := driver.Deps{
		Mounter: parts.Mounter, Statter: statter, Monitor: p.Monitor, Verdicts: p.Store, Remounts: m,
		OpenShare: parts.OpenShare, ResolveDFS: resolve, Inventory: p.Inventory,
	}
	if opts.ServesNode() {
		mounter := parts.Mounter
		p.Failover = failover.New(p.Store, parts.Fence, func() (map[string]string, error) {
			infos, err := mounter.List()
			out := make(map[string]string, len(infos))
			for _, i := range infos {
				if a := i.ServerAddr(); a != "" {
					out[i.MountPoint] = a
				}
			}
			return out, err
		}, p.Monitor, failover.Options{Disabled: !opts.DFSFailover, UnfenceAfter: opts.DFSUnfenceAfter, Recorder: m,
			Hint: func(path, active string) {
				host, _, err := net.SplitHostPort(active)
				if err == nil {
					err = cache.HintServer(path, host)
				}
				if err != nil {
					klog.V(2).InfoS("no referral target hint for a DFS volume", "path", path, "active", active, "err", err)
				}
			}})
		deps.DFS = &dfsNode{resolve: resolve, probes: p.Prober, failover: p.Failover}
		p.runs = append(p.runs, parts.Fence.Run, p.Failover.Run)
	}
	if opts.KubeAPI {
		client := parts.Kube
		if client == nil {
			if client, err = kube.NewClient(opts.Kubeconfig); err != nil {
				return nil, err
			}
		}
		if opts.ServesNode() {
			reporter := kube.NewReporter(client, opts.DriverName, opts.NodeID)
			deps.Events = reporter
			p.runs = append(p.runs, reporter.Run)
		}
		if opts.ServesController() {
			p.runs = append(p.runs, func(ctx context.Context) error { seed(ctx, client, opts.DriverName, p.Inventory); return nil })
		}
	}
	if p.Driver, err = driver.New(opts, deps); err != nil {
		return nil, err
	}
	p.runs = append(p.runs, p.Prober.Run, p.Monitor.Run, p.Inventory.Run, p.Driver.Run,
		func(ctx context.Context) error { return m.Follow(ctx, p.Store.Subscribe()) },
		func(ctx context.Context) error { return logServers(ctx, p.Store.Subscribe()) })
	if opts.KubeletRegistrationDir != "" {
		endpoint, err := opts.RegistrationEndpoint()
		if err != nil {
			return nil, err
		}
		if p.Registration, err = registration.New(registration.Options{Dir: opts.KubeletRegistrationDir,
			DriverName: opts.DriverName, Endpoint: endpoint}); err != nil {
			return nil, err
		}
		// The kubelet calls NodeGetInfo right after GetInfo: register
		// once the CSI socket serves.
		p.runs = append(p.runs, func(ctx context.Context) error {
			select {
			case <-p.Driver.Serving():
			case <-ctx.Done():
				return nil
			}
			return p.Registration.Run(ctx)
		})
	}
	healthz := httpserve.Healthz(p.checks()...)
	if opts.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(p.Registry))
		mux.Handle("/healthz", healthz)
		p.runs = append(p.runs, func(ctx context.Context) error { return httpserve.Serve(ctx, opts.MetricsAddress, mux) })
	}
	if opts.HealthAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/healthz", healthz)
		p.runs = append(p.runs, func(ctx context.Context) error { return httpserve.Serve(ctx, opts.HealthAddress, mux) })
	}
	return p, nil
}

// checks are what /healthz answers for: the CSI server serves (and the
// node can mount), and the kubelet can find the node.
func (p *Plugin) checks() []httpserve.Check {
	checks := []httpserve.Check{func(context.Context) error { return p.Driver.Ready() }}
	if p.Registration != nil {
		checks = append(checks, func(context.Context) error { return p.Registration.Check() })
	}
	return checks
}

// Run runs everything until ctx ends or one part fails; it returns after
// every part has stopped.
func (p *Plugin) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, run := range p.runs {
		g.Go(func() error { return run(gctx) })
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// logServers logs every change of a server's health.
func logServers(ctx context.Context, sub *health.Subscription) error {
	return health.Consume(ctx, sub, func(u health.Update) {
		if u.Kind == health.KindServer && !u.Gone {
			v := u.Server
			klog.InfoS("server health changed", "server", u.Name, "state", v.State, "reason", v.Reason, "message", v.Message)
		}
	})
}

// seed tells a (re)started controller which volumes exist, so their health
// is watched before anyone asks. Failures only cost that head start.
func seed(ctx context.Context, client kubernetes.Interface, driverName string, inv *inventory.Inventory) {
	handles, err := kube.VolumeHandles(ctx, client, driverName)
	if err != nil {
		klog.ErrorS(err, "cannot list PersistentVolumes; only volumes created from now on are watched")
		return
	}
	n := 0
	for _, h := range handles {
		if v, err := volume.ParseID(h); err == nil {
			inv.Track(h, v, 0, auth.Credentials{})
			n++
		}
	}
	klog.InfoS("watching the volumes of existing PersistentVolumes", "count", n)
}

// dirChecker checks a volume directory over the controller's SMB sessions
// (through a target of its link for a DFS source).
func dirChecker(shares *locate.Locator) inventory.DirChecker {
	return func(ctx context.Context, v volume.Volume, creds auth.Credentials) (ok bool, err error) {
		err = shares.With(ctx, v.Source, creds, func(fsys provision.FS) error {
			ok, err = provision.Exists(ctx, fsys, v)
			return err
		})
		return ok, err
	}
}

// dfsNode is the driver's view of the node's DFS parts.
type dfsNode struct {
	resolve  locate.Resolve
	probes   *health.Prober
	failover *failover.Controller
}

func (n *dfsNode) Resolve(ctx context.Context, path string, creds auth.Credentials) (dfs.Resolution, error) {
	return n.resolve(ctx, path, creds)
}

func (n *dfsNode) Acquire(targets []string, creds auth.Credentials) func() {
	var releases []func()
	for _, t := range targets {
		releases = append(releases, n.probes.Acquire(t, creds))
	}
	return func() {
		for _, r := range releases {
			r()
		}
	}
}

func (n *dfsNode) Prepare(ctx context.Context, targets []string) (func(), error) {
	return n.failover.Prepare(ctx, targets)
}

func (n *dfsNode) Add(v failover.Volume, active string) { n.failover.Add(v, active) }

func (n *dfsNode) Remove(id string) { n.failover.Remove(id) }
