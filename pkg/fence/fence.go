// Package fence keeps the node's client-side fence on dead DFS targets: an
// nftables table owned by the driver that rejects, with a TCP reset, new
// and established SMB connections from this node to a fenced address, for
// every socket but the prober's own (marked with Options.Mark), so the
// kernel's DFS reconnect takes the next target and the prober keeps
// watching the fenced one. Elements carry a timeout the Fence keeps
// refreshing, and the table is rebuilt at start: a crashed plugin leaves
// no server blocked for longer than Options.TTL, and never a duplicate rule.
//
// It is a client-side fence, not a server fence: the fenced server is not
// stopped and may still apply requests it had buffered (docs/dfs.md).
package fence

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Options configure a Fence. Zero values get defaults.
type Options struct {
	Table string // nftables table (family inet), default "csi_smb"
	// Mark is the SO_MARK bit of the prober's sockets, which the fence
	// lets through; default 0x10000000. Kernel cifs sockets carry mark 0.
	Mark    uint32
	Port    uint16        // default 445
	TTL     time.Duration // element timeout, default 60 s
	Refresh time.Duration // re-arm period, default TTL/3
	// NetNS, when non-zero, is a network namespace fd to work in (tests).
	NetNS int
}

// Fence is the node's set of fenced addresses.
type Fence struct {
	opts Options
	// nl serializes the netlink transactions (and google/nftables keeps a
	// package-level set ID counter that AddSet must not race on).
	nl    sync.Mutex
	mu    sync.Mutex
	want  map[netip.Addr]time.Time // fenced addresses and since when
	ready bool                     // the table exists
}

// New builds a fence; Run owns the table.
func New(o Options) *Fence {
	if o.Table == "" {
		o.Table = "csi_smb"
	}
	if o.Mark == 0 {
		o.Mark = 0x10000000
	}
	if o.Port == 0 {
		o.Port = 445
	}
	if o.TTL == 0 {
		o.TTL = time.Minute
	}
	if o.Refresh == 0 {
		o.Refresh = o.TTL / 3
	}
	return &Fence{opts: o, want: map[netip.Addr]time.Time{}}
}

// Mark is the socket mark that passes the fence.
func (f *Fence) Mark() uint32 { return f.opts.Mark }

func (f *Fence) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if f.opts.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(f.opts.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (f *Fence) objects() (*nftables.Table, *nftables.Set, *nftables.Set) {
	t := &nftables.Table{Name: f.opts.Table, Family: nftables.TableFamilyINet}
	v4 := &nftables.Set{Table: t, Name: "fenced4", KeyType: nftables.TypeIPAddr, HasTimeout: true}
	v6 := &nftables.Set{Table: t, Name: "fenced6", KeyType: nftables.TypeIP6Addr, HasTimeout: true}
	return t, v4, v6
}

// Reconcile rebuilds the table from nothing in one transaction: whatever an
// earlier process left (elements, rules, a table from another version) is
// replaced, and the addresses this Fence wants are fenced again.
func (f *Fence) Reconcile() error {
	f.nl.Lock()
	defer f.nl.Unlock()
	return f.reconcileLocked()
}

func (f *Fence) reconcileLocked() error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	t, v4, v6 := f.objects()
	if slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		c.DelTable(t)
	}
	c.AddTable(t)
	f.mu.Lock()
	want := slices.Collect(maps.Keys(f.want))
	f.mu.Unlock()
	e4, e6 := f.elements(want)
	if err := c.AddSet(v4, e4); err != nil {
		return fmt.Errorf("nftables: set: %w", err)
	}
	if err := c.AddSet(v6, e6); err != nil {
		return fmt.Errorf("nftables: set: %w", err)
	}
	prio := nftables.ChainPriorityFilter
	ch := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: prio})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: f.rule(unix.NFPROTO_IPV4, v4, 16, 4)})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: f.rule(unix.NFPROTO_IPV6, v6, 24, 16)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: build table %s: %w", t.Name, err)
	}
	f.mu.Lock()
	f.ready = true
	f.mu.Unlock()
	return nil
}

// rule: meta nfproto P, meta l4proto tcp, meta mark & M != M, the daddr
// (at off, n bytes) in set, tcp dport Port: reject with tcp reset.
func (f *Fence) rule(proto byte, set *nftables.Set, off, n uint32) []expr.Any {
	mark := make([]byte, 4)
	binary.NativeEndian.PutUint32(mark, f.opts.Mark)
	port := binary.BigEndian.AppendUint16(nil, f.opts.Port)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: mark},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}
}

func (f *Fence) elements(addrs []netip.Addr) (v4, v6 []nftables.SetElement) {
	for _, a := range addrs {
		e := nftables.SetElement{Key: a.AsSlice(), Timeout: f.opts.TTL}
		if a.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	return v4, v6
}

// Add fences addr now (its element times out after TTL unless Run
// refreshes it).
func (f *Fence) Add(addr netip.Addr) error {
	addr = addr.Unmap()
	f.mu.Lock()
	if _, ok := f.want[addr]; !ok {
		f.want[addr] = time.Now()
	}
	ready := f.ready
	f.mu.Unlock()
	f.nl.Lock()
	defer f.nl.Unlock()
	if !ready {
		return f.reconcileLocked() // the rebuild fences it
	}
	return f.armLocked([]netip.Addr{addr})
}

// arm (re)adds addrs with a fresh timeout: delete and add in one
// transaction, since adding an existing element keeps its old timeout.
func (f *Fence) armLocked(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	_, v4, v6 := f.objects()
	e4, e6 := f.elements(addrs)
	// A delete of an element that expired meanwhile would fail the batch:
	// re-adding into a just-flushed copy is what Reconcile does; here the
	// common case is cheap and the rare one falls back to it.
	for _, s := range []struct {
		set *nftables.Set
		els []nftables.SetElement
	}{{v4, e4}, {v6, e6}} {
		if len(s.els) == 0 {
			continue
		}
		if err := c.SetDeleteElements(s.set, s.els); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		if err := c.SetAddElements(s.set, s.els); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		if rerr := f.reconcileLocked(); rerr != nil {
			return errors.Join(fmt.Errorf("nftables: re-arm %v: %w", addrs, err), rerr)
		}
	}
	return nil
}

// Remove lifts the fence on addr.
func (f *Fence) Remove(addr netip.Addr) error {
	addr = addr.Unmap()
	f.mu.Lock()
	_, ok := f.want[addr]
	delete(f.want, addr)
	f.mu.Unlock()
	if !ok {
		return nil
	}
	f.nl.Lock()
	defer f.nl.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	_, v4, v6 := f.objects()
	e4, e6 := f.elements([]netip.Addr{addr})
	set, els := v4, e4
	if len(e6) > 0 {
		set, els = v6, e6
	}
	if err := c.SetDeleteElements(set, els); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := c.Flush(); err != nil {
		return f.reconcileLocked() // its element expired meanwhile, or the table went: rebuild without it
	}
	return nil
}

// Fenced returns the fenced addresses and since when.
func (f *Fence) Fenced() map[netip.Addr]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.want)
}

// Installed reads the addresses the kernel's table holds now (none when
// there is no table).
func (f *Fence) Installed() ([]netip.Addr, error) {
	if ok, err := f.exists(); err != nil || !ok {
		return nil, err
	}
	f.nl.Lock()
	defer f.nl.Unlock()
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	_, v4, v6 := f.objects()
	var out []netip.Addr
	for _, s := range []*nftables.Set{v4, v6} {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		for _, e := range els {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Run reconciles at start: a table left by an earlier process is rebuilt
// empty (its fences are not this process's to keep); without one, nothing
// is created until the first Add. Then it re-arms every fenced address each
// Refresh until ctx ends, and removes the table then: a plugin that stops
// cleanly leaves no fence behind.
func (f *Fence) Run(ctx context.Context) error {
	if left, err := f.exists(); err != nil {
		klog.ErrorS(err, "cannot read nftables; DFS fencing will fail until it can", "table", f.opts.Table)
	} else if left {
		klog.InfoS("rebuilding the DFS fence table an earlier process left", "table", f.opts.Table)
		if err := f.Reconcile(); err != nil {
			klog.ErrorS(err, "cannot rebuild the DFS fence table", "table", f.opts.Table)
		}
	}
	t := time.NewTicker(f.opts.Refresh)
	defer t.Stop()
	for {
		f.mu.Lock()
		ready := f.ready
		want := slices.Collect(maps.Keys(f.want))
		f.mu.Unlock()
		var err error
		switch {
		case len(want) == 0:
		case !ready:
			err = f.Reconcile()
		default:
			f.nl.Lock()
			err = f.armLocked(want)
			f.nl.Unlock()
		}
		if err != nil {
			klog.ErrorS(err, "cannot keep the DFS fence", "table", f.opts.Table, "fenced", want)
		}
		select {
		case <-ctx.Done():
			return f.remove()
		case <-t.C:
		}
	}
}

// exists reports whether the table is there.
func (f *Fence) exists() (bool, error) {
	f.nl.Lock()
	defer f.nl.Unlock()
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	return slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == f.opts.Table }), nil
}

func (f *Fence) remove() error {
	f.nl.Lock()
	defer f.nl.Unlock()
	c, err := f.conn()
	if err != nil {
		return err
	}
	t, _, _ := f.objects()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil || !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		return nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove table %s: %w", t.Name, err)
	}
	return nil
}
