package failover

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// A credential source that hangs, or panics, must not hold up or bring
// down requests another provider can serve. These tests release whatever
// hangs only when they end: a request that waited on it would never be
// answered within the client's timeout.

// hungHelper writes a `credential command` helper that runs until the test
// ends (it polls for a release file), and returns its path and a func
// reporting whether it has been started.
func hungHelper(t *testing.T) (path string, started func() bool) {
	t.Helper()
	dir := t.TempDir()
	startedFile, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	// it also ends when its directory is gone: the test binary may exit
	// before the helper's own timeout kills it, and it must not outlive
	// the test
	path = writeExecutable(t, dir, "hung-helper", fmt.Sprintf(
		"#!/bin/sh\ntouch %q\nwhile [ ! -e %q ] && [ -d %q ]; do sleep 0.05; done\necho sk-helper-finally\n", startedFile, release, dir))
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
	return path, func() bool { _, err := os.Stat(startedFile); return err == nil }
}

// hungTokenEndpoint is a token endpoint that answers only when the test
// releases it (or ends).
func hungTokenEndpoint(t *testing.T, access string) (*credTokenEndpoint, func()) {
	t.Helper()
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	e := newCredTokenEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		issueToken(access, "sk-ant-ort01-after-hang", 28800, 0)(w, r)
	})
	t.Cleanup(open) // runs before the server's Close
	return e, open
}

// askN sends n requests one after the other and checks that each was
// answered by want, in one attempt.
func askN(t *testing.T, p *proxy, n int, want string) {
	t.Helper()
	client := sdkClient(p, option.WithRequestTimeout(15*time.Second))
	for i := range n {
		msg, raw, err := sendMessage(client, fmt.Sprint("hi ", i))
		if err != nil {
			t.Fatalf("request %d: %v; want %s's answer without waiting on provider 1's credential", i, err, want)
		}
		if textOf(msg) != "from "+want || raw.Header.Get("X-LLM-Provider") != want || raw.Header.Get("X-LLM-Attempts") != "1" {
			t.Fatalf("request %d: %q from %q in %q attempts; want %s's answer in 1",
				i, textOf(msg), raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"), want)
		}
	}
}

// A `credential command` helper that hangs: requests go to the next
// provider at once, and keep doing so, while the helper runs; the helper
// runs once.
func TestCredHungCommandHelperDoesNotHoldRequests(t *testing.T) {
	useFakeClock(t)
	t.Setenv("LLMF_CREDWAIT_KEY", "sk-backup")
	helper, started := hungHelper(t)
	a := newUpstream(t, "hw_a", replyMessage("from hw_a"))
	b := newUpstream(t, "hw_b", replyMessage("from hw_b"))
	p := startProxy(t, failoverSite(
		a.providerBlock("credential command "+helper+" {", "\ttimeout 2m", "}"),
		b.providerBlock("credential env LLMF_CREDWAIT_KEY")))
	askN(t, p, 5, "hw_b")
	if !started() {
		t.Fatal("the helper was never started")
	}
	if a.Hits() != 0 {
		t.Fatalf("hw_a was sent %d requests without a credential", a.Hits())
	}
	// passed over, not charged: its credential is on its way
	if s := snapshot(t, "hw_a"); s.State != breaker.Closed || s.Failovers != 0 {
		t.Fatalf("hw_a: %+v, want closed and not charged", s)
	}
}

// A `credential claude` whose token endpoint hangs, with an expired token:
// requests go to the next provider at once, again and again while the
// refresh hangs; once the refresh lands, the provider is used again.
func TestCredHungTokenEndpointExpiredToken(t *testing.T) {
	useFakeClock(t)
	const newToken = "sk-ant-oat01-after-the-hang"
	tokens, release := hungTokenEndpoint(t, newToken)
	c := newClaudeSub(t, tokens, "sk-ant-oat01-expired", "sk-ant-ort01-r", time.Now().Add(-time.Minute), "he_a", replyMessage("from he_a"), "he_b")
	a := c.sub
	p := startProxy(t, c.site())
	askN(t, p, 5, "he_b")
	if a.Hits() != 0 || tokens.Hits() != 1 {
		t.Fatalf("he_a hits %d, token endpoint hits %d; want 0 and 1 (one refresh, in the background)", a.Hits(), tokens.Hits())
	}
	release()
	// the refreshed token ends the auth cooldown: he_a answers again
	deadline := time.Now().Add(10 * time.Second)
	for a.Hits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("he_a not used again after its token was refreshed")
		}
		askAny(t, p)
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.lastHeader().Get("Authorization"); got != "Bearer "+newToken {
		t.Fatalf("he_a got Authorization %q, want the refreshed token", got)
	}
}

func askAny(t *testing.T, p *proxy) {
	t.Helper()
	if _, err := sdkClient(p, option.WithRequestTimeout(15*time.Second)).Messages.New(context.Background(), userMessage("hi")); err != nil {
		t.Fatal(err)
	}
}

// A still-valid token inside refresh_before is used at once while its
// refresh hangs, and the refreshed one from then on.
func TestCredHungTokenEndpointValidToken(t *testing.T) {
	useFakeClock(t)
	const oldToken, newToken = "sk-ant-oat01-two-minutes-left", "sk-ant-oat01-refreshed-late"
	tokens, release := hungTokenEndpoint(t, newToken)
	c := newClaudeSub(t, tokens, oldToken, "sk-ant-ort01-r", time.Now().Add(2*time.Minute), "hv_a", replyMessage("from hv_a"), "hv_b")
	a, b := c.sub, c.backup
	p := startProxy(t, c.site())
	askN(t, p, 3, "hv_a")
	for i, h := range headersOf(a) {
		if got := h.Get("Authorization"); got != "Bearer "+oldToken {
			t.Fatalf("request %d: Authorization %q, want the still valid token", i, got)
		}
	}
	if tokens.Hits() != 1 || b.Hits() != 0 {
		t.Fatalf("token endpoint hits %d, hv_b hits %d; want 1 and 0", tokens.Hits(), b.Hits())
	}
	release()
	deadline := time.Now().Add(10 * time.Second)
	for a.lastHeader().Get("Authorization") != "Bearer "+newToken {
		if time.Now().After(deadline) {
			t.Fatal("the refreshed token was never used")
		}
		askAny(t, p)
		time.Sleep(10 * time.Millisecond)
	}
}

// The only provider waits for its credential (bounded by the request):
// there is nothing else to serve the request with.
func TestCredOnlyProviderWaitsForItsCredential(t *testing.T) {
	useFakeClock(t)
	dir := t.TempDir()
	release := filepath.Join(dir, "release")
	helper := writeExecutable(t, dir, "slow-helper", fmt.Sprintf(
		"#!/bin/sh\nwhile [ ! -e %q ]; do sleep 0.05; done\necho sk-slow-helper-key\n", release))
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
	a := newUpstream(t, "ow_a", replyMessage("from ow_a"))
	p := startProxy(t, failoverSite(a.providerBlock("credential command "+helper+" {", "\ttimeout 1m", "}")))
	go func() {
		// released once the request is waiting
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if snapshot(t, "ow_a").Requests > 0 {
				break // admitted: now waiting for the credential
			}
			time.Sleep(5 * time.Millisecond)
		}
		_ = os.WriteFile(release, nil, 0o600)
	}()
	askN(t, p, 1, "ow_a")
	if got := a.lastHeader().Get("X-Api-Key"); got != "sk-slow-helper-key" {
		t.Fatalf("ow_a got x-api-key %q", got)
	}
}

// panickySource is a credential source module for tests: it reports a
// missing credential once, then panics on every lookup.
type panickySource struct{}

var panickyCalls atomic.Int32

func (panickySource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  credsource.Namespace + ".test_panicky",
		New: func() caddy.Module { return new(panickySource) },
	}
}

func (s *panickySource) Credential(context.Context) (credsource.Credential, error) {
	if panickyCalls.Add(1) == 1 {
		return credsource.Credential{}, fmt.Errorf("not there yet: %w", credsource.ErrMissing)
	}
	panic("credential source bug")
}

func (s *panickySource) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func init() { caddy.RegisterModule(panickySource{}) }

// A credential source that panics is that provider's failure, not the
// process's: the request fails over, and the breaker, which then asks
// the source whether its credential changed, survives it.
func TestCredPanickingSourceFailsOver(t *testing.T) {
	useFakeClock(t)
	panickyCalls.Store(0)
	a := newUpstream(t, "pn_a", replyMessage("from pn_a"))
	b := newUpstream(t, "pn_b", replyMessage("from pn_b"))
	p := startProxy(t, failoverSite(a.providerBlock("credential test_panicky"), b.providerBlock()))
	askN(t, p, 4, "pn_b")
	if panickyCalls.Load() < 2 {
		t.Fatalf("the source was asked %d times; want the panicking lookups exercised", panickyCalls.Load())
	}
	if a.Hits() != 0 {
		t.Fatalf("pn_a was sent %d requests", a.Hits())
	}
	if s := snapshot(t, "pn_a"); s.State != breaker.Open || s.LastClass != classify.Auth {
		t.Fatalf("pn_a: %+v, want open auth", s)
	}
}

// The breaker never calls a credential source: with an auth cooldown that
// a new credential could end, a source that panics when asked leaves the
// breaker usable (before, the panic unlocked an unlocked mutex: a fatal
// error that no recover catches).
func TestAdmitSurvivesPanickingSource(t *testing.T) {
	p := &Provider{Name: "adm_panic", source: panicSource{}, state: new(providerState)}
	b := p.state.breakers.shared()
	until := b.Failure(setT0, breaker.Failure{Class: classify.Auth, Cooldown: 30 * time.Minute, MaxCooldown: time.Hour, Credential: "v1"})
	func() {
		defer func() { _ = recover() }()
		if a := p.admit(context.Background(), setT0.Add(time.Minute), ""); a.OK || !a.RetryAt.Equal(until) {
			t.Errorf("Admit = %+v, want refused until %v", a, until)
		}
	}()
	// a breaker left locked would block Snapshot for ever
	snap := make(chan breaker.Snapshot, 1)
	go func() { snap <- b.Snapshot(setT0.Add(time.Minute)) }()
	select {
	case s := <-snap:
		if s.State != breaker.Open {
			t.Fatalf("after a panicking source: %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the breaker is left locked")
	}
}

type panicSource struct{}

func (panicSource) Credential(context.Context) (credsource.Credential, error) { panic("boom") }
func (panicSource) Ready(context.Context, time.Duration) (credsource.Credential, error) {
	panic("boom")
}
