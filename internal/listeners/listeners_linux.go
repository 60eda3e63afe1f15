package listeners

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// sockDiagByFamily is SOCK_DIAG_BY_FAMILY, the sock_diag request type.
const sockDiagByFamily = 20

// maxListeners bounds what Listening reads.
const maxListeners = 1 << 16

// Listening returns the machine's listening TCP sockets (IPv4 and IPv6)
// in this network namespace.
func Listening() ([]Listener, error) {
	var out []Listener
	for _, family := range []uint8{afInet, afInet6} {
		got, err := dump(family, maxListeners-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// dump asks sock_diag for the listening TCP sockets of one family.
func dump(family uint8, limit int) ([]Listener, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer syscall.Close(fd)
	// nlmsghdr (16 bytes), then inet_diag_req_v2 (56 bytes): family,
	// protocol, extensions, padding, the states wanted, a zero socket id
	req := make([]byte, syscall.NLMSG_HDRLEN+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1)
	req[16], req[17] = family, syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], 1<<tcpListen)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	var out []Listener
	buf := make([]byte, 64<<10)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return out, nil
			case syscall.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno > 0 {
						return nil, fmt.Errorf("sock_diag: %w", syscall.Errno(errno))
					}
				}
				return nil, errors.New("sock_diag: error")
			case sockDiagByFamily:
				if l, ok := ParseDiagMsg(m.Data); ok {
					if len(out) >= limit {
						return nil, fmt.Errorf("sock_diag: more than %d listeners", maxListeners)
					}
					out = append(out, l)
				}
			}
		}
	}
}
