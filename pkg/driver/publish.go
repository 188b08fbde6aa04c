package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/mount"
)

func validatePublish(req *csi.NodePublishVolumeRequest) error {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return err
	}
	if err := validatePath("target_path", req.GetTargetPath()); err != nil {
		return err
	}
	if err := validatePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	return validateCapability(req.GetVolumeCapability())
}

// NodePublishVolume bind-mounts the staged volume on the pod's target path,
// read-only when asked.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if err := validatePublish(req); err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("id/" + req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	staging, target := filepath.Clean(req.GetStagingTargetPath()), filepath.Clean(req.GetTargetPath())
	readOnly := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	stage, ok, err := d.deps.Mounter.Find(staging)
	if err != nil {
		return nil, toStatus(err)
	}
	if !ok {
		return nil, toStatus(fmt.Errorf("%w: volume %s: nothing mounted on %s", errNotStaged, req.GetVolumeId(), staging))
	}
	pods := kube.ObjectsFromContext(req.GetVolumeContext())
	if err := d.checkPublished(req, stage, target, readOnly); err != nil {
		if errors.Is(err, errAlreadyPublished) {
			d.node.publish(req.GetVolumeId(), target, readOnly, pods)
			d.recordPublish(req.GetVolumeId(), target, readOnly, pods)
			return &csi.NodePublishVolumeResponse{}, nil
		}
		return nil, toStatus(err)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, toStatus(fmt.Errorf("create target path: %w", err))
	}
	mctx, cancel := context.WithTimeout(ctx, d.opts.MountTimeout)
	defer cancel()
	if err := d.deps.Mounter.BindMount(mctx, staging, target, readOnly); err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: bind mount on %s: %w", req.GetVolumeId(), target, err))
	}
	d.node.publish(req.GetVolumeId(), target, readOnly, pods)
	d.recordPublish(req.GetVolumeId(), target, readOnly, pods)
	klog.InfoS("volume published", "volumeID", req.GetVolumeId(), "target", target, "readOnly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

var errAlreadyPublished = errors.New("already published")

// checkPublished enforces single-writer and detects an existing publish:
// errAlreadyPublished when target already shows the staged volume the same
// way, errIncompatible when it shows something else.
func (d *Driver) checkPublished(req *csi.NodePublishVolumeRequest, stage mount.Info, target string, readOnly bool) error {
	all, err := d.deps.Mounter.List()
	if err != nil {
		return err
	}
	same := func(i mount.Info) bool {
		return i.Major == stage.Major && i.Minor == stage.Minor && i.Root == stage.Root
	}
	var atTarget *mount.Info
	others := 0
	for i := range all {
		m := all[i]
		switch {
		case m.MountPoint == target:
			atTarget = &all[i]
		case m.MountPoint != stage.MountPoint && same(m):
			others++
		}
	}
	if atTarget != nil {
		if same(*atTarget) && atTarget.ReadOnly() == readOnly {
			return errAlreadyPublished
		}
		return fmt.Errorf("%w: %s", errIncompatible, target)
	}
	if req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER && others > 0 {
		return fmt.Errorf("%w: volume %s", errSingleWriter, req.GetVolumeId())
	}
	return nil
}

// NodeUnpublishVolume unmounts the target path (also when the server is
// dead) and removes the directory it created.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	if err := validatePath("target_path", req.GetTargetPath()); err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("id/" + req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	target := filepath.Clean(req.GetTargetPath())
	if err := d.deps.Mounter.Unmount(ctx, target); err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: %w", req.GetVolumeId(), err))
	}
	d.node.unpublish(req.GetVolumeId(), target)
	d.forgetPublish(target)
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, toStatus(fmt.Errorf("volume %s: remove target path: %w", req.GetVolumeId(), err))
	}
	klog.InfoS("volume unpublished", "volumeID", req.GetVolumeId(), "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
