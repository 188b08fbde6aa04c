package provision

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/pkg/volume"
)

// FuzzDecodeRecord feeds arbitrary bytes, as a hostile or corrupted share
// could hold, to the record decoder: it must never panic, and whatever it
// accepts must carry a parseable volume ID and re-encode to an equal record.
func FuzzDecodeRecord(f *testing.F) {
	v := volume.Volume{Source: volume.Source{Server: "s", Share: "sh"}, SubDir: "d", OnDelete: volume.OnDeleteDelete, UID: volume.UIDFor("n")}
	good, _ := json.Marshal(Record{Version: 1, Name: "n", VolumeID: v.ID(), CapacityBytes: 5, Created: time.Unix(0, 0).UTC()})
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeRecord(b)
		if err != nil {
			return
		}
		if _, err := volume.ParseID(rec.VolumeID); err != nil {
			t.Fatalf("accepted a record with a bad volume id %q", rec.VolumeID)
		}
		again, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		rec2, err := decodeRecord(again)
		if err != nil || rec2.Name != rec.Name || rec2.VolumeID != rec.VolumeID || rec2.CapacityBytes != rec.CapacityBytes || !rec2.Created.Equal(rec.Created) {
			t.Fatalf("record does not round-trip: %+v -> %+v (%v)", rec, rec2, err)
		}
	})
}
