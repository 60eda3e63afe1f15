package failover

import (
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// HoldMode says how long a streamed response is held before the client
// sees it.
type HoldMode string

// Hold modes.
const (
	// HoldFirstContent holds until the first content event (Anthropic
	// content_block_start, an OpenAI chunk with a non-empty delta). The
	// events before it (message_start, ping) carry nothing the user sees,
	// so holding them costs nothing, and an error in their place can still
	// fail over. The default.
	HoldFirstContent HoldMode = "first_content"
	// HoldFirstEvent holds until the first event of any kind.
	HoldFirstEvent HoldMode = "first_event"
	// HoldOff streams at once: no failover on an early stream error.
	HoldOff HoldMode = "off"
)

// Defaults of the stream policy.
const (
	defaultHoldBytes = 64 << 10
	defaultHoldWait  = 20 * time.Second
	defaultIdle      = 5 * time.Minute
)

// holdPolicy configures how event streams are held and watched.
type holdPolicy struct {
	// Mode is `first_content` (default), `first_event` or `off`.
	Mode HoldMode `json:"hold,omitempty"`
	// Bytes commits a held stream that reached this many bytes without a
	// decisive event. Default: 64KiB.
	Bytes int64 `json:"hold_bytes,omitempty"`
	// Wait commits a held stream that waited this long without a decisive
	// event. Default: 20s.
	Wait caddy.Duration `json:"hold_wait,omitempty"`
	// Idle ends a committed stream whose upstream sent nothing for this
	// long, with an error event to the client. Default: 5m, far above the
	// gaps of a healthy generation (Anthropic sends ping events while a
	// model thinks) and below the 10-minute timeout of Anthropic's SDKs,
	// so the client hears why. Negative disables it.
	Idle caddy.Duration `json:"idle_timeout,omitempty"`
}

func (p *holdPolicy) applyDefaults() error {
	switch p.Mode {
	case "":
		p.Mode = HoldFirstContent
	case HoldFirstContent, HoldFirstEvent, HoldOff:
	default:
		return fmt.Errorf("stream hold: unknown mode %q (want first_content, first_event or off)", p.Mode)
	}
	if p.Bytes == 0 {
		p.Bytes = defaultHoldBytes
	}
	if p.Wait == 0 {
		p.Wait = caddy.Duration(defaultHoldWait)
	}
	if p.Idle == 0 {
		p.Idle = caddy.Duration(defaultIdle)
	}
	return nil
}

func (p *holdPolicy) inspectPolicy() streaminspect.Policy {
	if p.Mode == HoldFirstEvent {
		return streaminspect.HoldFirstEvent
	}
	return streaminspect.HoldFirstContent
}
