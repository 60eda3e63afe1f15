package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// run.sh checks its ports before the long build and names the one that is
// taken.
func TestRunScriptNamesATakenPort(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "run.sh")
	// the taken port is site c's (PORT_BASE+3)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT_BASE=%d", port-3), "OUT="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if err == nil {
		t.Fatal("run.sh went on with a taken port")
	}
	msg := stderr.String()
	if !strings.Contains(msg, fmt.Sprintf("127.0.0.1:%d is already in use", port)) || strings.Contains(msg, "building") {
		t.Fatalf("stderr: %s", msg)
	}
}
