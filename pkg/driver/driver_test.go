package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/locate"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/provision/provisiontest"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"

	"github.com/csi-smb/csi-smb/internal/testrun"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is a driver in "all" mode over fakes, with the real health
// store, Monitor and Inventory.
type harness struct {
	d         *Driver
	fs        *provisiontest.MemFS
	mounter   *mounttest.Fake
	statfsMu  sync.Mutex
	statfsFn  func(path string, st *unix.Statfs_t) error
	openErr   error
	opened    []auth.Credentials
	store     *health.Store
	monitor   *health.Monitor
	inventory *inventory.Inventory
}

// noProbes stands in for the prober: server verdicts are set in the store.
type noProbes struct{}

func (noProbes) Acquire(string, auth.Credentials) func() { return func() {} }

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{fs: provisiontest.New(), mounter: mounttest.New(), store: health.NewStore()}
	h.setStatfs(func(string, *unix.Statfs_t) error { return nil })
	statter := mount.NewStatter(func(p string, st *unix.Statfs_t) error {
		st.Bsize, st.Blocks, st.Bfree, st.Bavail, st.Files, st.Ffree = 4096, 100, 40, 30, 10, 4
		h.statfsMu.Lock()
		fn := h.statfsFn
		h.statfsMu.Unlock()
		return fn(p, st)
	})
	h.monitor = health.NewMonitor(statter, noProbes{}, h.store, health.MonitorOptions{})
	h.inventory = inventory.New(func(ctx context.Context, v volume.Volume, _ auth.Credentials) (bool, error) {
		return provision.Exists(ctx, h.fs, v)
	}, noProbes{}, h.store, inventory.Options{})
	deps := Deps{
		Mounter:   h.mounter,
		Statter:   statter,
		Monitor:   h.monitor,
		Verdicts:  h.store,
		Inventory: h.inventory,
		OpenShare: func(ctx context.Context, server, share string, c auth.Credentials) (provision.FS, func(), error) {
			h.opened = append(h.opened, c)
			if h.openErr != nil {
				return nil, nil, h.openErr
			}
			return h.fs, func() {}, nil
		},
		Now: func() time.Time { return time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC) },
	}
	opts := DefaultOptions()
	opts.Endpoint, opts.NodeID, opts.MountTimeout, opts.SMBTimeout, opts.StatsTimeout = "unix:///tmp/x.sock", "n1", time.Second, time.Second, 200*time.Millisecond
	d, err := New(opts, deps)
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	return h
}

// startMonitor runs the Monitor until the test ends.
func (h *harness) startMonitor(t *testing.T) { testrun.Background(t, h.monitor.Run) }

// setStatfs replaces what the fake statfs does.
func (h *harness) setStatfs(fn func(string, *unix.Statfs_t) error) {
	h.statfsMu.Lock()
	defer h.statfsMu.Unlock()
	h.statfsFn = fn
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

var (
	rwx   = mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	block = &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	creds = map[string]string{"username": "u", "password": "Pw-Unit-9x"}
)

func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{rwx},
		Parameters: map[string]string{"source": "//srv/share"}, Secrets: creds}
}

func code(err error) codes.Code { return status.Code(err) }

func TestCreateVolumeCodes(t *testing.T) {
	mod := func(f func(r *csi.CreateVolumeRequest)) *csi.CreateVolumeRequest {
		r := createReq("pvc-1")
		f(r)
		return r
	}
	tests := []struct {
		name    string
		req     *csi.CreateVolumeRequest
		openErr error
		want    codes.Code
	}{
		{"ok", createReq("pvc-1"), nil, codes.OK},
		{"no name", mod(func(r *csi.CreateVolumeRequest) { r.Name = "" }), nil, codes.InvalidArgument},
		{"long name", mod(func(r *csi.CreateVolumeRequest) { r.Name = string(make([]byte, 129)) }), nil, codes.InvalidArgument},
		{"no caps", mod(func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = nil }), nil, codes.InvalidArgument},
		{"block", mod(func(r *csi.CreateVolumeRequest) { r.VolumeCapabilities = []*csi.VolumeCapability{block} }), nil, codes.InvalidArgument},
		{"bad fstype", mod(func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
				AccessMode: rwx.AccessMode}}
		}), nil, codes.InvalidArgument},
		{"no access mode", mod(func(r *csi.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessType: rwx.AccessType}}
		}), nil, codes.InvalidArgument},
		{"clone", mod(func(r *csi.CreateVolumeRequest) {
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "x"}}}
		}), nil, codes.InvalidArgument},
		{"required > limit", mod(func(r *csi.CreateVolumeRequest) {
			r.CapacityRange = &csi.CapacityRange{RequiredBytes: 2, LimitBytes: 1}
		}), nil, codes.InvalidArgument},
		{"unknown param", mod(func(r *csi.CreateVolumeRequest) { r.Parameters["x"] = "y" }), nil, codes.InvalidArgument},
		{"bad source", mod(func(r *csi.CreateVolumeRequest) { r.Parameters["source"] = "srv/share" }), nil, codes.InvalidArgument},
		{"unknown secret key", mod(func(r *csi.CreateVolumeRequest) { r.Secrets = map[string]string{"user": "u"} }), nil, codes.InvalidArgument},
		{"password without user", mod(func(r *csi.CreateVolumeRequest) { r.Secrets = map[string]string{"password": "p"} }), nil, codes.InvalidArgument},
		{"wrong password", createReq("pvc-1"), fmt.Errorf("logon: %w", smb.ErrAuth), codes.PermissionDenied},
		{"share missing", createReq("pvc-1"), fmt.Errorf("tree: %w", smb.ErrShareNotFound), codes.InvalidArgument},
		{"server down", createReq("pvc-1"), fmt.Errorf("dial: %w", smb.ErrUnreachable), codes.Unavailable},
		{"deadline", createReq("pvc-1"), fmt.Errorf("dial: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.openErr = tc.openErr
			_, err := h.d.CreateVolume(context.Background(), tc.req)
			if code(err) != tc.want {
				t.Fatalf("code = %v (%v), want %v", code(err), err, tc.want)
			}
		})
	}
}

func TestCreateIdempotentAndConflict(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a, err := h.d.CreateVolume(ctx, createReq("pvc-1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.d.CreateVolume(ctx, createReq("pvc-1"))
	if err != nil || b.GetVolume().GetVolumeId() != a.GetVolume().GetVolumeId() {
		t.Fatalf("second create = %v, %v", b, err)
	}
	other := createReq("pvc-1")
	other.Parameters["onDelete"] = "retain"
	if _, err := h.d.CreateVolume(ctx, other); code(err) != codes.AlreadyExists {
		t.Fatalf("conflicting create: %v, want AlreadyExists", err)
	}
	if h.opened[0].Password != "Pw-Unit-9x" || h.opened[0].Username != "u" {
		t.Fatalf("credentials not passed through: %v", h.opened[0])
	}
}

func TestConcurrentCreateSameNameIsAborted(t *testing.T) {
	h := newHarness(t)
	entered, release := make(chan struct{}), make(chan struct{})
	h.d.deps.OpenShare = func(ctx context.Context, _, _ string, _ auth.Credentials) (provision.FS, func(), error) {
		close(entered)
		<-release
		return h.fs, func() {}, nil
	}
	h.d.shares = locate.New(locate.OpenShare(h.d.deps.OpenShare), nil)
	errc := make(chan error, 1)
	go func() {
		_, err := h.d.CreateVolume(context.Background(), createReq("pvc-1"))
		errc <- err
	}()
	<-entered
	_, err := h.d.CreateVolume(context.Background(), createReq("pvc-1"))
	close(release)
	if code(err) != codes.Aborted {
		t.Fatalf("second concurrent create: %v, want Aborted", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// reusedFS is a pooled share whose first use fails like a restarted server.
type reusedFS struct {
	*provisiontest.MemFS
	reused bool
}

func (r reusedFS) Reused() bool { return r.reused }

func TestRetryOnceOnDeadPooledSession(t *testing.T) {
	h := newHarness(t)
	calls := 0
	h.d.deps.OpenShare = func(ctx context.Context, _, _ string, _ auth.Credentials) (provision.FS, func(), error) {
		calls++
		m := provisiontest.New()
		if calls == 1 {
			m.Fail = func(string, string) error { return fmt.Errorf("read: %w", smb.ErrUnreachable) }
			return reusedFS{m, true}, func() {}, nil
		}
		return reusedFS{h.fs, false}, func() {}, nil
	}
	h.d.shares = locate.New(locate.OpenShare(h.d.deps.OpenShare), nil)
	if _, err := h.d.CreateVolume(context.Background(), createReq("pvc-1")); err != nil || calls != 2 {
		t.Fatalf("create = %v after %d opens, want success after 2", err, calls)
	}
	// A fresh session that fails is not retried.
	calls = 0
	h.d.deps.OpenShare = func(ctx context.Context, _, _ string, _ auth.Credentials) (provision.FS, func(), error) {
		calls++
		m := provisiontest.New()
		m.Fail = func(string, string) error { return fmt.Errorf("read: %w", smb.ErrUnreachable) }
		return reusedFS{m, false}, func() {}, nil
	}
	h.d.shares = locate.New(locate.OpenShare(h.d.deps.OpenShare), nil)
	if _, err := h.d.CreateVolume(context.Background(), createReq("pvc-2")); code(err) != codes.Unavailable || calls != 1 {
		t.Fatalf("create = %v after %d opens, want Unavailable after 1", err, calls)
	}
}

func TestDeleteVolume(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := h.volume(t).GetVolumeId()
	tests := []struct {
		name    string
		id      string
		openErr error
		want    codes.Code
	}{
		{"no id", "", nil, codes.InvalidArgument},
		{"not ours", "fake-vol-id-1", nil, codes.OK},
		{"server down", id, smb.ErrUnreachable, codes.Unavailable},
		{"share gone", id, smb.ErrShareNotFound, codes.OK},
		{"ok", id, nil, codes.OK},
		{"again", id, nil, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.openErr = tc.openErr
			_, err := h.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: tc.id, Secrets: creds})
			if code(err) != tc.want {
				t.Fatalf("code = %v (%v), want %v", code(err), err, tc.want)
			}
		})
	}
	if h.fs.Exists("pvc-1") {
		t.Fatal("directory left after delete")
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := h.volume(t).GetVolumeId()
	req := func(id string, caps ...*csi.VolumeCapability) *csi.ValidateVolumeCapabilitiesRequest {
		return &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps, Secrets: creds}
	}
	if _, err := h.d.ValidateVolumeCapabilities(ctx, req("")); code(err) != codes.InvalidArgument {
		t.Fatalf("no id: %v", err)
	}
	if _, err := h.d.ValidateVolumeCapabilities(ctx, req(id)); code(err) != codes.InvalidArgument {
		t.Fatalf("no caps: %v", err)
	}
	if _, err := h.d.ValidateVolumeCapabilities(ctx, req("fake", rwx)); code(err) != codes.NotFound {
		t.Fatalf("malformed id: %v", err)
	}
	if r, err := h.d.ValidateVolumeCapabilities(ctx, req(id, rwx)); err != nil || r.GetConfirmed() == nil {
		t.Fatalf("rwx: %v %v", r, err)
	}
	if r, err := h.d.ValidateVolumeCapabilities(ctx, req(id, block)); err != nil || r.GetConfirmed() != nil || r.GetMessage() == "" {
		t.Fatalf("block must not be confirmed: %v %v", r, err)
	}
	h.openErr = smb.ErrAuth // no usable credentials: capabilities are still judged
	if r, err := h.d.ValidateVolumeCapabilities(ctx, req(id, rwx)); err != nil || r.GetConfirmed() == nil {
		t.Fatalf("without access: %v %v", r, err)
	}
	h.openErr = nil
	if _, err := h.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: creds}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.ValidateVolumeCapabilities(ctx, req(id, rwx)); code(err) != codes.NotFound {
		t.Fatalf("deleted: %v, want NotFound", err)
	}
}

func TestErrnoCodes(t *testing.T) {
	for errno, want := range map[syscall.Errno]codes.Code{
		syscall.EACCES: codes.PermissionDenied, syscall.ENOENT: codes.NotFound, syscall.EHOSTDOWN: codes.Unavailable,
		syscall.ECONNREFUSED: codes.Unavailable, syscall.EINVAL: codes.InvalidArgument, syscall.EOPNOTSUPP: codes.FailedPrecondition,
		syscall.E2BIG: codes.Internal,
	} {
		err := &mount.HelperError{Output: fmt.Sprintf("mount error(%d): x", int(errno))}
		if got := codeOf(fmt.Errorf("wrap: %w", err)); got != want {
			t.Errorf("errno %v -> %v, want %v", errno, got, want)
		}
	}
	if got := codeOf(fmt.Errorf("%w: %w", mount.ErrTimeout, context.DeadlineExceeded)); got != codes.Unavailable {
		t.Errorf("killed mount helper -> %v, want Unavailable (nothing is left in progress)", got)
	}
	if got := codeOf(errors.New("x")); got != codes.Internal {
		t.Errorf("unknown -> %v", got)
	}
}

func TestOptionsValidate(t *testing.T) {
	good := DefaultOptions()
	good.Mode, good.NodeID = ModeNode, "n"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Options){
		"mode":      func(o *Options) { o.Mode = "both" },
		"node id":   func(o *Options) { o.NodeID = "" },
		"name":      func(o *Options) { o.DriverName = "-bad" },
		"endpoint":  func(o *Options) { o.Endpoint = "http://x" },
		"no socket": func(o *Options) { o.Endpoint = "unix://" },
		"timeout":   func(o *Options) { o.StatsTimeout = 0 },
	} {
		o := good
		mod(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: invalid options accepted", name)
		}
	}
	for ep, want := range map[string]string{"unix:///a/b.sock": "/a/b.sock", "unix:/a.sock": "/a.sock", "tcp://127.0.0.1:9": "127.0.0.1:9"} {
		if _, addr, err := ParseEndpoint(ep); err != nil || addr != want {
			t.Errorf("ParseEndpoint(%q) = %q %v", ep, addr, err)
		}
	}
}

func TestLegacyConditionRoundTrip(t *testing.T) {
	resp := statsResponse(mount.Usage{TotalBytes: 1}, true, "ServerUnreachable: x")
	abnormal, msg, ok := LegacyCondition(resp, legacyStatsConditionField)
	if !ok || !abnormal || msg != "ServerUnreachable: x" {
		t.Fatalf("decoded %v %q %v", abnormal, msg, ok)
	}
	healthy := statsResponse(mount.Usage{}, false, "")
	if abnormal, _, ok := LegacyCondition(healthy, legacyStatsConditionField); !ok || abnormal {
		t.Fatal("healthy response must carry abnormal=false")
	}
	if _, _, ok := LegacyCondition(&csi.NodeGetVolumeStatsResponse{}, legacyStatsConditionField); ok {
		t.Fatal("no condition set, but one decoded")
	}
}

func staging(t *testing.T) (string, string) {
	d := t.TempDir()
	return filepath.Join(d, "staging"), filepath.Join(d, "pods", "target")
}
