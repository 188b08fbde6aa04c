package lab

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The kubernetes Service: its ClusterIP (the first of the API server's
// --service-cluster-ip-range) and port, which the kubelet puts in every pod's
// KUBERNETES_SERVICE_HOST/PORT. With no kube-proxy the node itself
// translates them to the real API server.
const (
	KubeServiceIP   = "10.96.0.1"
	KubeServicePort = 443
	nodeNATTable    = "lab-kube-svc"
)

// NodeServiceNAT installs, in the current network namespace, nftables rules
// that DNAT tcp KubeServiceIP:443 to ClientIP:KubePort: on output (hostNetwork
// pods, the node's own processes) and on prerouting (pods on the pod network).
// In-cluster clients then work unchanged: the API server's self-signed
// certificate names the service IP. node.sh runs it in the guest as
// `smblab node-nat`; its own table, so the driver's fence table is untouched.
func NodeServiceNAT() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("node nat: %w", err)
	}
	t := &nftables.Table{Name: nodeNATTable, Family: nftables.TableFamilyIPv4}
	c.DelTable(t)
	_ = c.Flush() // absent on a first run
	c.AddTable(t)
	rule := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.ParseIP(KubeServiceIP).To4()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(KubeServicePort)},
		&expr.Immediate{Register: 1, Data: net.ParseIP(ClientIP).To4()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(KubePort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
	for name, hook := range map[string]*nftables.ChainHook{"output": nftables.ChainHookOutput, "prerouting": nftables.ChainHookPrerouting} {
		ch := c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: hook, Priority: nftables.ChainPriorityNATDest})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: rule})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("node nat: %w", err)
	}
	return nil
}
