package failover

import (
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

// warnUnusableCredential logs, once at provision, a provider whose
// credential cannot work on this machine (an unset variable, a missing
// file, a Keychain without `security`), naming what to set. The provider
// still starts: the credential may appear later, and until then requests
// fail over past it.
func warnUnusableCredential(logger *zap.Logger, p *Provider) error {
	pf, ok := p.source.(credsource.Preflight)
	if !ok {
		return nil
	}
	err := pf.Preflight()
	if err != nil {
		logger.Warn("provider credential cannot work here; requests will fail over past this provider until it does",
			zap.String("provider", p.Name), zap.String("problem", err.Error()))
	}
	return err
}
