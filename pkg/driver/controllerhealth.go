package driver

import (
	"context"
	"fmt"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Inventory is the controller's view of its volumes (pkg/inventory).
type Inventory interface {
	Track(id string, v volume.Volume, capacity int64, creds auth.Credentials)
	Forget(id string)
	Get(id string) (inventory.Entry, bool)
	List() []inventory.Entry
}

// errBadToken is an unusable ListVolumes starting token (Aborted, per spec).
var errBadToken = fmt.Errorf("%w: invalid starting_token", errAborted)

// entry returns the inventory entry of id. It only reads: a volume the
// controller does not know (not created by it since it started, not listed
// from the PersistentVolumes at start) is not found, and no probe starts.
func (d *Driver) entry(id string) (inventory.Entry, error) {
	if err := required("volume_id", id); err != nil {
		return inventory.Entry{}, err
	}
	if _, err := volume.ParseID(id); err != nil {
		return inventory.Entry{}, err
	}
	e, ok := d.deps.Inventory.Get(id)
	if !ok {
		return inventory.Entry{}, fmt.Errorf("%w: volume %s is not known to this controller (it knows the volumes it created "+
			"since it started and, with --kube-api, those of the PersistentVolumes it found at start)", errNotFound, id)
	}
	return e, nil
}

// ControllerGetVolume returns a volume with its legacy volume condition,
// which external-health-monitor turns into PVC events.
func (d *Driver) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	e, err := d.entry(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	status := &csi.ControllerGetVolumeResponse_VolumeStatus{}
	setLegacyCondition(status, legacyStatsConditionField, abnormal(e.Verdict), conditionMessage(e.Verdict))
	return &csi.ControllerGetVolumeResponse{Volume: csiVolume(e), Status: status}, nil
}

// ListVolumes pages through the inventory; starting_token is an offset.
func (d *Driver) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	entries := d.deps.Inventory.List()
	page, next, err := paginate(len(entries), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &csi.ListVolumesResponse{NextToken: next}
	for _, e := range entries[page[0]:page[1]] {
		status := &csi.ListVolumesResponse_VolumeStatus{}
		setLegacyCondition(status, legacyStatsConditionField, abnormal(e.Verdict), conditionMessage(e.Verdict))
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{Volume: csiVolume(e), Status: status})
	}
	return resp, nil
}

// ControllerGetVolumeHealth reports the controller's view (CSI v1.13):
// server reachable from the controller, volume directory present.
func (d *Driver) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	e, err := d.entry(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: entryHealth(e)}, nil
}

// entryHealth is a volume's v1.13 health from the controller: its verdict,
// then, for a DFS volume, one entry per target that is not healthy.
func entryHealth(e inventory.Entry) *csi.VolumeHealth {
	vh := volumeHealth(e.ID, e.Verdict.State, e.Verdict.Reason, e.Verdict.Message)
	for _, t := range e.Targets {
		switch t.Verdict.State {
		case health.StateUnreachable:
			vh.HealthStatuses = append(vh.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: csi.VolumeHealthErrorType_DEGRADED,
				Reason: health.ReasonTargetUnreachable, Message: fmt.Sprintf("DFS target %s unreachable from the controller: %s", t.Addr, t.Verdict.Message)})
		case health.StateDegraded:
			vh.HealthStatuses = append(vh.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: csi.VolumeHealthErrorType_DEGRADED,
				Reason: t.Verdict.Reason, Message: fmt.Sprintf("DFS target %s: %s", t.Addr, t.Verdict.Message)})
		}
	}
	return vh
}

// ControllerListVolumeHealth pages through the inventory's verdicts.
func (d *Driver) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	entries := d.deps.Inventory.List()
	page, next, err := paginate(len(entries), req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &csi.ControllerListVolumeHealthResponse{NextToken: next}
	for _, e := range entries[page[0]:page[1]] {
		resp.Entries = append(resp.Entries, entryHealth(e))
	}
	return resp, nil
}

func paginate(n int, token string, maxEntries int32) ([2]int, string, error) {
	start := 0
	if token != "" {
		s, err := strconv.Atoi(token)
		if err != nil || s < 0 || s > n {
			return [2]int{}, "", fmt.Errorf("%w: %q", errBadToken, token)
		}
		start = s
	}
	if maxEntries < 0 {
		return [2]int{}, "", fmt.Errorf("%w: negative max_entries", errInvalid)
	}
	end := n
	if maxEntries > 0 && start+int(maxEntries) < n {
		end = start + int(maxEntries)
	}
	next := ""
	if end < n {
		next = strconv.Itoa(end)
	}
	return [2]int{start, end}, next, nil
}

func csiVolume(e inventory.Entry) *csi.Volume {
	return &csi.Volume{VolumeId: e.ID, CapacityBytes: e.Capacity, VolumeContext: e.Volume.Context()}
}

// abnormal is the legacy VolumeCondition's flag for a verdict.
func abnormal(v health.VolumeVerdict) bool {
	return v.State == health.StateUnreachable || v.State == health.StateDegraded
}

// conditionMessage is the legacy VolumeCondition's message for a verdict.
func conditionMessage(v health.VolumeVerdict) string { return v.Reason + ": " + v.Message }
