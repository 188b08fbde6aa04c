// Package kube reports volume health to Kubernetes as Events on the pods
// that use a volume and on its PVC (client-go), and lists this driver's
// PersistentVolumes so the controller knows its volumes after a restart.
package kube

// Object names a Kubernetes object an event is about.
type Object struct {
	Kind      string // Pod or PersistentVolumeClaim
	Namespace string
	Name      string
	UID       string // may be empty; the reporter looks it up
}

// Volume context keys kubelet passes with podInfoOnMount, and the PVC keys
// this driver adds to the volume context at CreateVolume.
const (
	ContextPodName      = "csi.storage.k8s.io/pod.name"
	ContextPodNamespace = "csi.storage.k8s.io/pod.namespace"
	ContextPodUID       = "csi.storage.k8s.io/pod.uid"
	ContextPVCName      = "csi.storage.k8s.io/pvc/name"
	ContextPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
)

// ObjectsFromContext returns the pod and PVC named in a volume context.
func ObjectsFromContext(ctx map[string]string) []Object {
	var out []Object
	if n, ns := ctx[ContextPodName], ctx[ContextPodNamespace]; n != "" && ns != "" {
		out = append(out, Object{Kind: "Pod", Namespace: ns, Name: n, UID: ctx[ContextPodUID]})
	}
	if n, ns := ctx[ContextPVCName], ctx[ContextPVCNamespace]; n != "" && ns != "" {
		out = append(out, Object{Kind: "PersistentVolumeClaim", Namespace: ns, Name: n})
	}
	return out
}
