package driver

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// NodeGetVolumeHealth reports the monitor's verdict on a staged volume
// (CSI v1.13): INACCESSIBLE when its server is unreachable or its mount is
// wedged, DEGRADED when the server is slow or the mount was just remounted,
// nothing when healthy. It does no I/O.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	if err := required("volume_id", req.GetVolumeId()); err != nil {
		return nil, toStatus(err)
	}
	path := req.GetVolumePublishPath()
	if path == "" {
		path = req.GetStagingTargetPath()
	}
	v, err := d.volumeVerdict(req.GetVolumeId(), path)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: volumeHealth(req.GetVolumeId(), v.State, v.Reason, v.Message)}, nil
}

// NodeGetStorageHealth reports every SMB server this node probes that is
// not healthy: STORAGE_UNREACHABLE or STORAGE_DEGRADED, one entry each.
func (d *Driver) NodeGetStorageHealth(context.Context, *csi.NodeGetStorageHealthRequest) (*csi.NodeGetStorageHealthResponse, error) {
	resp := &csi.NodeGetStorageHealthResponse{}
	verdicts := d.deps.Verdicts.Servers()
	for _, addr := range slices.Sorted(maps.Keys(verdicts)) {
		v := verdicts[addr]
		var st csi.StorageHealthErrorType
		switch v.State {
		case health.StateUnreachable:
			st = csi.StorageHealthErrorType_STORAGE_UNREACHABLE
		case health.StateDegraded:
			st = csi.StorageHealthErrorType_STORAGE_DEGRADED
		default:
			continue
		}
		resp.BackendHealth = append(resp.BackendHealth, &csi.NodeGetStorageHealthResponse_StorageBackendHealth{
			Status: st, Reason: v.Reason, Message: fmt.Sprintf("SMB server %s: %s", addr, v.Message),
		})
	}
	return resp, nil
}

// volumeHealth maps a verdict to the v1.13 message: no entries when healthy.
func volumeHealth(id string, s health.State, reason, msg string) *csi.VolumeHealth {
	vh := &csi.VolumeHealth{VolumeId: id}
	switch s {
	case health.StateUnreachable:
		vh.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: msg}}
		if reason == health.ReasonDirMissing {
			// The directory is gone, not renamed: its data is strongly
			// suspected lost (restore it from a backup or snapshot).
			vh.HealthStatuses = append(vh.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
				Status: csi.VolumeHealthErrorType_DATA_LOSS, Reason: reason, Message: msg})
		}
	case health.StateDegraded:
		vh.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{Status: csi.VolumeHealthErrorType_DEGRADED, Reason: reason, Message: msg}}
	}
	return vh
}
