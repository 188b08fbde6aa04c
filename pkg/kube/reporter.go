package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// queueLen bounds the health changes waiting to be written; beyond it new
// ones are dropped (and logged) rather than blocking the health loops.
const queueLen = 256

// Reporter writes an Event on every pod and PVC of a volume whose health
// changed: Warning with the verdict's reason (ServerUnreachable,
// MountStalled, Remounted, ...) or Normal VolumeHealthy when it recovers.
// `kubectl describe pod` and `kubectl describe pvc` show them.
type Reporter struct {
	client      kubernetes.Interface
	node        string
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	queue       chan change
	mu          sync.Mutex
	uids        map[string]types.UID // "namespace/name" of PVCs
}

type change struct {
	volumeID string
	verdict  health.VolumeVerdict
	objects  []Object
}

// NewReporter builds a reporter for node (the event source host).
func NewReporter(client kubernetes.Interface, driverName, node string) *Reporter {
	b := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{SpamKeyFunc: spamKey}))
	return &Reporter{
		client: client, node: node, broadcaster: b, queue: make(chan change, queueLen), uids: map[string]types.UID{},
		recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: driverName, Host: node}),
	}
}

// VolumeHealthChanged queues the events; it never blocks.
func (r *Reporter) VolumeHealthChanged(volumeID string, v health.VolumeVerdict, objects []Object) {
	if len(objects) == 0 {
		return
	}
	select {
	case r.queue <- change{volumeID: volumeID, verdict: v, objects: objects}:
	default:
		klog.InfoS("event queue full; dropping a volume health event", "volumeID", volumeID, "reason", v.Reason)
	}
}

// Run writes queued events until ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	stop := r.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.client.CoreV1().Events("")})
	defer r.broadcaster.Shutdown()
	defer stop.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-r.queue:
			r.write(ctx, c)
		}
	}
}

func (r *Reporter) write(ctx context.Context, c change) {
	eventType, reason := corev1.EventTypeWarning, c.verdict.Reason
	if c.verdict.State == health.StateHealthy {
		eventType, reason = corev1.EventTypeNormal, health.ReasonVolumeHealthy
	}
	msg := fmt.Sprintf("SMB volume %s on node %s is %s: %s", c.volumeID, r.node, stateWord(c.verdict.State), c.verdict.Message)
	for _, o := range c.objects {
		ref := &corev1.ObjectReference{APIVersion: "v1", Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, UID: types.UID(o.UID)}
		if o.Kind == "PersistentVolumeClaim" && ref.UID == "" {
			ref.UID = r.claimUID(ctx, o.Namespace, o.Name)
		}
		r.recorder.Event(ref, eventType, reason, msg)
	}
}

// claimUID looks a PVC's UID up once (kubectl describe matches events by
// UID); on failure the event still goes out, without one.
func (r *Reporter) claimUID(ctx context.Context, ns, name string) types.UID {
	key := ns + "/" + name
	r.mu.Lock()
	uid, ok := r.uids[key]
	r.mu.Unlock()
	if ok {
		return uid
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pvc, err := r.client.CoreV1().PersistentVolumeClaims(ns).Get(gctx, name, metav1.GetOptions{})
	if err != nil {
		klog.V(2).InfoS("cannot look up PVC for its event", "pvc", key, "err", err)
		return ""
	}
	r.mu.Lock()
	r.uids[key] = pvc.UID
	r.mu.Unlock()
	return pvc.UID
}

// VolumeHandles lists the handles of this driver's PersistentVolumes, so a
// restarted controller knows which volumes to watch.
func VolumeHandles(ctx context.Context, client kubernetes.Interface, driverName string) ([]string, error) {
	var out []string
	opts := metav1.ListOptions{Limit: 500}
	for {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		pvs, err := client.CoreV1().PersistentVolumes().List(lctx, opts)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list persistent volumes: %w", err)
		}
		for _, pv := range pvs.Items {
			if csi := pv.Spec.CSI; csi != nil && csi.Driver == driverName {
				out = append(out, csi.VolumeHandle)
			}
		}
		if pvs.Continue == "" {
			return out, nil
		}
		opts.Continue = pvs.Continue
	}
}

// stateWord names a volume's state in the words of the kubelet's
// pod.status.volumeHealth, so `kubectl describe` reads like it.
func stateWord(s health.State) string {
	switch s {
	case health.StateUnreachable:
		return "inaccessible"
	case health.StateDegraded:
		return "degraded"
	case health.StateHealthy:
		return "healthy"
	}
	return "not checked yet"
}

// spamKey buckets events for client-go's spam filter (25 per bucket, then
// one per 5 minutes) per object and reason, not per object and type as by
// default: a volume whose server flaps for long would otherwise use up its
// Warning bucket on MountReconnecting and ProbeMissed and go on showing
// "is healthy" as its latest event while it is inaccessible again.
func spamKey(e *corev1.Event) string {
	return strings.Join([]string{e.Source.Component, e.Source.Host, e.InvolvedObject.Kind, e.InvolvedObject.Namespace,
		e.InvolvedObject.Name, string(e.InvolvedObject.UID), e.InvolvedObject.APIVersion, e.Type, e.Reason}, "\x00")
}
