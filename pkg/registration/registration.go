// Package registration registers the node plugin with the kubelet itself,
// as node-driver-registrar does from a second container: it serves the
// kubelet's plugin registration API (pluginregistration/v1) on a socket in
// the kubelet's plugins_registry directory. The kubelet finds the socket,
// asks GetInfo for the driver's name and CSI endpoint, registers the driver
// (the CSINode entry) and reports the outcome with NotifyRegistrationStatus.
// Removing the socket at stop makes the kubelet deregister the driver.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Options say where to register and what.
type Options struct {
	Dir        string // the kubelet's plugins_registry directory
	DriverName string
	// Endpoint is the path of the driver's CSI socket as the kubelet sees
	// it (on the host), e.g. /var/lib/kubelet/plugins/<driver>/csi.sock.
	Endpoint string
	// StopTimeout bounds the graceful stop; default 5 s.
	StopTimeout time.Duration
}

// Status is what the kubelet last reported about the registration.
type Status struct {
	Notified   bool   // the kubelet has reported at least once
	Registered bool   // its last report said registered
	Error      string // its last report's error, if any
}

// Server serves the registration API; New only builds it.
type Server struct {
	registerapi.UnsafeRegistrationServer
	opts   Options
	socket string

	mu     sync.Mutex
	status Status
}

// New checks the options.
func New(o Options) (*Server, error) {
	switch {
	case o.Dir == "":
		return nil, errors.New("registration: no plugins_registry directory")
	case !filepath.IsAbs(o.Dir):
		return nil, fmt.Errorf("registration: directory %q is not absolute", o.Dir)
	case o.DriverName == "":
		return nil, errors.New("registration: no driver name")
	case !filepath.IsAbs(o.Endpoint):
		return nil, fmt.Errorf("registration: CSI socket path %q is not absolute", o.Endpoint)
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 5 * time.Second
	}
	return &Server{opts: o, socket: filepath.Join(o.Dir, o.DriverName+"-reg.sock")}, nil
}

// Socket is the registration socket's path.
func (s *Server) Socket() string { return s.socket }

// Status is the kubelet's last report.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Check is nil while the registration can work: the socket is in place
// and the kubelet, if it has answered, registered the driver. Not having
// been asked yet is fine (the kubelet may start later).
func (s *Server) Check() error {
	if _, err := os.Lstat(s.socket); err != nil {
		return fmt.Errorf("registration socket: %w", err)
	}
	if st := s.Status(); st.Notified && !st.Registered {
		return fmt.Errorf("kubelet refused the registration: %s", st.Error)
	}
	return nil
}

// Run serves until ctx ends, then removes the socket, so the kubelet
// deregisters the driver, and stops within StopTimeout.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.opts.Dir, 0o750); err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	// A socket left by an earlier run would make the kubelet dial a dead
	// listener; a new one replaces it.
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("registration: remove stale socket: %w", err)
	}
	lis, err := (&net.ListenConfig{}).Listen(ctx, "unix", s.socket)
	if err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, s)
	klog.InfoS("serving kubelet plugin registration", "socket", s.socket, "driver", s.opts.DriverName,
		"endpoint", s.opts.Endpoint)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		_ = os.Remove(s.socket)
		return fmt.Errorf("registration: %w", err)
	case <-ctx.Done():
	}
	// The socket goes first: the kubelet's watcher sees the removal and
	// deregisters the plugin even if a call is still in flight.
	rmErr := os.Remove(s.socket)
	if errors.Is(rmErr, os.ErrNotExist) {
		rmErr = nil
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(s.opts.StopTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		srv.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return errors.Join(fmt.Errorf("registration: %w", err), rmErr)
	}
	if rmErr != nil {
		return fmt.Errorf("registration: remove socket: %w", rmErr)
	}
	return nil
}

// GetInfo tells the kubelet who we are and where our CSI socket is.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.opts.DriverName,
		Endpoint:          s.opts.Endpoint,
		SupportedVersions: []string{"1.0.0"}, // the CSI versions the kubelet may speak to us
	}, nil
}

// NotifyRegistrationStatus records the kubelet's verdict.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.mu.Lock()
	s.status = Status{Notified: true, Registered: st.GetPluginRegistered(), Error: st.GetError()}
	s.mu.Unlock()
	if st.GetPluginRegistered() {
		klog.InfoS("kubelet registered the driver", "driver", s.opts.DriverName)
	} else {
		klog.ErrorS(errors.New(st.GetError()), "kubelet refused the driver's registration", "driver", s.opts.DriverName)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
