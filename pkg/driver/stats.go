package driver

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// NodeGetVolumeStats answers from the monitor's background statfs: it never
// touches the mount, so it answers at once even when the server is dead. A
// dead mount is a success with an abnormal volume condition (kubelet drops
// volumes whose stats call errors) and the last usage that was measured.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	if err := required("volume_path", req.GetVolumePath()); err != nil {
		return nil, toStatus(err)
	}
	v, err := d.volumeVerdict(req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, toStatus(err)
	}
	bad := abnormal(v)
	msg := conditionMessage(v)
	if !v.Check.OK && !v.UsageAt.IsZero() {
		msg += fmt.Sprintf(" (usage is stale: measured %s)", v.UsageAt.UTC().Format("15:04:05Z"))
	}
	if bad {
		klog.V(2).InfoS("volume abnormal", "volumeID", req.GetVolumeId(), "path", req.GetVolumePath(), "reason", v.Reason, "message", v.Message)
	}
	return statsResponse(v.Usage, bad, msg), nil
}

// volumeVerdict finds the monitor's verdict on the volume at path. A volume
// the monitor does not know but that is mounted there (staged before this
// plugin restarted) is adopted: watched from now on, without a remount.
func (d *Driver) volumeVerdict(id, path string) (health.VolumeVerdict, error) {
	if path != "" {
		path = filepath.Clean(path)
	}
	if v, ok := d.deps.Verdicts.Volume(id); ok && (path == "" || d.node.knowsPath(id, path)) {
		return v, nil
	}
	if path == "" {
		return health.VolumeVerdict{}, fmt.Errorf("%w: volume %s is not staged on this node", errNotFound, id)
	}
	info, ok, err := d.deps.Mounter.Find(path)
	if err != nil {
		return health.VolumeVerdict{}, err
	}
	if !ok || (info.FsType != "cifs" && info.FsType != "smb3") {
		return health.VolumeVerdict{}, fmt.Errorf("%w: volume %s is not mounted on %s", errNotFound, id, path)
	}
	if v, ok := d.deps.Verdicts.Volume(id); ok {
		return v, nil // a path the volume gained behind our back (bind mount by another tool)
	}
	if err := d.adopt(id, info); err != nil {
		return health.VolumeVerdict{}, err
	}
	v, _ := d.deps.Verdicts.Volume(id)
	return v, nil
}

// serverOfMount is the probe address of a mounted volume: from its ID, or
// from the mount source (//server/share/...) of a static volume.
func serverOfMount(id, source string) (string, error) {
	if v, err := volume.ParseID(id); err == nil {
		return serverAddr(v.Source), nil
	}
	src, err := volume.ParseSource("mount source", strings.ReplaceAll(source, `\`, "/"))
	if err != nil {
		return "", fmt.Errorf("%w: volume %s: %w", errNotFound, id, err)
	}
	return serverAddr(src), nil
}

func statsResponse(u mount.Usage, abnormal bool, msg string) *csi.NodeGetVolumeStatsResponse {
	resp := &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: u.TotalBytes, Available: u.AvailableBytes, Used: u.UsedBytes},
	}}
	if u.TotalInodes > 0 {
		resp.Usage = append(resp.Usage, &csi.VolumeUsage{Unit: csi.VolumeUsage_INODES, Total: u.TotalInodes, Available: u.FreeInodes, Used: u.UsedInodes})
	}
	setLegacyCondition(resp, legacyStatsConditionField, abnormal, msg)
	return resp
}
