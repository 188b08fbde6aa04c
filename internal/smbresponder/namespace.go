package smbresponder

import (
	"strings"

	"github.com/csi-smb/csi-smb/pkg/dfs"
)

// LabNamespace answers referrals (Options.Referral) as the lab's Samba
// msdfs root on 10.0.0.1 does, with the link multi -> 10.0.0.2\shareA,
// 10.0.0.3\shareA; any other path is STATUS_NOT_FOUND (not DFS).
func LabNamespace(path string) ([]byte, uint32) {
	const root, link = `\10.0.0.1\dfs`, `\10.0.0.1\dfs\multi`
	var r dfs.Response
	switch p := strings.ToLower(path); {
	case strings.HasPrefix(p, strings.ToLower(link)):
		r = dfs.Response{PathConsumed: uint16(2 * len(link)), Flags: dfs.HeaderStorageServers, Entries: []dfs.Entry{
			{Version: 3, TTL: 600, Path: link, AltPath: link, Target: `\10.0.0.2\shareA`},
			{Version: 3, TTL: 600, Path: link, AltPath: link, Target: `\10.0.0.3\shareA`},
		}}
	case p == strings.ToLower(root):
		r = dfs.Response{PathConsumed: uint16(2 * len(root)), Flags: dfs.HeaderReferralServers | dfs.HeaderStorageServers, Entries: []dfs.Entry{
			{Version: 3, ServerType: dfs.ServerTypeRoot, TTL: 300, Path: root, AltPath: root, Target: root},
		}}
	default:
		return nil, 0xC0000225 // STATUS_NOT_FOUND
	}
	b, err := dfs.EncodeResponse(r)
	if err != nil {
		panic(err) // a fixed, valid response
	}
	return b, 0
}
