package volume

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// StorageClass parameter and volume context keys.
const (
	ParamSource   = "source"
	ParamSubDir   = "subDir"
	ParamOnDelete = "onDelete"
	// ParamDFSFailover picks what a DFS volume does when the target it uses
	// freezes: DFSAvailability (default) fails over; DFSConsistency waits
	// for the frozen target, which may hold a buffered write.
	ParamDFSFailover = "dfsFailover"
	DFSAvailability  = "availability"
	DFSConsistency   = "consistency"

	// Keys csi-provisioner adds with --extra-create-metadata.
	MetaPVCName      = "csi.storage.k8s.io/pvc/name"
	MetaPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	MetaPVName       = "csi.storage.k8s.io/pv/name"

	// reservedPrefix is the CO's namespace; csi-provisioner strips its secret
	// keys and may add metadata keys there, so they are never "unknown".
	reservedPrefix = "csi.storage.k8s.io/"
	// k8sPrefix holds keys Kubernetes adds to volume attributes, such as
	// storage.kubernetes.io/csiProvisionerIdentity.
	k8sPrefix = "storage.kubernetes.io/"

	// DefaultSubDir gives each volume its own directory named after the PV.
	DefaultSubDir = "${pv.metadata.name}"
)

// templates maps subDir placeholders to the metadata key that fills them.
var templates = map[string]string{
	"${pvc.metadata.name}":      MetaPVCName,
	"${pvc.metadata.namespace}": MetaPVCNamespace,
	"${pv.metadata.name}":       MetaPVName,
}

// CreateParams are the validated StorageClass parameters of CreateVolume.
type CreateParams struct {
	Source   Source
	SubDir   string // template, expanded by Volume
	OnDelete OnDelete
	meta     map[string]string
}

// ParseCreateParams validates StorageClass parameters. Unknown keys are an
// error that names them, so a typo never silently provisions something else.
func ParseCreateParams(params map[string]string) (CreateParams, error) {
	var unknown []string
	for k := range params {
		switch {
		case k == ParamSource, k == ParamSubDir, k == ParamOnDelete, k == ParamDFSFailover:
		case strings.HasPrefix(k, reservedPrefix):
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return CreateParams{}, fieldErr("parameters", strings.Join(unknown, ","),
			"unknown StorageClass parameter; allowed are %s, %s, %s, %s", ParamSource, ParamSubDir, ParamOnDelete, ParamDFSFailover)
	}
	src, err := ParseSource(ParamSource, params[ParamSource])
	if err != nil {
		return CreateParams{}, err
	}
	onDelete, err := ParseOnDelete(params[ParamOnDelete])
	if err != nil {
		return CreateParams{}, err
	}
	if _, err := ConsistencyFirst(params); err != nil {
		return CreateParams{}, err
	}
	sub := params[ParamSubDir]
	if sub == "" {
		sub = DefaultSubDir
	}
	if err := checkTemplate(sub); err != nil {
		return CreateParams{}, err
	}
	meta := make(map[string]string, 3)
	for _, k := range templates {
		if v, ok := params[k]; ok {
			meta[k] = v
		}
	}
	return CreateParams{Source: src, SubDir: sub, OnDelete: onDelete, meta: meta}, nil
}

func checkTemplate(sub string) error {
	rest := sub
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			return nil
		}
		j := strings.Index(rest[i:], "}")
		if j < 0 {
			return fieldErr(ParamSubDir, sub, "has an unterminated ${")
		}
		ph := rest[i : i+j+1]
		if _, ok := templates[ph]; !ok {
			keys := slices.Sorted(maps.Keys(templates))
			return fieldErr(ParamSubDir, sub, "uses unknown placeholder %s; known are %s", ph, strings.Join(keys, ", "))
		}
		rest = rest[i+j+1:]
	}
}

// Volume expands the subDir template for the CSI volume name and returns the
// volume it describes. Without --extra-create-metadata the PV name is the CSI
// name (csi-provisioner names volumes after their PV).
func (p CreateParams) Volume(name string) (Volume, error) {
	meta := maps.Clone(p.meta)
	if _, ok := meta[MetaPVName]; !ok {
		meta[MetaPVName] = name
	}
	sub := p.SubDir
	for ph, key := range templates {
		if !strings.Contains(sub, ph) {
			continue
		}
		val, ok := meta[key]
		if !ok || val == "" {
			return Volume{}, fieldErr(ParamSubDir, p.SubDir,
				"uses %s but the request has no %s; run csi-provisioner with --extra-create-metadata", ph, key)
		}
		if strings.ContainsAny(val, `/\`) || val == "." || val == ".." {
			return Volume{}, fieldErr(key, val, "cannot be used as a directory name")
		}
		sub = strings.ReplaceAll(sub, ph, val)
	}
	clean, err := CleanRelPath(ParamSubDir, sub)
	if err != nil {
		return Volume{}, err
	}
	if clean == "" {
		return Volume{}, fieldErr(ParamSubDir, p.SubDir, "expands to an empty path")
	}
	return Volume{Source: p.Source, SubDir: clean, OnDelete: p.OnDelete, UID: UIDFor(name)}, nil
}

// Context is the volume context CreateVolume returns; the node reads it back
// for static volumes, and it shows in `kubectl get pv -o yaml`.
func (v Volume) Context() map[string]string {
	return map[string]string{ParamSource: v.Source.String(), ParamSubDir: v.SubDir}
}

// StaticVolume builds the volume of a pre-provisioned PV from its volume
// attributes: source (required) and subDir (optional, no placeholders).
func StaticVolume(ctx map[string]string) (Volume, error) {
	for k := range ctx {
		if k != ParamSource && k != ParamSubDir && k != ParamDFSFailover && !strings.HasPrefix(k, reservedPrefix) && !strings.HasPrefix(k, k8sPrefix) {
			return Volume{}, fieldErr("volumeAttributes", k, "unknown key; allowed are %s, %s and %s", ParamSource, ParamSubDir, ParamDFSFailover)
		}
	}
	src, err := ParseSource(ParamSource, ctx[ParamSource])
	if err != nil {
		return Volume{}, err
	}
	if strings.Contains(ctx[ParamSubDir], "${") {
		return Volume{}, fieldErr(ParamSubDir, ctx[ParamSubDir], "placeholders only work in StorageClass parameters")
	}
	sub, err := CleanRelPath(ParamSubDir, ctx[ParamSubDir])
	if err != nil {
		return Volume{}, err
	}
	return Volume{Source: src, SubDir: sub, OnDelete: OnDeleteRetain}, nil
}

// String is for logs: the location and the policy, never credentials.
func (v Volume) String() string {
	return fmt.Sprintf("%s (onDelete=%s)", v.Location(), v.OnDelete)
}

// ConsistencyFirst reads dfsFailover from StorageClass parameters or a
// volume context: true for consistency, false for availability (the
// default); anything else is an error naming the values.
func ConsistencyFirst(m map[string]string) (bool, error) {
	switch v := m[ParamDFSFailover]; v {
	case "", DFSAvailability:
		return false, nil
	case DFSConsistency:
		return true, nil
	default:
		return false, fieldErr(ParamDFSFailover, v, "must be %s or %s", DFSAvailability, DFSConsistency)
	}
}
