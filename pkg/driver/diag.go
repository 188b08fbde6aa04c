package driver

import (
	"maps"
	"slices"

	"github.com/csi-smb/csi-smb/pkg/diag"
	"github.com/csi-smb/csi-smb/pkg/health"
)

var _ diag.Source = (*Driver)(nil)

// NodeStatus is the node's answer to csi-smb status (pkg/diag): every
// volume it has staged (or adopted after a restart) with the verdict the
// Monitor last published. A pure read of memory: no probe, no statfs, no
// adoption; credentials are never copied out.
func (d *Driver) NodeStatus() diag.Status {
	st := diag.Status{Version: diag.StatusVersion, Driver: d.opts.DriverName, Node: d.opts.NodeID, Volumes: []diag.Volume{}}
	for _, id := range d.node.ids() {
		s, ok := d.node.get(id)
		if !ok {
			continue // unstaged meanwhile
		}
		v := diag.Volume{ID: id, Staging: s.staging, State: health.StateUnknown.String(), Reason: "NotWatched",
			Message: "the node has not judged this volume yet", DFSTargets: slices.Clone(s.dfs)}
		if v.DFSTargets == nil {
			v.DFSTargets = []string{}
		}
		if s.vol.Source.Server != "" {
			v.Source, v.Server = s.vol.Location().String(), s.vol.Source.Address()
		}
		if vv, ok := d.deps.Verdicts.Volume(id); ok {
			v.State, v.Reason, v.Message = vv.State.String(), vv.Reason, vv.Message
			v.LastCheck, v.CheckState = vv.Check.At, vv.Check.Reason
			if v.Server == "" {
				v.Server = vv.Server // adopted: the address its mount uses
			}
			if s.dfs != nil {
				v.DFSTarget = vv.Server // the Monitor follows the mount to its target
			}
			if sv, ok := d.deps.Verdicts.Server(vv.Server); ok {
				v.ServerState = sv.State.String()
			}
		}
		st.Volumes = append(st.Volumes, v)
	}
	return st
}

// ids lists the volumes the node remembers, sorted.
func (n *nodeState) ids() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Sorted(maps.Keys(n.vols))
}
