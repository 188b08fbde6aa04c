package smbresponder

import (
	"context"
	"net"
	"syscall"
)

// Network is a set of responders by host:port.
type Network map[string]*Server

// Dial returns a dial function (as pkg/smb's DialFunc) that connects to
// the responder of an address over net.Pipe, usable in synctest bubbles,
// serving it until ctx ends; an address without one refuses the
// connection.
func (n Network) Dial(ctx context.Context) func(_ context.Context, network, addr string) (net.Conn, error) {
	return func(_ context.Context, _, addr string) (net.Conn, error) {
		srv := n[addr]
		if srv == nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		}
		c, s := net.Pipe()
		go func() { _ = srv.ServeConn(ctx, s) }()
		return c, nil
	}
}
