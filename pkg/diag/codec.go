package diag

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// maxVolumes bounds what Decode accepts: far more than a node stages.
const maxVolumes = 10000

// Encode is the wire form of st: a Struct with the JSON field names of
// Status (times as RFC 3339 strings, "" for none).
func Encode(st Status) (*structpb.Struct, error) {
	vols := make([]any, 0, len(st.Volumes))
	for _, v := range st.Volumes {
		targets := make([]any, 0, len(v.DFSTargets))
		for _, t := range v.DFSTargets {
			targets = append(targets, t)
		}
		last := ""
		if !v.LastCheck.IsZero() {
			last = v.LastCheck.UTC().Format(time.RFC3339Nano)
		}
		vols = append(vols, map[string]any{
			"volumeID": v.ID, "state": v.State, "reason": v.Reason, "message": v.Message,
			"source": v.Source, "server": v.Server, "serverState": v.ServerState,
			"dfsTarget": v.DFSTarget, "dfsTargets": targets, "stagingPath": v.Staging,
			"lastCheck": last, "checkReason": v.CheckState,
		})
	}
	s, err := structpb.NewStruct(map[string]any{
		"version": st.Version, "driver": st.Driver, "node": st.Node, "volumes": vols,
	})
	if err != nil {
		return nil, fmt.Errorf("encode node status: %w", err)
	}
	return s, nil
}

// Decode reads a Struct that Encode made. Fields it does not know are
// ignored (a newer node may add some); a field of the wrong type, a
// version it does not read, or more than maxVolumes volumes is
// ErrMalformed.
func Decode(s *structpb.Struct) (Status, error) {
	f := s.GetFields()
	d := &decoder{}
	st := Status{Version: int(d.number(f, "version")), Driver: d.str(f, "driver"), Node: d.str(f, "node")}
	if d.err == nil && st.Version != StatusVersion {
		return Status{}, fmt.Errorf("%w: version %d, this client reads %d", ErrMalformed, st.Version, StatusVersion)
	}
	list := d.list(f, "volumes")
	if len(list) > maxVolumes {
		return Status{}, fmt.Errorf("%w: %d volumes", ErrMalformed, len(list))
	}
	st.Volumes = make([]Volume, 0, len(list))
	for i, item := range list {
		vf := item.GetStructValue().GetFields()
		if vf == nil {
			return Status{}, fmt.Errorf("%w: volume %d is not an object", ErrMalformed, i)
		}
		v := Volume{
			ID: d.str(vf, "volumeID"), State: d.str(vf, "state"), Reason: d.str(vf, "reason"), Message: d.str(vf, "message"),
			Source: d.str(vf, "source"), Server: d.str(vf, "server"), ServerState: d.str(vf, "serverState"),
			DFSTarget: d.str(vf, "dfsTarget"), Staging: d.str(vf, "stagingPath"), CheckState: d.str(vf, "checkReason"),
			DFSTargets: []string{},
		}
		for _, t := range d.list(vf, "dfsTargets") {
			if _, ok := t.GetKind().(*structpb.Value_StringValue); !ok {
				d.fail("dfsTargets of volume %d", i)
			}
			v.DFSTargets = append(v.DFSTargets, t.GetStringValue())
		}
		if last := d.str(vf, "lastCheck"); last != "" {
			t, err := time.Parse(time.RFC3339Nano, last)
			if err != nil {
				d.fail("lastCheck %q of volume %d", last, i)
			}
			v.LastCheck = t
		}
		st.Volumes = append(st.Volumes, v)
	}
	if d.err != nil {
		return Status{}, d.err
	}
	return st, nil
}

// decoder reads typed fields, keeping the first type error.
type decoder struct{ err error }

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (d *decoder) str(f map[string]*structpb.Value, k string) string {
	v, ok := f[k]
	if !ok {
		return ""
	}
	if _, ok := v.GetKind().(*structpb.Value_StringValue); !ok {
		d.fail("%s is not a string", k)
	}
	return v.GetStringValue()
}

func (d *decoder) number(f map[string]*structpb.Value, k string) float64 {
	v, ok := f[k]
	if _, isNum := v.GetKind().(*structpb.Value_NumberValue); !ok || !isNum {
		d.fail("%s is missing or not a number", k)
	}
	return v.GetNumberValue()
}

func (d *decoder) list(f map[string]*structpb.Value, k string) []*structpb.Value {
	v, ok := f[k]
	if !ok {
		return nil
	}
	if _, ok := v.GetKind().(*structpb.Value_ListValue); !ok {
		d.fail("%s is not a list", k)
	}
	return v.GetListValue().GetValues()
}
