// Package listeners tells which listening TCP sockets of this machine
// belong to this process and which to another process on the same
// address.
//
// On Linux two processes of one user may listen on one address when both
// set SO_REUSEPORT, as Caddy does: neither gets an error, and each
// connection reaches one of them. A dial cannot tell them apart, nor tell
// another process from this process's own listener of a config being
// replaced; the socket's inode can. The listening sockets come from the
// kernel's socket diagnostics (netlink sock_diag, asked for listeners
// only, so a machine with many connections answers as fast as an idle
// one); which process holds an inode, from /proc.
package listeners

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Listener is one listening TCP socket.
type Listener struct {
	Addr  netip.AddrPort
	Inode uint64
}

// Address families and the TCP state, as the kernel numbers them.
const (
	afInet    = 2
	afInet6   = 10
	tcpListen = 10
)

// diagMsgLen is the size of the kernel's struct inet_diag_msg: family,
// state, timer, retrans (a byte each), the socket id (ports, source and
// destination addresses, interface, cookie: 48 bytes), then expires,
// rqueue, wqueue, uid and inode (4 bytes each).
const diagMsgLen = 72

// ParseDiagMsg reads one inet_diag_msg, the answer sock_diag gives per
// socket. ok is false for anything shorter, of another family, or not
// listening.
func ParseDiagMsg(b []byte) (l Listener, ok bool) {
	if len(b) < diagMsgLen || b[1] != tcpListen {
		return Listener{}, false
	}
	port := binary.BigEndian.Uint16(b[4:6])
	var addr netip.Addr
	switch b[0] {
	case afInet:
		addr = netip.AddrFrom4([4]byte(b[8:12]))
	case afInet6:
		addr = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
	default:
		return Listener{}, false
	}
	inode := uint64(binary.NativeEndian.Uint32(b[68:72]))
	if inode == 0 {
		return Listener{}, false
	}
	return Listener{Addr: netip.AddrPortFrom(addr, port), Inode: inode}, true
}

// SocketInodes is the set of socket inodes among the open files listed
// in fdDir (/proc/self/fd): the sockets a process holds.
func SocketInodes(fdDir string) (map[uint64]bool, error) {
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]bool)
	for _, e := range entries {
		if inode, ok := socketInode(filepath.Join(fdDir, e.Name())); ok {
			out[inode] = true
		}
	}
	return out, nil
}

// socketInode reads an fd link of the form socket:[INODE].
func socketInode(link string) (uint64, bool) {
	target, err := os.Readlink(link)
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	inode, err := strconv.ParseUint(s, 10, 64)
	return inode, err == nil
}

// Overlapping reports whether two of the listeners take connections for
// one address: a port shared by sockets whose addresses overlap. Only
// then is it worth asking which process holds which.
func Overlapping(all []Listener) bool {
	byPort := make(map[uint16][]netip.Addr, len(all))
	for _, l := range all {
		for _, a := range byPort[l.Addr.Port()] {
			if overlaps(a, l.Addr.Addr()) {
				return true
			}
		}
		byPort[l.Addr.Port()] = append(byPort[l.Addr.Port()], l.Addr.Addr())
	}
	return false
}

// Shared is a listening address of this process with the listeners of
// other processes that take connections meant for it.
type Shared struct {
	Own    netip.AddrPort
	Others []Listener
}

// SharedPorts pairs each address this process listens on (own holds its
// socket inodes) with the other processes' listeners on the same port
// whose address overlaps: the same address, or either one unspecified
// (0.0.0.0 and :: both count as every address, as a dual-stack socket
// does). Each own address appears once, in the order first met.
func SharedPorts(all []Listener, own map[uint64]bool) []Shared {
	var others []Listener
	for _, l := range all {
		if !own[l.Inode] {
			others = append(others, l)
		}
	}
	var out []Shared
	seen := make(map[netip.AddrPort]bool)
	for _, l := range all {
		if !own[l.Inode] || seen[l.Addr] {
			continue
		}
		seen[l.Addr] = true
		s := Shared{Own: l.Addr}
		for _, o := range others {
			if o.Addr.Port() == l.Addr.Port() && overlaps(l.Addr.Addr(), o.Addr.Addr()) {
				s.Others = append(s.Others, o)
			}
		}
		if len(s.Others) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func overlaps(a, b netip.Addr) bool {
	a, b = a.Unmap(), b.Unmap()
	return a == b || a.IsUnspecified() || b.IsUnspecified()
}

// maxProcesses bounds the processes Owner looks at.
const maxProcesses = 1 << 16

// Owner names the process that holds the socket inode, looking through
// root's (/proc's) process directories: its pid and command name. It
// finds only processes whose open files this one may read (the same
// user's, which SO_REUSEPORT requires anyway).
func Owner(root string, inode uint64) (pid int, command string, ok bool) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return 0, "", false
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	looked := 0
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p <= 0 {
			continue
		}
		if looked++; looked > maxProcesses {
			break
		}
		fdDir := filepath.Join(root, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && target == want {
				comm, _ := os.ReadFile(filepath.Join(root, e.Name(), "comm"))
				return p, strings.TrimSpace(string(comm)), true
			}
		}
	}
	return 0, "", false
}
