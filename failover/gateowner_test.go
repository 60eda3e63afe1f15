package failover

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// recordingOwner is a gateOwner that answers with a fixed verdict and
// records what the gate told it.
type recordingOwner struct {
	verdict    classify.Verdict
	asked      []int // statuses it was asked to classify
	committed  int
	streamErrs []streaminspect.ErrorInfo
}

func (o *recordingOwner) verdictFor(status int, _ http.Header, _ []byte) classify.Verdict {
	o.asked = append(o.asked, status)
	return o.verdict
}

func (o *recordingOwner) committing(_ int, hdr http.Header) {
	o.committed++
	hdr.Set("X-Owner", "saw the commit")
}

func (o *recordingOwner) streamFailed(ei streaminspect.ErrorInfo) {
	o.streamErrs = append(o.streamErrs, ei)
}

// heldError runs an error response through a gate whose owner answers v,
// the way reverse_proxy writes it.
func heldError(v classify.Verdict, status int, body string) (*gate, *recordingOwner, *httptest.ResponseRecorder, gateResult) {
	rec := httptest.NewRecorder()
	owner := &recordingOwner{verdict: v}
	g := newGate(rec, testHold(), func() {}, owner)
	g.Header().Set("Content-Type", "application/json")
	g.WriteHeader(status)
	_, _ = g.Write([]byte(body))
	return g, owner, rec, g.finish(false, false)
}

// The owner's verdict decides a held error: one that fails over is held
// back whole for the handler, one that does not goes to the client, with
// the owner told before the status leaves.
func TestGateErrorVerdictFromOwner(t *testing.T) {
	const body = `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`
	t.Run("fails over", func(t *testing.T) {
		g, owner, rec, res := heldError(classify.Verdict{Class: classify.RateLimit}, http.StatusTooManyRequests, body)
		if res.committed || owner.committed != 0 || rec.Body.Len() != 0 {
			t.Fatalf("committed %v, owner told %d times, client got %q", res.committed, owner.committed, rec.Body.String())
		}
		if len(owner.asked) != 1 || owner.asked[0] != http.StatusTooManyRequests {
			t.Fatalf("owner asked about %v", owner.asked)
		}
		if res.status != http.StatusTooManyRequests || res.body == nil || res.body.String() != body || res.verdict.Class != classify.RateLimit {
			t.Fatalf("held %d %v %q", res.status, res.verdict, res.body)
		}
		if g.header != nil {
			t.Fatal("the gate kept the header map it gave the handler")
		}
	})
	t.Run("passes through", func(t *testing.T) {
		_, owner, rec, res := heldError(classify.Verdict{Class: classify.ClientError}, http.StatusBadRequest, body)
		if !res.committed || owner.committed != 1 {
			t.Fatalf("committed %v, owner told %d times", res.committed, owner.committed)
		}
		if rec.Code != http.StatusBadRequest || rec.Body.String() != body || rec.Header().Get("X-Owner") != "saw the commit" {
			t.Fatalf("client got %d %q, headers %v", rec.Code, rec.Body.String(), rec.Header())
		}
	})
	t.Run("held for a retry", func(t *testing.T) {
		_, _, rec, res := heldError(classify.Verdict{Class: classify.Repairable, Retry: true}, http.StatusBadRequest, body)
		if res.committed || rec.Body.Len() != 0 || !res.verdict.Retry {
			t.Fatalf("committed %v, client got %q, verdict %+v", res.committed, rec.Body.String(), res.verdict)
		}
	})
}

// An error event in a committed stream reaches the owner once, before the
// client has it, and the event itself is passed on.
func TestGateStreamErrorToOwner(t *testing.T) {
	rec := httptest.NewRecorder()
	owner := &recordingOwner{}
	g := newGate(rec, testHold(), func() {}, owner)
	g.Header().Set("Content-Type", "text/event-stream")
	g.WriteHeader(http.StatusOK)
	for _, ev := range streamEvents("m", "hello")[:4] {
		_, _ = g.Write([]byte(ev))
	}
	errEv := string(streaminspect.ErrorEvent("overloaded_error", "Overloaded"))
	_, _ = g.Write([]byte(errEv))
	_, _ = g.Write([]byte(errEv))
	res := g.finish(false, false)
	if !res.committed || owner.committed != 1 {
		t.Fatalf("committed %v, owner told of commit %d times", res.committed, owner.committed)
	}
	if len(owner.streamErrs) != 1 || owner.streamErrs[0].Type != "overloaded_error" {
		t.Fatalf("owner heard of %+v", owner.streamErrs)
	}
	if !strings.Contains(rec.Body.String(), "overloaded_error") {
		t.Fatal("the client did not get the error event")
	}
}

// A gate serves another attempt only when nothing of the last one can
// still touch it; reset hands it over clean.
func TestGateReuse(t *testing.T) {
	t.Run("after a held success", func(t *testing.T) {
		hold := testHold()
		hold.IdleTimeout = caddy.Duration(time.Hour)
		g := newGate(httptest.NewRecorder(), hold, func() {}, nil)
		g.Header().Set("Content-Type", "application/json")
		g.Header().Set("X-First", "1")
		g.WriteHeader(http.StatusOK)
		_, _ = g.Write([]byte(`{"ok":true}`))
		if res := g.finish(false, false); !res.committed {
			t.Fatal("not committed")
		}
		if !g.reusable() {
			t.Fatal("a gate whose idle watch was stopped in time is not reusable")
		}
		idle := g.idle.t
		rec := httptest.NewRecorder()
		g.reset(rec, hold, func() {}, nil)
		if len(g.header) != 0 || g.mode != modeUndecided || g.status != 0 {
			t.Fatalf("reset left header %v, mode %v, status %d", g.header, g.mode, g.status)
		}
		g.Header().Set("Content-Type", "application/json")
		g.WriteHeader(http.StatusOK)
		_, _ = g.Write([]byte(`{"second":true}`))
		g.finish(false, false)
		if rec.Body.String() != `{"second":true}` || rec.Header().Get("X-First") != "" {
			t.Fatalf("second attempt's client got %q, headers %v", rec.Body.String(), rec.Header())
		}
		if g.idle.t != idle {
			t.Fatal("the idle timer was not reused")
		}
	})
	t.Run("not after its idle watch fired", func(t *testing.T) {
		hold := testHold()
		hold.Hold, hold.IdleTimeout = HoldOff, caddy.Duration(time.Millisecond)
		cancelled := make(chan struct{})
		g := newGate(httptest.NewRecorder(), hold, func() { close(cancelled) }, nil)
		g.Header().Set("Content-Type", "text/event-stream")
		g.WriteHeader(http.StatusOK)
		select {
		case <-cancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("the idle watch never fired")
		}
		g.finish(false, false)
		if g.reusable() {
			t.Fatal("a gate whose idle callback ran is reusable")
		}
	})
	t.Run("not after a 101", func(t *testing.T) {
		g := newGate(httptest.NewRecorder(), testHold(), func() {}, nil)
		g.WriteHeader(http.StatusSwitchingProtocols)
		g.finish(false, false)
		if g.reusable() {
			t.Fatal("a gate that handed its connection on is reusable")
		}
	})
}
