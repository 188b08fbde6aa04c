package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// NodeGetInfo returns the node ID; SMB volumes have no topology.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeGetCapabilities advertises staging, stats, the legacy volume
// condition (removed from spec v1.13, still read by kubelets <= 1.36),
// single-node multi-writer, fsGroup via VOLUME_MOUNT_GROUP and the v1.13
// volume and storage health RPCs.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		legacyNodeVolumeCondition,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// resolveVolume finds the SMB location of a volume: from its ID when this
// driver made it, else from the volume context of a static PV.
func resolveVolume(id string, volCtx map[string]string) (volume.Volume, error) {
	v, err := volume.ParseID(id)
	if err == nil {
		return v, nil
	}
	if _, ok := volCtx[volume.ParamSource]; ok {
		return volume.StaticVolume(volCtx)
	}
	return volume.Volume{}, fmt.Errorf("%w: %s: not a volume id of this driver and no source in the volume context", errNotFound, id)
}

// stageOptions merges our defaults with the StorageClass mountOptions (user
// wins), ro for reader-only modes, and the fsGroup as gid= with group-writable
// modes unless the user set them.
func stageOptions(c *csi.VolumeCapability) ([]string, error) {
	user := append([]string(nil), c.GetMount().GetMountFlags()...)
	opts, err := mount.MergeOptions(mount.DefaultCIFSOptions, user)
	if err != nil {
		return nil, err
	}
	if readOnlyMode(c) && !mount.HasOption(opts, "ro") {
		opts = append(opts, "ro")
	}
	group := c.GetMount().GetVolumeMountGroup()
	if group == "" {
		return opts, nil
	}
	if _, err := strconv.ParseUint(group, 10, 32); err != nil {
		return nil, fmt.Errorf("%w: volume_mount_group %q is not a numeric gid", errInvalid, group)
	}
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, "gid="); ok && v != group {
			return nil, fmt.Errorf("%w: mountOptions gid=%s conflicts with the pod's fsGroup %s", errInvalid, v, group)
		}
	}
	if !mount.HasOption(opts, "gid") {
		opts = append(opts, "gid="+group)
	}
	for _, m := range []string{"dir_mode", "file_mode"} {
		if !mount.HasOption(opts, m) {
			opts = append(opts, m+"=0775")
		}
	}
	return opts, nil
}

func validateStage(req *csi.NodeStageVolumeRequest) error {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return err
	}
	if err := validatePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return err
	}
	return validateCapability(req.GetVolumeCapability())
}

// NodeStageVolume mounts the volume's directory with kernel cifs on the
// staging path. Already staged and healthy: success. Staged but broken
// (statfs fails or hangs): unmounted and mounted again.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	if err := validateStage(req); err != nil {
		return nil, toStatus(err)
	}
	vol, err := resolveVolume(req.GetVolumeId(), req.GetVolumeContext())
	if err != nil {
		return nil, toStatus(err)
	}
	creds, err := credentials(req.GetSecrets())
	if err != nil {
		return nil, toStatus(err)
	}
	consistency, err := volume.ConsistencyFirst(req.GetVolumeContext())
	if err != nil {
		return nil, toStatus(err)
	}
	opts, err := stageOptions(req.GetVolumeCapability())
	if err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("id/" + req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	staging, source := filepath.Clean(req.GetStagingTargetPath()), vol.Location().String()
	st := &staged{vol: vol, staging: staging, source: source, options: opts, creds: creds,
		claim: kube.ObjectsFromContext(req.GetVolumeContext()), dfs: d.dfsTargets(ctx, vol, creds), consistency: consistency}
	done, err := d.checkStaged(ctx, staging, source)
	if err != nil {
		return nil, toStatus(err)
	}
	if !done && st.dfs != nil {
		// Mount the DFS path itself (a mount of a resolved target would lose
		// the kernel's failover), after fencing the targets known dead so
		// the kernel's first choice answers.
		release := d.deps.DFS.Acquire(st.dfs, creds)
		defer release() // the Monitor holds its own probes from watch on
		pctx, cancel := context.WithTimeout(ctx, prepareWait)
		prepared, err := d.deps.DFS.Prepare(pctx, st.dfs)
		cancel()
		defer prepared() // after watch has added the volume
		if err != nil {
			klog.ErrorS(err, "cannot fence the dead DFS targets before a mount", "volumeID", req.GetVolumeId())
		}
	}
	if !done {
		if err := os.MkdirAll(staging, 0o750); err != nil {
			return nil, toStatus(fmt.Errorf("create staging path: %w", err))
		}
		mctx, cancel := context.WithTimeout(ctx, d.opts.MountTimeout)
		err := d.deps.Mounter.MountCIFS(mctx, source, staging, opts, creds)
		cancel()
		if err != nil {
			return nil, toStatus(fmt.Errorf("volume %s: mount %s: %w", req.GetVolumeId(), source, err))
		}
		klog.InfoS("volume staged", "volumeID", req.GetVolumeId(), "source", source, "staging", staging, "options", strings.Join(opts, ","))
	}
	d.node.put(req.GetVolumeId(), st)
	d.watch(ctx, req.GetVolumeId(), st)
	return &csi.NodeStageVolumeResponse{}, nil
}

// checkStaged inspects the staging path: done when a healthy mount of
// source is there; a broken one is unmounted so the caller mounts again.
func (d *Driver) checkStaged(ctx context.Context, staging, source string) (bool, error) {
	info, ok, err := d.deps.Mounter.Find(staging)
	if err != nil || !ok {
		return false, err
	}
	if !sameSource(info.Source, source) {
		return false, fmt.Errorf("%w: %s has %s mounted, not %s", errIncompatible, staging, info.Source, source)
	}
	sctx, cancel := context.WithTimeout(ctx, d.opts.StatsTimeout)
	res, err := d.deps.Statter.Statfs(sctx, staging)
	cancel()
	if err == nil && res.Err == nil {
		return true, nil
	}
	klog.InfoS("staged mount is broken; remounting", "staging", staging, "source", source, "reason", errors.Join(err, res.Err))
	if err := d.deps.Mounter.Unmount(ctx, staging); err != nil {
		return false, err
	}
	return false, nil
}

func sameSource(a, b string) bool {
	norm := func(s string) string { return strings.TrimSuffix(strings.ReplaceAll(s, `\`, "/"), "/") }
	return strings.EqualFold(norm(a), norm(b))
}

// NodeUnstageVolume unmounts the staging path; it works on dead mounts.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	if err := validatePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, toStatus(err)
	}
	unlock, err := d.locks.tryLock("id/" + req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	defer unlock()
	staging := filepath.Clean(req.GetStagingTargetPath())
	unmount := d.deps.Mounter.Unmount
	if v, ok := d.deps.Verdicts.Volume(req.GetVolumeId()); ok && serverDown(d.deps.Verdicts, v.Server) {
		// Nothing can be flushed to a server that does not answer; a clean
		// unmount would only wait for a tree disconnect (and be killed after
		// its 5 s budget). A probe that just missed counts too: a killed
		// server is in that state until its redial is refused, and a
		// kubelet unstaging right after the kill would otherwise wait.
		unmount = d.deps.Mounter.Detach
	}
	d.deps.Monitor.Remove(req.GetVolumeId())
	if d.deps.DFS != nil {
		d.deps.DFS.Remove(req.GetVolumeId())
	}
	if err := unmount(ctx, staging); err != nil {
		return nil, toStatus(fmt.Errorf("volume %s: %w", req.GetVolumeId(), err))
	}
	d.node.drop(req.GetVolumeId())
	klog.InfoS("volume unstaged", "volumeID", req.GetVolumeId(), "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// serverDown: the server is known unreachable, or a probe of it has just
// missed.
func serverDown(verdicts Verdicts, addr string) bool {
	sv, ok := verdicts.Server(addr)
	return ok && (sv.State == health.StateUnreachable || sv.Reason == health.ReasonProbeMissed)
}
