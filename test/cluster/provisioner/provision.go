package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// The StorageClass parameters csi-provisioner reads itself and does not
// pass on, and the ones --extra-create-metadata adds.
const (
	prefix                = "csi.storage.k8s.io/"
	provisionerSecretName = prefix + "provisioner-secret-name"
	provisionerSecretNS   = prefix + "provisioner-secret-namespace"
	stageSecretName       = prefix + "node-stage-secret-name"
	stageSecretNS         = prefix + "node-stage-secret-namespace"
	pvcNameKey            = prefix + "pvc/name"
	pvcNamespaceKey       = prefix + "pvc/namespace"
	pvNameKey             = prefix + "pv/name"
)

type provisioner struct {
	driver        string
	csi           csi.ControllerClient
	kube          kubernetes.Interface
	extraMetadata bool
	timeout       time.Duration
}

// request is what CreateVolume gets for a claim, and the secret the PV
// keeps for staging.
type request struct {
	create     *csi.CreateVolumeRequest
	secret     *v1.SecretReference // provisioner secret, nil: none
	stage      *v1.SecretReference // node-stage secret, nil: none
	accessMode []v1.PersistentVolumeAccessMode
}

// buildRequest maps a claim of class sc to a CreateVolume request.
func buildRequest(sc *storagev1.StorageClass, pvName string, pvc *v1.PersistentVolumeClaim, extra bool) (request, error) {
	params := map[string]string{}
	for k, v := range sc.Parameters {
		if !strings.HasPrefix(k, prefix) {
			params[k] = v
		}
	}
	if extra {
		params[pvcNameKey], params[pvcNamespaceKey], params[pvNameKey] = pvc.Name, pvc.Namespace, pvName
	}
	vars := strings.NewReplacer("${pvc.name}", pvc.Name, "${pvc.namespace}", pvc.Namespace, "${pv.name}", pvName)
	secretRef := func(nameKey, nsKey string) (*v1.SecretReference, error) {
		name, ns := sc.Parameters[nameKey], sc.Parameters[nsKey]
		if name == "" && ns == "" {
			return nil, nil
		}
		if name == "" || ns == "" {
			return nil, fmt.Errorf("StorageClass %s: %s and %s go together", sc.Name, nameKey, nsKey)
		}
		return &v1.SecretReference{Name: vars.Replace(name), Namespace: vars.Replace(ns)}, nil
	}
	var r request
	var err error
	if r.secret, err = secretRef(provisionerSecretName, provisionerSecretNS); err != nil {
		return r, err
	}
	if r.stage, err = secretRef(stageSecretName, stageSecretNS); err != nil {
		return r, err
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return r, errors.New("block volumes are not supported")
	}
	var caps []*csi.VolumeCapability
	for _, m := range pvc.Spec.AccessModes {
		var mode csi.VolumeCapability_AccessMode_Mode
		switch m {
		case v1.ReadWriteOnce:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		case v1.ReadOnlyMany:
			mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		case v1.ReadWriteMany:
			mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		case v1.ReadWriteOncePod:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		default:
			return r, fmt.Errorf("access mode %q", m)
		}
		caps = append(caps, &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: sc.MountOptions}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		})
	}
	if len(caps) == 0 {
		return r, errors.New("the claim has no access mode")
	}
	r.accessMode = pvc.Spec.AccessModes
	r.create = &csi.CreateVolumeRequest{Name: pvName, Parameters: params, VolumeCapabilities: caps}
	if q, ok := pvc.Spec.Resources.Requests[v1.ResourceStorage]; ok {
		r.create.CapacityRange = &csi.CapacityRange{RequiredBytes: q.Value()}
	}
	return r, nil
}

// buildPV is the PV for a created volume.
func buildPV(driver string, sc *storagev1.StorageClass, pvName string, pvc *v1.PersistentVolumeClaim, r request, vol *csi.Volume) *v1.PersistentVolume {
	capacity := vol.GetCapacityBytes()
	if capacity == 0 && r.create.CapacityRange != nil {
		capacity = r.create.CapacityRange.RequiredBytes
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	mode := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:                   r.accessMode,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: *resource.NewQuantity(capacity, resource.BinarySI)},
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			MountOptions:                  sc.MountOptions,
			VolumeMode:                    &mode,
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:             driver,
				VolumeHandle:       vol.GetVolumeId(),
				VolumeAttributes:   maps.Clone(vol.GetVolumeContext()),
				NodeStageSecretRef: r.stage,
			}},
		},
	}
}

func (p *provisioner) secrets(ctx context.Context, ref *v1.SecretReference) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	s, err := p.kube.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// Provision creates the volume and returns its PV.
func (p *provisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	r, err := buildRequest(o.StorageClass, o.PVName, o.PVC, p.extraMetadata)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if r.create.Secrets, err = p.secrets(ctx, r.secret); err != nil {
		return nil, controller.ProvisioningNoChange, err
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.csi.CreateVolume(cctx, r.create)
	if err != nil {
		// CreateVolume is idempotent by name: the library calls again.
		return nil, controller.ProvisioningInBackground, fmt.Errorf("CreateVolume %s: %w", o.PVName, err)
	}
	return buildPV(p.driver, o.StorageClass, o.PVName, o.PVC, r, resp.GetVolume()), controller.ProvisioningFinished, nil
}

// Delete deletes the volume of a released PV, with the provisioner secret
// of its StorageClass as it is now.
func (p *provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != p.driver {
		return &controller.IgnoredError{Reason: "not a volume of " + p.driver}
	}
	req := &csi.DeleteVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle}
	if sc, err := p.kube.StorageV1().StorageClasses().Get(ctx, pv.Spec.StorageClassName, metav1.GetOptions{}); err == nil {
		claim := &v1.PersistentVolumeClaim{}
		if ref := pv.Spec.ClaimRef; ref != nil {
			claim.Name, claim.Namespace = ref.Name, ref.Namespace
		}
		claim.Spec.AccessModes = pv.Spec.AccessModes
		r, err := buildRequest(sc, pv.Name, claim, false)
		if err != nil {
			return err
		}
		if req.Secrets, err = p.secrets(ctx, r.secret); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if _, err := p.csi.DeleteVolume(cctx, req); err != nil {
		return fmt.Errorf("DeleteVolume %s: %w", pv.Spec.CSI.VolumeHandle, err)
	}
	return nil
}
