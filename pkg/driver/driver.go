// Package driver is the CSI gRPC surface of csi-smb: identity, controller and
// node services. Every handler validates its request, takes the volume lock,
// calls a domain package and maps the domain error to a gRPC code in
// errors.go. Nothing here dials SMB or mounts directly.
package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/diag"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/provision"
)

// Mounter performs the node's mounts (pkg/mount on Linux).
type Mounter interface {
	MountCIFS(ctx context.Context, source, target string, options []string, creds auth.Credentials) error
	BindMount(ctx context.Context, source, target string, readOnly bool) error
	Unmount(ctx context.Context, target string) error
	Detach(ctx context.Context, target string) error
	Find(path string) (mount.Info, bool, error)
	List() ([]mount.Info, error)
	Check() error
}

// Statter runs bounded, single-flight statfs calls (pkg/mount).
type Statter interface {
	Statfs(ctx context.Context, path string) (mount.StatResult, error)
}

// OpenShare opens a pooled SMB share for the controller (pkg/smb).
type OpenShare func(ctx context.Context, server, share string, creds auth.Credentials) (provision.FS, func(), error)

// EventSink tells Kubernetes about volume health changes (pkg/kube).
type EventSink interface {
	VolumeHealthChanged(volumeID string, v health.VolumeVerdict, objects []kube.Object)
}

// Verdicts is the health store (pkg/health.Store): the node's RPCs read it,
// and the driver follows it to write Events and to remount wedged mounts.
type Verdicts interface {
	Volume(id string) (health.VolumeVerdict, bool)
	Server(addr string) (health.Verdict, bool)
	Servers() map[string]health.Verdict
	Subscribe() *health.Subscription
}

// RemountRecorder counts remounts (pkg/metrics).
type RemountRecorder interface {
	Remounted(err error)
}

// Deps are the driver's collaborators; each service needs its own subset.
type Deps struct {
	Mounter   Mounter         // node
	Statter   Statter         // node
	Monitor   VolumeMonitor   // node: watches staged volumes
	Verdicts  Verdicts        // node: server and volume health
	Events    EventSink       // node: optional
	Remounts  RemountRecorder // node: optional
	OpenShare OpenShare       // controller
	// ResolveDFS, when set, lets the controller act on a DFS source through
	// a target of its link.
	ResolveDFS locate.Resolve
	Inventory  Inventory        // controller: its volumes and their health
	DFS        DFSNode          // node: optional; without it DFS paths are mounted like any share
	Now        func() time.Time // default time.Now
}

// Driver serves the CSI services chosen by Options.Mode.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts   Options
	deps   Deps
	locks  *keyLocks
	node   *nodeState
	shares *locate.Locator // controller
	ready  bool            // set by Run once serving; read by Probe under mu
	// serving is closed once the gRPC server serves.
	serving chan struct{}
	mu      sync.Mutex
}

// New checks that the dependencies of the chosen mode are present.
func New(opts Options, deps Deps) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.ServesNode() && (deps.Mounter == nil || deps.Statter == nil || deps.Monitor == nil || deps.Verdicts == nil) {
		return nil, errors.New("node mode needs a Mounter, a Statter, a Monitor and Verdicts")
	}
	if opts.ServesController() && (deps.OpenShare == nil || deps.Inventory == nil) {
		return nil, errors.New("controller mode needs OpenShare and an Inventory")
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Driver{opts: opts, deps: deps, locks: newKeyLocks(), node: newNodeState(), serving: make(chan struct{}),
		shares: locate.New(locate.OpenShare(deps.OpenShare), deps.ResolveDFS)}, nil
}

// Run serves gRPC on the endpoint until ctx ends, then stops gracefully.
// A node also follows the health store: it writes Events when a volume's
// health changes and remounts the mounts the Monitor finds wedged.
func (d *Driver) Run(ctx context.Context) error {
	if !d.opts.ServesNode() {
		return d.serve(ctx)
	}
	d.adoptStaged()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); d.follow(ctx) }()
	defer func() { cancel(); <-done }()
	return d.serve(ctx)
}

// follow runs the node's consumers of the health store until ctx ends.
func (d *Driver) follow(ctx context.Context) {
	var wg sync.WaitGroup
	events, remounts := d.deps.Verdicts.Subscribe(), d.deps.Verdicts.Subscribe()
	wg.Go(func() { _ = health.Consume(ctx, events, d.volumeHealthChanged()) })
	wg.Go(func() { d.remountWedged(ctx, remounts) })
	wg.Wait()
}

// volumeHealthChanged logs a volume whose state or reason changed and
// passes it on to Kubernetes with the pods and PVC that use the volume.
func (d *Driver) volumeHealthChanged() func(health.Update) {
	last := map[string]health.VolumeVerdict{}
	return func(u health.Update) {
		if u.Kind != health.KindVolume {
			return
		}
		old, seen := last[u.Name]
		if u.Gone {
			delete(last, u.Name)
			return
		}
		last[u.Name] = u.Volume
		if seen && old.State == u.Volume.State && old.Reason == u.Volume.Reason {
			return // only a remount request changed
		}
		v := u.Volume
		klog.InfoS("volume health changed", "volumeID", u.Name, "state", v.State, "reason", v.Reason, "message", v.Message)
		if d.deps.Events != nil {
			d.deps.Events.VolumeHealthChanged(u.Name, v, d.node.objects(u.Name))
		}
	}
}

// Serving is closed once the gRPC server serves on the endpoint.
func (d *Driver) Serving() <-chan struct{} { return d.serving }

func (d *Driver) serve(ctx context.Context) error {
	network, addr, err := ParseEndpoint(d.opts.Endpoint)
	if err != nil {
		return err
	}
	if network == "unix" {
		if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale socket %s: %w", addr, err)
		}
	}
	lis, err := (&net.ListenConfig{}).Listen(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.opts.Endpoint, err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(logInterceptor))
	csi.RegisterIdentityServer(srv, d)
	if d.opts.ServesController() {
		csi.RegisterControllerServer(srv, d)
	}
	if d.opts.ServesNode() {
		csi.RegisterNodeServer(srv, d)
		diag.Register(srv, d) // csi-smb status
	}
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	close(d.serving)
	klog.InfoS("serving CSI", "driver", d.opts.DriverName, "version", d.opts.Version, "mode", d.opts.Mode,
		"endpoint", d.opts.Endpoint)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpc server: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
		<-stopped
	}
	if err := <-errc; err != nil { // nil after a stop
		return fmt.Errorf("grpc server: %w", err)
	}
	return nil
}

// keyLocks are per-volume try-locks: a second concurrent operation on the
// same volume gets Aborted (the CSI spec's answer), never waits.
type keyLocks struct {
	mu   sync.Mutex
	held map[string]bool
}

func newKeyLocks() *keyLocks { return &keyLocks{held: map[string]bool{}} }

func (l *keyLocks) tryLock(key string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] {
		return nil, fmt.Errorf("%w: %s", errBusy, key)
	}
	l.held[key] = true
	return func() {
		l.mu.Lock()
		delete(l.held, key)
		l.mu.Unlock()
	}, nil
}

// withDefaultTimeout bounds ctx by d when the caller set no deadline.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
