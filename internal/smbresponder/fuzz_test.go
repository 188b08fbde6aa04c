package smbresponder

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	smb2 "github.com/cloudsoda/go-smb2"
)

// recordingConn keeps a copy of everything written to it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p) //nolint:wrapcheck // transparent wrapper
}

// recordClient returns the bytes the real client sends for dial, Mount,
// Echo, Umount and Logoff.
func recordClient(tb testing.TB) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, server := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- New(Options{}).ServeConn(ctx, server) }()
	rec := &recordingConn{Conn: client}
	sess, err := dial(ctx, rec, &smb2.NTLMInitiator{})
	if err != nil {
		_ = client.Close()
		tb.Fatalf("DialConn: %v (server: %v)", err, <-served)
	}
	tree, err := sess.WithContext(ctx).Mount(ipc)
	if err == nil {
		err = sess.WithContext(ctx).Echo()
	}
	if err == nil {
		err = tree.WithContext(ctx).Umount()
	}
	_ = sess.WithContext(ctx).Logoff()
	if err := <-served; err != nil {
		tb.Fatalf("ServeConn: %v", err)
	}
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return bytes.Clone(rec.out.Bytes())
}

// splitFrames cuts a Direct TCP stream into its SMB2 messages.
func splitFrames(tb testing.TB, stream []byte) [][]byte {
	tb.Helper()
	var msgs [][]byte
	r := bytes.NewReader(stream)
	var lenBuf [4]byte
	for r.Len() > 0 {
		m, err := readFrame(r, &lenBuf)
		if err != nil {
			tb.Fatalf("recorded stream: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// FuzzServeConn feeds arbitrary bytes to ServeConn: unframed, as they come,
// or framed, as one SMB2 frame after a valid NEGOTIATE (so the fuzzer reaches
// the session, tree and echo handlers). ServeConn must return, with nil or
// an expected error, and leave nothing running (the bubble must end).
func FuzzServeConn(f *testing.F) {
	stream := recordClient(f)
	f.Add(stream, false)
	for _, m := range splitFrames(f, stream)[1:] {
		f.Add(m, true)
	}
	f.Add([]byte{}, false)
	f.Add([]byte{0, 0xff, 0xff, 0xff}, false)
	f.Add(request(CmdEcho, 1, 0, 0, echoReq()), true)
	f.Add(sessionSetupReq(ntlmNegotiateMsg()), true)

	negotiate := frameOf(request(CmdNegotiate, 0, 0, 0, negotiateReq(dialect202, dialect210)))
	put16(negotiate[4+14:], 64) // enough credits for a compound chain
	f.Fuzz(func(t *testing.T, data []byte, framed bool) {
		input := data
		if framed {
			if len(data) > maxFrameSize {
				return
			}
			input = append(bytes.Clone(negotiate), frameOf(data)...)
		}
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			client, server := net.Pipe()
			served := make(chan error, 1)
			go func() { served <- New(Options{}).ServeConn(ctx, server) }()
			drained := make(chan struct{})
			go func() {
				defer close(drained)
				_, _ = io.Copy(io.Discard, client)
			}()
			_, _ = client.Write(input) // fails once the server drops the connection
			_ = client.Close()
			err := <-served
			<-drained
			if err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ServeConn: %v", err)
			}
		})
	})
}
