// Command csi-smb is the csi-smb CSI driver: controller, node or both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/metrics"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	fs := flag.NewFlagSet("csi-smb", flag.ExitOnError)
	var opts driver.Options
	opts.AddFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("csi-smb", version)
		return
	}
	opts.Version = version
	if err := run(opts); err != nil {
		klog.ErrorS(err, "csi-smb failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(opts driver.Options) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	pool := smb.NewPool(smb.Options{})
	statter := mount.NewStatter(nil)
	var d *driver.Driver
	var monitor *health.Monitor
	prober := health.NewProber(health.Adapt(smb.ProbeDialer{}.DialProbe), health.ProberOptions{
		Interval: opts.ProbeInterval, Recorder: m,
		OnChange: func(addr string, v health.Verdict) {
			klog.InfoS("server health changed", "server", addr, "state", v.State, "reason", v.Reason, "message", v.Message)
			monitor.ServerChanged(addr)
		},
		OnGone: m.ServerGone,
	})
	monitor = health.NewMonitor(statter, prober, health.MonitorOptions{
		CheckInterval: opts.CheckInterval, StatTimeout: opts.StatsTimeout, RemountGrace: opts.RemountGrace,
		OnChange:  func(id string, v health.VolumeVerdict) { m.VolumeVerdict(id, v); d.VolumeHealthChanged(id, v) },
		OnRemount: func(id string, err error) { m.Remounted(err) },
		OnRemove:  m.VolumeGone,
	})
	catalog := health.NewCatalog(dirChecker(pool), prober, health.CatalogOptions{
		OnChange: func(id string, v health.VolumeVerdict) {
			klog.InfoS("volume health changed (controller view)", "volumeID", id, "state", v.State, "reason", v.Reason, "message", v.Message)
		},
	})
	deps := driver.Deps{
		Mounter: mount.New(mount.Options{}), Statter: statter, Monitor: monitor, Servers: prober, Catalog: catalog,
		OpenShare: func(ctx context.Context, server, share string, creds auth.Credentials) (provision.FS, func(), error) {
			return pool.Share(ctx, server, share, creds)
		},
	}
	g, gctx := errgroup.WithContext(ctx)
	if opts.KubeAPI {
		client, err := kube.NewClient(opts.Kubeconfig)
		if err != nil {
			return err
		}
		if opts.ServesNode() {
			reporter := kube.NewReporter(client, opts.DriverName, opts.NodeID)
			deps.Events = reporter
			g.Go(func() error { return reporter.Run(gctx) })
		}
		if opts.ServesController() {
			g.Go(func() error { seedCatalog(gctx, client, opts.DriverName, catalog); return nil })
		}
	}
	if d, err = driver.New(opts, deps); err != nil {
		return err
	}
	g.Go(func() error { return pool.Run(gctx) })
	g.Go(func() error { return prober.Run(gctx) })
	g.Go(func() error { return monitor.Run(gctx) })
	g.Go(func() error { return catalog.Run(gctx) })
	if opts.MetricsAddress != "" {
		g.Go(func() error { return metrics.Serve(gctx, opts.MetricsAddress, reg) })
	}
	g.Go(func() error { return d.Run(gctx) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// seedCatalog tells a (re)started controller which volumes exist, so their
// health is watched before anyone asks. Failures only cost that head start.
func seedCatalog(ctx context.Context, client kubernetes.Interface, driverName string, catalog *health.Catalog) {
	handles, err := kube.VolumeHandles(ctx, client, driverName)
	if err != nil {
		klog.ErrorS(err, "cannot list PersistentVolumes; volumes are watched once an RPC names them")
		return
	}
	n := 0
	for _, h := range handles {
		if v, err := volume.ParseID(h); err == nil {
			catalog.Track(h, v, 0, auth.Credentials{})
			n++
		}
	}
	klog.InfoS("watching the volumes of existing PersistentVolumes", "count", n)
}

// dirChecker checks a volume directory over the controller's SMB pool.
func dirChecker(pool *smb.Pool) health.DirChecker {
	return func(ctx context.Context, v volume.Volume, creds auth.Credentials) (bool, error) {
		sh, release, err := pool.Share(ctx, v.Source.Server, v.Source.Share, creds)
		if err != nil {
			return false, err
		}
		defer release()
		return provision.Exists(ctx, sh, v)
	}
}
