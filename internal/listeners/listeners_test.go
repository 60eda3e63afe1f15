package listeners

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// diagMsg is an inet_diag_msg as the kernel writes it.
func diagMsg(addr string, state byte, inode uint32) []byte {
	ap := netip.MustParseAddrPort(addr)
	b := make([]byte, diagMsgLen)
	b[0], b[1] = afInet6, state
	if ap.Addr().Is4() {
		b[0] = afInet
	}
	binary.BigEndian.PutUint16(b[4:], ap.Port())
	copy(b[8:], ap.Addr().AsSlice())
	binary.NativeEndian.PutUint32(b[68:], inode)
	return b
}

func TestParseDiagMsg(t *testing.T) {
	for _, tc := range []struct {
		msg  []byte
		want string // "" for not a listener
	}{
		{diagMsg("127.0.0.1:2019", tcpListen, 261), "127.0.0.1:2019 261"},
		{diagMsg("0.0.0.0:4181", tcpListen, 7), "0.0.0.0:4181 7"},
		{diagMsg("[::]:4181", tcpListen, 8), "[::]:4181 8"},
		{diagMsg("[::1]:443", tcpListen, 9), "[::1]:443 9"},
		{diagMsg("[2001:db8::5]:80", tcpListen, 10), "[2001:db8::5]:80 10"},
		{diagMsg("[::ffff:127.0.0.1]:8080", tcpListen, 11), "127.0.0.1:8080 11"},
		{diagMsg("127.0.0.1:2019", 1, 12), ""},        // established
		{diagMsg("127.0.0.1:2019", tcpListen, 0), ""}, // no inode
		{diagMsg("127.0.0.1:2019", tcpListen, 13)[:diagMsgLen-1], ""},
		{append([]byte{1}, diagMsg("127.0.0.1:2019", tcpListen, 14)[1:]...), ""}, // AF_UNIX
		{nil, ""},
	} {
		l, ok := ParseDiagMsg(tc.msg)
		got := ""
		if ok {
			got = fmt.Sprintf("%s %d", l.Addr, l.Inode)
		}
		if got != tc.want {
			t.Errorf("ParseDiagMsg(%x) = %q; want %q", tc.msg, got, tc.want)
		}
	}
}

func listener(addr string, inode uint64) Listener {
	return Listener{Addr: netip.MustParseAddrPort(addr), Inode: inode}
}

func TestSharedPorts(t *testing.T) {
	all := []Listener{
		listener("127.0.0.1:2019", 100), // ours: admin
		listener("127.0.0.1:2019", 101), // ours: the config being replaced
		listener("127.0.0.1:2019", 200), // another Caddy's admin
		listener("127.0.0.1:4181", 201), // another Caddy's site, on our wildcard
		listener("127.0.0.1:5000", 202), // nobody's business
		listener("10.0.0.5:6000", 203),  // another address, same port as ours
		listener("[::]:4181", 102),      // ours: a site on every address
		listener("[::1]:6000", 103),     // ours
		listener("[::1]:7000", 104),     // ours, alone
		listener("[::1]:7000", 105),     // ours, the replaced config's
		listener("[2001:db8::1]:80", 9), // unrelated
	}
	own := map[uint64]bool{100: true, 101: true, 102: true, 103: true, 104: true, 105: true}
	var got []string
	for _, s := range SharedPorts(all, own) {
		var others []string
		for _, o := range s.Others {
			others = append(others, fmt.Sprint(o.Inode))
		}
		got = append(got, s.Own.String()+" <- "+strings.Join(others, ","))
	}
	want := []string{"127.0.0.1:2019 <- 200", "[::]:4181 <- 201"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("shared ports %q; want %q (10.0.0.5:6000 and [::1]:6000 do not overlap)", got, want)
	}
	if !Overlapping(all) {
		t.Error("Overlapping: false; 127.0.0.1:2019 is listened on three times")
	}
	alone := []Listener{all[0], all[4], all[5], all[7], all[8], all[10]}
	if Overlapping(alone) {
		t.Errorf("Overlapping(%v): true; no two share an address", alone)
	}
	if len(SharedPorts(all[:2], own)) != 0 {
		t.Error("two sockets of this process on one address are not shared with another")
	}
}

// A fake /proc: this process's fds, another process's.
func TestSocketInodesAndOwner(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	self := filepath.Join(root, "self", "fd")
	must(os.MkdirAll(self, 0o755))
	for i, inode := range []uint64{100, 101, 102} {
		must(os.Symlink(fmt.Sprintf("socket:[%d]", inode), filepath.Join(self, fmt.Sprint(i+3))))
	}
	must(os.Symlink("/dev/null", filepath.Join(self, "0")))
	must(os.Symlink("pipe:[55]", filepath.Join(self, "1")))
	must(os.Symlink("socket:[x]", filepath.Join(self, "2")))
	other := filepath.Join(root, "4242")
	must(os.MkdirAll(filepath.Join(other, "fd"), 0o755))
	must(os.WriteFile(filepath.Join(other, "comm"), []byte("caddy\n"), 0o644))
	must(os.Symlink("socket:[200]", filepath.Join(other, "fd", "7")))

	own, err := SocketInodes(self)
	must(err)
	if len(own) != 3 || !own[100] || !own[101] || !own[102] {
		t.Fatalf("own sockets %v; want 100, 101, 102", own)
	}
	if pid, comm, ok := Owner(root, 200); !ok || pid != 4242 || comm != "caddy" {
		t.Errorf("Owner(200) = %d %q %v; want 4242 caddy", pid, comm, ok)
	}
	if _, _, ok := Owner(root, 201); ok {
		t.Error("Owner found a process for a socket nobody holds")
	}
}

// The kernel's answer: a listener this process opened is found at its
// address, its inode is among this process's sockets, and /proc names
// this process as its owner.
func TestOwnListenerOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sock_diag and /proc are Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	all, err := Listening()
	if err != nil {
		t.Skipf("sock_diag cannot be asked here: %v", err)
	}
	own, err := SocketInodes("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range all {
		if l.Addr != addr {
			continue
		}
		if !own[l.Inode] {
			t.Fatalf("listener %s (inode %d) is not among this process's sockets", addr, l.Inode)
		}
		if pid, _, ok := Owner("/proc", l.Inode); !ok || pid != os.Getpid() {
			t.Errorf("Owner = %d %v; want this process, %d", pid, ok, os.Getpid())
		}
		return
	}
	t.Fatalf("listener %s not among the %d listeners the kernel reported", addr, len(all))
}

func FuzzParseDiagMsg(f *testing.F) {
	f.Add(diagMsg("127.0.0.1:2019", tcpListen, 261))
	f.Add(diagMsg("[::]:4181", tcpListen, 8))
	f.Add(diagMsg("[::ffff:127.0.0.1]:8080", tcpListen, 11))
	f.Add(diagMsg("127.0.0.1:2019", 1, 12))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		l, ok := ParseDiagMsg(msg)
		// a whole message of a listening IPv4 or IPv6 socket with an
		// inode is read, anything else is not: a parser that read nothing
		// would pass every check below
		whole := len(msg) >= diagMsgLen && msg[1] == tcpListen && (msg[0] == afInet || msg[0] == afInet6) &&
			binary.NativeEndian.Uint32(msg[68:72]) != 0
		if ok != whole {
			t.Fatalf("ParseDiagMsg(%x): ok %v, want %v", msg, ok, whole)
		}
		if !ok {
			return
		}
		if !l.Addr.IsValid() || l.Inode == 0 || l.Addr.Addr().Is4In6() || msg[1] != tcpListen {
			t.Fatalf("ParseDiagMsg(%x) = %+v", msg, l)
		}
		// what it read is what the kernel wrote
		if l.Addr.Port() != binary.BigEndian.Uint16(msg[4:6]) || l.Inode != uint64(binary.NativeEndian.Uint32(msg[68:72])) {
			t.Fatalf("ParseDiagMsg(%x) = %+v: port or inode differs", msg, l)
		}
		if want := msg[8:12]; msg[0] == afInet6 {
			want = msg[8:24]
			if a16 := l.Addr.Addr().As16(); string(a16[:]) != string(want) {
				t.Fatalf("ParseDiagMsg(%x) = %+v: address differs", msg, l)
			}
		} else if a4 := l.Addr.Addr().As4(); string(a4[:]) != string(want) {
			t.Fatalf("ParseDiagMsg(%x) = %+v: address differs", msg, l)
		}
	})
}
