package fence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"
)

// sock_diag (linux/sock_diag.h, linux/inet_diag.h).
const (
	sockDiagByFamily = 20
	sockDestroy      = 21
	inetDiagMark     = 15 // INET_DIAG_MARK attribute: reported to CAP_NET_ADMIN
	diagReqSize      = 56 // struct inet_diag_req_v2
	diagMsgSize      = 72 // struct inet_diag_msg
	tcpListen        = 10
)

// ErrNoDestroy: the kernel cannot destroy sockets (no
// CONFIG_INET_DIAG_DESTROY) or this process may not (no CAP_NET_ADMIN).
var ErrNoDestroy = errors.New("sock_diag SOCK_DESTROY not available")

// Kill ends every TCP connection of this network namespace to addr:port
// whose socket mark does not carry mark (the prober's), the way `ss -K`
// does: the kernel's cifs client sees its connection fail at once and
// reconnects (to the next DFS target, when the fence holds this one). It
// returns how many it ended.
func (f *Fence) Kill(addr netip.Addr) (int, error) {
	n := 0
	var err error
	run := func() { n, err = kill(addr.Unmap(), f.opts.Port, f.opts.Mark) }
	if f.opts.NetNS == 0 {
		run()
		return n, err
	}
	done := make(chan struct{})
	go func() { // a thread of its own in the namespace; it dies with the goroutine
		defer close(done)
		runtime.LockOSThread()
		if err = unix.Setns(f.opts.NetNS, unix.CLONE_NEWNET); err != nil {
			return
		}
		run()
	}()
	<-done
	return n, err
}

func kill(addr netip.Addr, port uint16, mark uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 5}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	family := uint8(unix.AF_INET)
	if addr.Is6() {
		family = unix.AF_INET6
	}
	ids, err := dump(fd, family, addr, port, mark)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if err := destroy(fd, family, id); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM) {
				return n, fmt.Errorf("%w: %w", ErrNoDestroy, err)
			}
			if !errors.Is(err, unix.ENOENT) { // gone meanwhile
				errs = append(errs, err)
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func request(typ, flags uint16, family uint8, states uint32, id []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+diagReqSize)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b))) //nolint:gosec // 72
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], 1)
	r := b[unix.NLMSG_HDRLEN:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:8], states)
	copy(r[8:56], id)
	return b
}

// dump lists the sock ids (48-byte struct inet_diag_sockid) of TCP sockets
// connected to addr:port without mark.
func dump(fd int, family uint8, addr netip.Addr, port uint16, mark uint32) ([][]byte, error) {
	states := ^uint32(0) &^ (1 << tcpListen)
	if err := unix.Sendto(fd, request(sockDiagByFamily, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, states, nil), 0,
		&unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag dump: %w", err)
	}
	var ids [][]byte
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag dump: %w", err)
		}
		msgs, err := parseNetlink(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag dump: %w", err)
		}
		for _, m := range msgs {
			switch m.typ {
			case unix.NLMSG_DONE:
				return ids, nil
			case unix.NLMSG_ERROR:
				return nil, nlError(m.data)
			}
			d := m.data
			if len(d) < diagMsgSize {
				continue
			}
			id := d[4:52]
			dport := binary.BigEndian.Uint16(id[2:4])
			dst := netip.AddrFrom16([16]byte(id[20:36]))
			if family == unix.AF_INET {
				dst = netip.AddrFrom4([4]byte(id[20:24]))
			}
			if dport != port || dst != addr || marked(d[diagMsgSize:], mark) {
				continue
			}
			ids = append(ids, append([]byte(nil), id...))
		}
	}
}

// marked reports whether the attributes carry INET_DIAG_MARK with mark set.
func marked(attrs []byte, mark uint32) bool {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4])
		if l < 4 || l > len(attrs) {
			return false
		}
		if typ == inetDiagMark && l >= 8 {
			return binary.NativeEndian.Uint32(attrs[4:8])&mark == mark
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return false
}

func destroy(fd int, family uint8, id []byte) error {
	if err := unix.Sendto(fd, request(sockDestroy, unix.NLM_F_REQUEST|unix.NLM_F_ACK, family, ^uint32(0), id), 0,
		&unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag destroy: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("sock_diag destroy: %w", err)
	}
	msgs, err := parseNetlink(buf[:n])
	if err != nil || len(msgs) == 0 || msgs[0].typ != unix.NLMSG_ERROR {
		return fmt.Errorf("sock_diag destroy: unexpected answer (%w)", err)
	}
	return nlError(msgs[0].data)
}

// nlError decodes an NLMSG_ERROR payload: 0 is an ACK.
func nlError(d []byte) error {
	if len(d) < 4 {
		return errors.New("sock_diag: short error message")
	}
	if code := int32(binary.NativeEndian.Uint32(d[0:4])); code != 0 { //nolint:gosec // an errno
		return unix.Errno(-code)
	}
	return nil
}

type nlMsg struct {
	typ  uint16
	data []byte
}

// parseNetlink splits a netlink datagram into its messages, checking each
// length before it reads.
func parseNetlink(b []byte) ([]nlMsg, error) {
	var out []nlMsg
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("netlink message of %d bytes in %d", l, len(b))
		}
		out = append(out, nlMsg{typ: binary.NativeEndian.Uint16(b[4:6]), data: b[unix.NLMSG_HDRLEN:l]})
		b = b[min((l+3)&^3, len(b)):]
	}
	return out, nil
}
