package driver

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// CSI spec v1.13 removed VolumeCondition and the VOLUME_CONDITION
// capabilities, but kubelets <= 1.36 (gate CSIVolumeHealth) and
// external-health-monitor still read them. The v1.13 Go bindings no longer
// carry them, so they are set here by number: the capability as its old
// enum value and the condition as an unknown field on the wire.
const (
	legacyNodeVolumeCondition       = csi.NodeServiceCapability_RPC_Type(4)
	legacyControllerVolumeCondition = csi.ControllerServiceCapability_RPC_Type(11)

	// Field 2 of NodeGetVolumeStatsResponse, of ListVolumesResponse.VolumeStatus
	// and of ControllerGetVolumeResponse.VolumeStatus was
	// `VolumeCondition volume_condition`, with VolumeCondition
	// { bool abnormal = 1; string message = 2; }.
	legacyStatsConditionField protowire.Number = 2
)

// setLegacyCondition appends the encoded VolumeCondition as field to m.
func setLegacyCondition(m proto.Message, field protowire.Number, abnormal bool, msg string) {
	var cond []byte
	if abnormal {
		cond = protowire.AppendTag(cond, 1, protowire.VarintType)
		cond = protowire.AppendVarint(cond, 1)
	}
	if msg != "" {
		cond = protowire.AppendTag(cond, 2, protowire.BytesType)
		cond = protowire.AppendString(cond, msg)
	}
	r := m.ProtoReflect()
	raw := r.GetUnknown()
	raw = protowire.AppendTag(raw, field, protowire.BytesType)
	raw = protowire.AppendBytes(raw, cond)
	r.SetUnknown(raw)
}

// LegacyCondition decodes a VolumeCondition set by setLegacyCondition (or
// by any plugin speaking the old spec); ok is false when there is none.
func LegacyCondition(m proto.Message, field protowire.Number) (abnormal bool, msg string, ok bool) {
	b := m.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, "", false
		}
		b = b[n:]
		if num != field || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false, "", false
			}
			b = b[n:]
			continue
		}
		cond, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false, "", false
		}
		b = b[n:]
		abnormal, msg, ok = decodeCondition(cond)
	}
	return abnormal, msg, ok
}

func decodeCondition(b []byte) (abnormal bool, msg string, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, "", false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false, "", false
			}
			abnormal, b = v != 0, b[n:]
		case num == 2 && typ == protowire.BytesType:
			s, n := protowire.ConsumeString(b)
			if n < 0 {
				return false, "", false
			}
			msg, b = s, b[n:]
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false, "", false
			}
			b = b[n:]
		}
	}
	return abnormal, msg, true
}
