package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// ControllerGetCapabilities advertises what the controller does.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		legacyControllerVolumeCondition, // external-health-monitor needs it to start
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

func validateCreate(req *csi.CreateVolumeRequest) error {
	if err := required("name", req.GetName()); err != nil {
		return err
	}
	if len(req.GetName()) > maxNameLen {
		return fmt.Errorf("%w: name is longer than %d bytes", errInvalid, maxNameLen)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return err
	}
	if req.GetVolumeContentSource() != nil {
		return fmt.Errorf("%w: volume_content_source (cloning and snapshots)", errUnsupported)
	}
	if len(req.GetMutableParameters()) > 0 {
		return fmt.Errorf("%w: mutable_parameters (VolumeAttributesClass)", errUnsupported)
	}
	if r := req.GetCapacityRange(); r != nil {
		if r.GetRequiredBytes() < 0 || r.GetLimitBytes() < 0 {
			return fmt.Errorf("%w: negative capacity_range", errInvalid)
		}
		if r.GetLimitBytes() > 0 && r.GetRequiredBytes() > r.GetLimitBytes() {
			return fmt.Errorf("%w: capacity_range required_bytes %d > limit_bytes %d", errInvalid, r.GetRequiredBytes(), r.GetLimitBytes())
		}
	}
	return nil
}

// CreateVolume makes a directory for the volume over SMB2: no kernel mount,
// no privileges. Same name and parameters: the same volume again.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if err := validateCreate(req); err != nil {
		return nil, toStatus(err)
	}
	params, err := volume.ParseCreateParams(req.GetParameters())
	if err != nil {
		return nil, toStatus(err)
	}
	vol, err := params.Volume(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	creds, err := credentials(req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("name/" + req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	ctx, cancel := withDefaultTimeout(ctx, d.opts.SMBTimeout)
	defer cancel()
	var rec provision.Record
	err = d.shares.With(ctx, vol.Source, creds, func(fsys provision.FS) (err error) {
		rec, err = provision.Create(ctx, fsys, provision.Request{
			Name: req.GetName(), Volume: vol,
			RequiredBytes: req.GetCapacityRange().GetRequiredBytes(), LimitBytes: req.GetCapacityRange().GetLimitBytes(),
		}, d.deps.Now())
		return err
	})
	if errors.Is(err, smb.ErrShareNotFound) {
		err = fmt.Errorf("%w: parameter source %s: %w", volume.ErrInvalid, vol.Source, err)
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: %w", req.GetName(), err))
	}
	klog.InfoS("volume created", "name", req.GetName(), "volumeID", rec.VolumeID, "location", vol.Location())
	d.deps.Inventory.Track(rec.VolumeID, vol, rec.CapacityBytes, creds)
	volCtx := vol.Context()
	if v := req.GetParameters()[volume.ParamDFSFailover]; v != "" {
		volCtx[volume.ParamDFSFailover] = v // the node reads it back
	}
	// The node names the PVC in its health events.
	for _, k := range []string{volume.MetaPVCName, volume.MetaPVCNamespace} {
		if v := req.GetParameters()[k]; v != "" {
			volCtx[k] = v
		}
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: rec.VolumeID, CapacityBytes: rec.CapacityBytes, VolumeContext: volCtx,
	}}, nil
}

// DeleteVolume applies the volume's onDelete policy. An ID this driver did
// not make, or a volume that is gone, is already deleted: success.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	vol, err := volume.ParseID(req.GetVolumeId())
	if err != nil {
		klog.InfoS("delete of a volume id this driver does not own: nothing to do", "volumeID", req.GetVolumeId(), "reason", err)
		return &csi.DeleteVolumeResponse{}, nil
	}
	creds, err := credentials(req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("id/" + req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	ctx, cancel := withDefaultTimeout(ctx, d.opts.SMBTimeout)
	defer cancel()
	var out provision.Outcome
	var where string
	err = d.shares.With(ctx, vol.Source, creds, func(fsys provision.FS) (err error) {
		out, where, err = provision.Delete(ctx, fsys, vol, d.deps.Now())
		return err
	})
	if errors.Is(err, smb.ErrShareNotFound) {
		klog.InfoS("share of volume is gone: nothing to delete", "volumeID", req.GetVolumeId())
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: %w", req.GetVolumeId(), err))
	}
	d.deps.Inventory.Forget(req.GetVolumeId())
	klog.InfoS("volume deleted", "volumeID", req.GetVolumeId(), "directory", vol.Location(), "outcome", out, "archivedAs", where)
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms file-system capabilities of an
// existing volume. Existence is checked over SMB when the request carries
// credentials (or the server allows anonymous access).
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, toStatus(fmt.Errorf("%w: volume_capabilities", errRequired))
	}
	vol, err := volume.ParseID(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := d.checkExists(ctx, vol, req.GetSecrets()); err != nil {
		return nil, toStatus(err)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters(),
	}}, nil
}

// checkExists returns errNotFound when the volume's directory is missing. If
// the server refuses the session it cannot tell and returns nil.
func (d *Driver) checkExists(ctx context.Context, vol volume.Volume, secrets map[string]string) error {
	creds, err := credentials(secrets)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, d.opts.SMBTimeout)
	defer cancel()
	var ok bool
	err = d.shares.With(ctx, vol.Source, creds, func(fsys provision.FS) (err error) {
		ok, err = provision.Exists(ctx, fsys, vol)
		return err
	})
	switch {
	case errors.Is(err, smb.ErrShareNotFound):
		return fmt.Errorf("%w: %s", errNotFound, vol.Location())
	case errors.Is(err, smb.ErrAuth), errors.Is(err, smb.ErrAccessDenied):
		klog.V(4).InfoS("cannot check volume existence without credentials", "volume", vol, "err", err)
		return nil
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: directory %s does not exist", errNotFound, vol.Location())
	}
	return nil
}
