package health

import (
	"fmt"
	"time"

	"github.com/csi-smb/csi-smb/pkg/mount"
)

// Volume reasons beyond the server and mount ones.
const (
	ReasonVolumeHealthy = "VolumeHealthy"
	ReasonRemounted     = "Remounted"
	ReasonReconnecting  = "MountReconnecting"
)

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
	v.Server, v.Usage, v.UsageAt, v.Check, v.RemountWanted = w.spec.Server, w.usage, w.usageAt, check, w.wanted
	if !check.OK && w.spec.Remountable && w.wanted.IsZero() && v.Reason != ReasonUnreachable && !w.unverified() {
		if left := m.opts.RemountGrace - now.Sub(w.failingSince()); left > 0 {
			v.Message += fmt.Sprintf("; remount in %v unless it recovers", left.Round(time.Second))
		}
	}
	return v
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
