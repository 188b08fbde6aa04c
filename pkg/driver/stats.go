package driver

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/mount"
)

// errnoENOTSUPP is the kernel-internal ENOTSUPP (524) that cifs on 5.1-5.12
// returns when a session runs out of credits ("Unknown error 524").
const errnoENOTSUPP = syscall.Errno(524)

// NodeGetVolumeStats answers within StatsTimeout even when the mount is
// dead: usage comes from a bounded, single-flight statfs, or from the last
// good one, and a failure is a success with an abnormal volume condition
// (kubelet drops volumes whose stats call errors).
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	if err := required("volume_path", req.GetVolumePath()); err != nil {
		return nil, toStatus(err)
	}
	info, ok, err := d.deps.Mounter.Find(req.GetVolumePath())
	if err != nil {
		return nil, toStatus(err)
	}
	if !ok || (info.FsType != "cifs" && info.FsType != "smb3") {
		return nil, toStatus(fmt.Errorf("%w: volume %s is not mounted on %s", errNotFound, req.GetVolumeId(), req.GetVolumePath()))
	}
	sctx, cancel := context.WithTimeout(ctx, d.opts.StatsTimeout)
	res, err := d.deps.Statter.Statfs(sctx, info.MountPoint)
	cancel()
	if err == nil && res.Err == nil {
		return statsResponse(res.Usage, false, ""), nil
	}
	reason := describeStatFailure(errors.Join(err, res.Err), d.opts.StatsTimeout)
	klog.V(2).InfoS("volume abnormal", "volumeID", req.GetVolumeId(), "path", req.GetVolumePath(), "reason", reason)
	if last, ok := d.deps.Statter.Last(info.MountPoint); ok && last.Err == nil {
		return statsResponse(last.Usage, true, reason+fmt.Sprintf(" (usage is from %s)", last.Finished.UTC().Format("15:04:05Z"))), nil
	}
	return statsResponse(mount.Usage{}, true, reason), nil
}

func statsResponse(u mount.Usage, abnormal bool, msg string) *csi.NodeGetVolumeStatsResponse {
	resp := &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: u.TotalBytes, Available: u.AvailableBytes, Used: u.UsedBytes},
	}}
	if u.TotalInodes > 0 {
		resp.Usage = append(resp.Usage, &csi.VolumeUsage{Unit: csi.VolumeUsage_INODES, Total: u.TotalInodes, Available: u.FreeInodes, Used: u.UsedInodes})
	}
	if !abnormal {
		msg = "volume is healthy"
	}
	setLegacyCondition(resp, legacyStatsConditionField, abnormal, msg)
	return resp
}

// describeStatFailure names what a failed or hung statfs means on cifs.
func describeStatFailure(err error, timeout time.Duration) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, mount.ErrStatTimeout):
		return fmt.Sprintf("MountStalled: statfs did not return within %v; the SMB server is frozen or unreachable", timeout)
	case errors.As(err, &errno):
		switch errno {
		case syscall.EHOSTDOWN:
			return "ServerUnreachable: host is down (EHOSTDOWN): the kernel is reconnecting to the SMB server"
		case errnoENOTSUPP, syscall.EDEADLK:
			return fmt.Sprintf("MountStalled: %v: the SMB session ran out of credits and is being re-established", errno)
		case syscall.ESTALE:
			return "MountStalled: stale file handle (ESTALE): the share changed under the mount"
		case syscall.ENOTCONN:
			return "MountStalled: not connected (ENOTCONN)"
		case syscall.EIO:
			return "MountStalled: I/O error (EIO) from the SMB server"
		case syscall.EACCES:
			return "AccessDenied: permission denied (EACCES): credentials or share permissions changed"
		}
	}
	return "MountStalled: " + err.Error()
}
