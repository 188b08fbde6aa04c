package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"
)

// GetPluginInfo returns the driver name and the build's version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.opts.DriverName, VendorVersion: d.opts.Version}, nil
}

// GetPluginCapabilities advertises the controller service when it runs.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	var caps []*csi.PluginCapability
	if d.opts.ServesController() {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
			Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE},
		}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe is ready once the server is serving and, for the node, the mount
// helpers and the mount table are usable.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	err := d.Ready()
	if err != nil && !errors.Is(err, errNotServing) {
		klog.ErrorS(err, "node not ready")
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(err == nil)}, nil
}

// errNotServing: the gRPC server has not started yet.
var errNotServing = errors.New("CSI server not serving yet")

// Ready is what Probe and /healthz report: nil once the gRPC server serves
// and, for the node, the mount helpers and the mount table are usable.
func (d *Driver) Ready() error {
	d.mu.Lock()
	ready := d.ready
	d.mu.Unlock()
	if !ready {
		return errNotServing
	}
	if d.opts.ServesNode() {
		if err := d.deps.Mounter.Check(); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}
