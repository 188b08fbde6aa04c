package health

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/csi-smb/csi-smb/pkg/mount"
)

// Volume reasons beyond the server and mount ones.
const (
	ReasonVolumeHealthy = "VolumeHealthy"
	ReasonRemounted     = "Remounted"
	ReasonReconnecting  = "MountReconnecting"
	// DFS volumes.
	ReasonFailedOver        = "FailedOver"        // the mount moved to another target (notice)
	ReasonTargetUnreachable = "TargetUnreachable" // a standby target is down; the volume is served
	ReasonNoHealthyTarget   = "NoHealthyTarget"   // every target is down
	ReasonTargetFenced      = "TargetFenced"      // a standby target answers but is fenced on this node for now
	// ReasonStaleWriteRisk: the volume left a frozen target, which answers
	// again: a write it had buffered may have been applied late (split brain).
	ReasonStaleWriteRisk = "StaleWriteRisk"
)

// Failover is a change of the DFS target a volume's mount uses.
type Failover struct {
	From, To string
	At       time.Time
	// FromFrozen: From was fenced while frozen (TCP alive, SMB silent).
	FromFrozen bool
	// Resumed is when a frozen From answered again (zero: not yet).
	Resumed time.Time
}

// VolumeVerdict is the health of one staged volume: its mount check
// combined with the verdict on its server.
type VolumeVerdict struct {
	State   State // Unreachable means the volume is inaccessible
	Reason  string
	Message string
	Server  string
	// Usage is from the last statfs that answered, at UsageAt.
	Usage   mount.Usage
	UsageAt time.Time
	Check   MountCheck
	// RemountWanted is set when the mount has failed for RemountGrace while
	// its server answered: the node should remount the volume and tell the
	// Monitor (Remounted). Each request has its own time.
	RemountWanted time.Time
}

func (m *Monitor) verdictLocked(w *watched, now time.Time) VolumeVerdict {
	sv, probed := m.store.Server(w.spec.Server)
	if !probed {
		sv = Verdict{State: StateUnknown, Reason: ReasonNotProbed}
	}
	check := w.check
	if sv.State != StateUnreachable && w.reconnecting(now, m.opts.RemountGrace) {
		msg := "the SMB server answers again; the mount is not checked since"
		if !w.unverified() {
			msg = "the SMB server answers again; the kernel has not reconnected the mount yet (last check: " + check.Message + ")"
		}
		check = MountCheck{Reason: ReasonReconnecting, At: check.At, Message: msg}
	}
	v := Combine(check, sv, now.Sub(w.remounted) < m.opts.NoticeTTL && !w.remounted.IsZero())
	if dv, gone := m.dirGone(w); gone && sv.State != StateUnreachable {
		v = dirMissing(*w.spec.Dir, dv)
	}
	if len(w.spec.Targets) > 0 {
		v = m.dfsLocked(w, v, now)
	}
	v.Server, v.Usage, v.UsageAt, v.Check, v.RemountWanted = w.spec.Server, w.usage, w.usageAt, check, w.wanted
	if !check.OK && w.spec.Remountable && w.wanted.IsZero() && v.Reason != ReasonUnreachable && !w.unverified() && !w.spec.DFSFallback {
		if left := m.opts.RemountGrace - now.Sub(w.failingSince()); left > 0 {
			v.Message += fmt.Sprintf("; remount in %v unless it recovers", left.Round(time.Second))
		}
	}
	return v
}

// dirMissing is the verdict on a volume whose directory a watch saw go.
func dirMissing(t DirTarget, dv DirVerdict) VolumeVerdict {
	where := fmt.Sprintf("//%s/%s", strings.TrimSuffix(t.Addr, ":445"), strings.Trim(t.Share+"/"+t.Dir, "/"))
	if dv.RenamedTo != "" {
		return VolumeVerdict{State: StateUnreachable, Reason: ReasonDirRenamed, Message: fmt.Sprintf(
			"the volume's directory %s was renamed on the server to %s at %s", t.Name, dv.RenamedTo, dv.At.UTC().Format(time.RFC3339))}
	}
	return VolumeVerdict{State: StateUnreachable, Reason: ReasonDirMissing, Message: fmt.Sprintf(
		"the volume's directory %s is gone from %s (seen at %s)", t.Name, where, dv.At.UTC().Format(time.RFC3339))}
}

// Combine is the pure rule that turns a mount check and a server verdict
// into a volume verdict:
//   - server unreachable: the volume is inaccessible (ServerUnreachable);
//   - server answers but the mount fails: inaccessible, with the mount's
//     reason (MountStalled, MountStale, ...) — the Monitor remounts it after
//     the grace period;
//   - mount fine, but remounted recently (Remounted), server slow
//     (ServerSlow) or a probe just missed (ProbeMissed): degraded;
//   - otherwise healthy.
func Combine(c MountCheck, sv Verdict, recentlyRemounted bool) VolumeVerdict {
	switch {
	case sv.State == StateUnreachable:
		return VolumeVerdict{State: StateUnreachable, Reason: ReasonUnreachable, Message: "SMB server unreachable: " + sv.Message}
	case !c.OK:
		return VolumeVerdict{State: StateUnreachable, Reason: c.Reason, Message: c.Message + serverNote(sv)}
	case recentlyRemounted:
		return VolumeVerdict{State: StateDegraded, Reason: ReasonRemounted, Message: "the mount was wedged while its server answered, and was remounted"}
	case sv.State == StateDegraded:
		return VolumeVerdict{State: StateDegraded, Reason: sv.Reason, Message: "SMB server: " + sv.Message}
	}
	return VolumeVerdict{State: StateHealthy, Reason: ReasonVolumeHealthy, Message: "volume is healthy"}
}

func serverNote(sv Verdict) string {
	switch sv.State {
	case StateHealthy:
		return "; the SMB server answers, so the fault is in this mount"
	case StateDegraded:
		return "; the SMB server: " + sv.Message
	}
	return ""
}

// dfsLocked refines a DFS volume's verdict with its other targets: all
// down is NoHealthyTarget; the active one down while another answers is a
// failover in progress; a recent move is FailedOver; a standby down is
// TargetUnreachable (the volume is served, with less redundancy).
func (m *Monitor) dfsLocked(w *watched, v VolumeVerdict, now time.Time) VolumeVerdict {
	var down, up, fenced []string
	for _, t := range w.spec.Targets {
		if sv, ok := m.store.Server(t); ok && sv.State == StateUnreachable {
			down = append(down, t)
		} else {
			up = append(up, t)
			if slices.Contains(m.fenced, t) && t != w.spec.Server {
				fenced = append(fenced, t)
			}
		}
	}
	fo := w.failover
	switch {
	case fo.FromFrozen && !fo.Resumed.IsZero() && now.Sub(fo.Resumed) < m.opts.NoticeTTL:
		return VolumeVerdict{State: StateDegraded, Reason: ReasonStaleWriteRisk, Message: fmt.Sprintf(
			"DFS target %s froze (TCP alive, SMB silent) and this volume left it for %s at %s; %s answers again since %s: "+
				"a write it had buffered may have been applied late, over newer data written through %s",
			fo.From, fo.To, fo.At.UTC().Format(time.RFC3339), fo.From, fo.Resumed.UTC().Format(time.RFC3339), fo.To)}
	case len(up) == 0:
		return VolumeVerdict{State: StateUnreachable, Reason: ReasonNoHealthyTarget,
			Message: "every DFS target is unreachable: " + strings.Join(down, ", ")}
	case v.State == StateUnreachable && v.Reason == ReasonUnreachable:
		v.Message = fmt.Sprintf("DFS target %s unreachable; failing over to %s (%s)", w.spec.Server, strings.Join(up, ", "), v.Message)
		if w.spec.DFSFallback && w.spec.Remountable && w.wanted.IsZero() && !w.failSince.IsZero() {
			if left := m.opts.RemountGrace - now.Sub(w.failSince); left > 0 {
				v.Message += fmt.Sprintf("; remount of the DFS path in %v if the mount does not move", left.Round(time.Second))
			}
		}
	case v.Reason == ReasonRemounted && w.spec.DFSFallback:
		v.Message = "in-place DFS failover did not move the mount within the remount grace; the DFS path was remounted, now on " + w.spec.Server
	case v.State == StateHealthy && !w.failover.At.IsZero() && now.Sub(w.failover.At) < m.opts.NoticeTTL:
		v = VolumeVerdict{State: StateDegraded, Reason: ReasonFailedOver, Message: fmt.Sprintf("failed over from DFS target %s to %s at %s",
			w.failover.From, w.failover.To, w.failover.At.UTC().Format(time.RFC3339))}
	case v.State == StateHealthy && len(down) > 0:
		v = VolumeVerdict{State: StateDegraded, Reason: ReasonTargetUnreachable, Message: fmt.Sprintf("standby DFS target %s unreachable; served by %s",
			strings.Join(down, ", "), w.spec.Server)}
	case v.State == StateHealthy && len(fenced) > 0:
		v = VolumeVerdict{State: StateDegraded, Reason: ReasonTargetFenced, Message: fmt.Sprintf(
			"standby DFS target %s answers but is fenced on this node until it has stayed healthy; served by %s",
			strings.Join(fenced, ", "), w.spec.Server)}
	}
	return v
}
