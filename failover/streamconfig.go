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

// Defaults of the stream block.
const (
	defaultHoldBytes   = 64 << 10
	defaultHoldWait    = 20 * time.Second
	defaultIdleTimeout = 90 * time.Second
)

// StreamConfig is the `stream` block: how a streamed (SSE) response is
// held before the client sees it, so that an early error can still fail
// over, and how a committed stream is watched.
type StreamConfig struct {
	// Hold is how long a streamed response is held: `first_content`
	// (default) until the first content event, `first_event` until the
	// first event of any kind, or `off` to stream at once (no failover on
	// an early stream error).
	Hold HoldMode `json:"hold,omitempty"`
	// HoldBytes commits a held stream that reached this many bytes
	// without a decisive event. Default: 64KiB; at most 1GiB.
	HoldBytes int64 `json:"hold_bytes,omitempty"`
	// HoldWait commits a held stream that waited this long without a
	// decisive event. Default: 20s.
	HoldWait caddy.Duration `json:"hold_wait,omitempty"`
	// IdleTimeout ends a committed stream whose upstream sent no event
	// but pings for this long, with an error event to the client, and
	// cools the provider (overloaded), so the client's retry goes
	// elsewhere. Pings do not count, as they do not for Claude Code,
	// which ends a stream 300 s after its last other event (its HTTP
	// client's own timeout fires from 244 s) and then retries the same
	// proxy. Default: 90s: well before that, and far above the gaps
	// between the events of a healthy generation, which streams text,
	// thinking or tool input as it is produced. Negative (`off` in the
	// Caddyfile) disables it.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
}

// validate checks the block; zero values stand for defaults.
func (c *StreamConfig) validate() error {
	switch c.Hold {
	case "", HoldFirstContent, HoldFirstEvent, HoldOff:
	default:
		return fmt.Errorf("stream hold: %q is not a hold mode: write first_content, first_event or off", c.Hold)
	}
	if c.HoldBytes < 0 || c.HoldBytes > maxHoldBytes {
		return fmt.Errorf("stream hold_bytes: %d bytes is out of range: write a size from 1 byte to 1GiB, such as 64KiB", c.HoldBytes)
	}
	if c.HoldWait < 0 {
		return fmt.Errorf("stream hold_wait: %s is negative: write a positive duration such as 20s", time.Duration(c.HoldWait))
	}
	return nil
}

// applyDefaults fills what the config left zero.
func (c *StreamConfig) applyDefaults() {
	setDefault(&c.Hold, HoldFirstContent)
	setDefault(&c.HoldBytes, defaultHoldBytes)
	setDefault(&c.HoldWait, caddy.Duration(defaultHoldWait))
	setDefault(&c.IdleTimeout, caddy.Duration(defaultIdleTimeout))
}

func (c *StreamConfig) inspectPolicy() streaminspect.Policy {
	if c.Hold == HoldFirstEvent {
		return streaminspect.HoldFirstEvent
	}
	return streaminspect.HoldFirstContent
}
