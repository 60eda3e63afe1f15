package failover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "llm",
		Usage: "[--address <admin-api>] [--config <path> [--adapter <name>]] [-v] [status | reset <provider> | cooldown <provider> <duration> | claude [--undo]]",
		Short: "Shows and controls llm_failover providers of a running Caddy",
		Long: `
Prints the status of every llm_failover provider of a running Caddy, as an
aligned table read from the admin API (GET /llm/providers): its breaker state,
the class of its last failure, the time left in its cooldown, its counters and
the state of its credential (never the credential itself), and its spend when
it has prices; then, from GET /llm/clients, each client with limits or spend:
per limit what is used of it and when it frees up. The table fits 100
columns: usage, spend and a credential's trouble go on lines of their own
under the provider; -v prints them as columns.

  caddy llm                          status (the default)
  caddy llm reset <provider>         close the provider's breaker now
  caddy llm cooldown <provider> 10m  cool the provider down by hand (drain)
  caddy llm claude                   point Claude Code at this proxy (--undo reverts)

The admin address is found like Caddy's own commands: --address, else the
admin address of --config, else the default (localhost:2019).`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringP("address", "", "", "The address of the running Caddy's admin API")
			cmd.Flags().StringP("config", "c", "", "Configuration file, to find the admin address")
			cmd.Flags().StringP("adapter", "a", "", "Name of the config adapter to apply (when --config is used)")
			cmd.Flags().BoolP("verbose", "v", false, "Every column on one line per provider (wider than 100 columns)")
			cmd.RunE = func(cmd *cobra.Command, args []string) error {
				fl := caddycmd.Flags{FlagSet: cmd.Flags()}
				exitOnError(runLLMCommand(os.Stdout, fl.String("address"), fl.String("config"), fl.String("adapter"), fl.Bool("verbose"), args))
				return nil
			}
			cmd.AddCommand(claudeCommand())
		},
	})
}

// runLLMCommand runs `caddy llm` against the admin API; out receives the
// table. It returns the process exit code.
func runLLMCommand(out io.Writer, address, configFile, adapter string, verbose bool, args []string) (int, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, configFile, adapter)
	if err != nil {
		return 1, fmt.Errorf("finding the admin API address: %v", err)
	}
	action := "status"
	if len(args) > 0 {
		action = args[0]
	}
	switch {
	case action == "status" && len(args) <= 1:
		resp, err := adminCall(addr, http.MethodGet, "/llm/providers")
		if err != nil {
			return 1, err
		}
		var status StatusResponse
		if err := json.Unmarshal(resp, &status); err != nil {
			return 1, fmt.Errorf("reading /llm/providers: %v", err)
		}
		// which Caddy answered: two may share a port (SO_REUSEPORT)
		instance := "Caddy at " + addr
		if site, err := proxyURLFromAdmin(addr); err == nil {
			instance += ", serving " + site
		}
		fmt.Fprintln(out, instance)
		if verbose {
			printStatusTable(out, status.Providers)
		} else {
			printCompactStatusTable(out, status.Providers)
		}
		// clients with limits or spend, when the admin API has them
		if resp, err := adminCall(addr, http.MethodGet, "/llm/clients"); err == nil {
			var clients ClientsResponse
			if json.Unmarshal(resp, &clients) == nil {
				printClientsTable(out, clients)
			}
		}
		return 0, nil
	case action == "reset" && len(args) == 2:
		if _, err := adminCall(addr, http.MethodPost, "/llm/providers/"+url.PathEscape(args[1])+"/reset"); err != nil {
			return 1, err
		}
		fmt.Fprintf(out, "%s: breaker closed\n", args[1])
		return 0, nil
	case action == "cooldown" && len(args) == 3:
		if _, err := adminCall(addr, http.MethodPost, "/llm/providers/"+url.PathEscape(args[1])+"/cooldown?duration="+url.QueryEscape(args[2])); err != nil {
			return 1, err
		}
		fmt.Fprintf(out, "%s: cooling down for %s\n", args[1], args[2])
		return 0, nil
	}
	return 2, fmt.Errorf("usage: caddy llm [status | reset <provider> | cooldown <provider> <duration> | claude [--undo]]")
}

// exitOnError ends the process with code after printing err as one
// human line on stderr: Caddy's own wrapper would log it as JSON.
func exitOnError(code int, err error) {
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "caddy llm: "+err.Error())
	if code == 0 {
		code = 1
	}
	os.Exit(code)
}

// adminCall calls the admin API and turns its failures into one line a
// person can act on.
func adminCall(addr, method, uri string) ([]byte, error) {
	res, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, nil)
	if err != nil {
		return nil, adminError(addr, err)
	}
	defer res.Body.Close()
	return io.ReadAll(io.LimitReader(res.Body, maxAdminAnswer))
}

// maxAdminAnswer bounds what the command reads from the admin API.
const maxAdminAnswer = 16 << 20

// adminError rewrites AdminAPIRequest's errors: "performing request: Get
// ...: connection refused" and "caddy responded with error: HTTP 404:
// {"error":"..."}".
func adminError(addr string, err error) error {
	msg := err.Error()
	if strings.HasPrefix(msg, "performing request:") {
		return fmt.Errorf("no Caddy admin endpoint at %s (is it running?)", addr)
	}
	if i := strings.IndexByte(msg, '{'); i >= 0 && strings.HasPrefix(msg, "caddy responded with error") {
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(msg[i:]), &body) == nil && body.Error != "" {
			if strings.Contains(msg[:i], "HTTP 404") && strings.Contains(body.Error, "no route") ||
				strings.Contains(body.Error, "unknown llm endpoint") {
				return fmt.Errorf("the Caddy at %s does not have the llm_failover admin API (built without this plugin?)", addr)
			}
			return errors.New(body.Error)
		}
	}
	return err
}

// tableWidth is what the default table fits in: a terminal of 100 columns.
const tableWidth = 100

// printCompactStatusTable is the default table: one row of short columns
// per provider, and under it, indented and wrapped, what does not fit in
// a column: usage, spend, a model family's cooldown, and the credential
// when it needs someone to act (missing, expired, ...).
func printCompactStatusTable(out io.Writer, providers []ProviderStatus) {
	var rows bytes.Buffer
	tw := tabwriter.NewWriter(&rows, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tSTATE\tLAST CLASS\tCOOLDOWN\tREQUESTS\tSUCCESSES\tFAILOVERS")
	details := make([][]string, 1, 1+len(providers)) // per table line, the lines under it
	for _, p := range providers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", p.Name, stateText(p), dash(string(p.LastClass)), dash(p.CooldownLeft),
			p.Requests, p.Successes, p.Failovers)
		var d []string
		for _, sc := range p.Scopes {
			d = append(d, fmt.Sprintf("%s cooling: %s, %s left", sc.Scope, sc.Class, sc.CooldownLeft))
		}
		if u := formatUsage(p.Usage); u != "-" {
			d = append(d, "usage: "+u)
		}
		if p.SpendUSD > 0 {
			d = append(d, "spend: "+budget.Dollars(int64(p.SpendUSD*1e6)))
		}
		switch credsource.State(p.Credential) {
		case credsource.StateOK, credsource.StatePassthrough, "none", "client's":
		default:
			d = append(d, "credential "+p.Credential+": "+dash(strings.TrimSpace(p.CredentialReason)))
		}
		details = append(details, d)
	}
	_ = tw.Flush()
	lines := strings.Split(strings.TrimSuffix(rows.String(), "\n"), "\n")
	for i, line := range lines {
		fmt.Fprintln(out, strings.TrimRight(line, " "))
		if i < len(details) {
			for _, d := range details[i] {
				for _, w := range wrapText(d, tableWidth-4, 2) {
					fmt.Fprintln(out, "    "+w)
				}
			}
		}
	}
}

// wrapText breaks s at spaces into lines of at most width runes, the lines
// after the first indented by hang more; a word longer than a line is cut.
func wrapText(s string, width, hang int) []string {
	var lines []string
	line, indent := "", ""
	for _, word := range strings.Fields(s) {
		for utf8.RuneCountInString(indent+word) > width {
			if line != "" {
				lines = append(lines, line)
				line, indent = "", strings.Repeat(" ", hang)
			}
			r := []rune(word)
			cut := width - len(indent)
			lines = append(lines, indent+string(r[:cut]))
			word, indent = string(r[cut:]), strings.Repeat(" ", hang)
		}
		switch {
		case line == "":
			line = indent + word
		case utf8.RuneCountInString(line+" "+word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			indent = strings.Repeat(" ", hang)
			line = indent + word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stateText is the STATE column: a passthrough provider whose breakers
// are per client says how many clients are cooling.
func stateText(p ProviderStatus) string {
	state := string(p.State)
	if p.ClientsCooling > 0 && p.State == breaker.Closed {
		state = fmt.Sprintf("%d client", p.ClientsCooling)
		if p.ClientsCooling > 1 {
			state += "s"
		}
		state += " cooling"
	} else if p.Saturated != nil && p.State == breaker.Closed {
		state = "saturated"
	}
	return state
}

// printStatusTable is `caddy llm -v`: every column on the provider's row.
func printStatusTable(out io.Writer, providers []ProviderStatus) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	spend := slices.ContainsFunc(providers, func(p ProviderStatus) bool { return p.SpendUSD > 0 })
	header := "PROVIDER\tSTATE\tLAST CLASS\tCOOLDOWN LEFT\tREQUESTS\tSUCCESSES\tFAILOVERS\tCREDENTIAL\tUSAGE"
	if spend {
		header += "\tSPEND"
	}
	fmt.Fprintln(tw, header)
	for _, p := range providers {
		left := p.CooldownLeft
		if left == "" {
			left = "-"
		}
		class := string(p.LastClass)
		if class == "" {
			class = "-"
		}
		cred := p.Credential
		if p.CredentialReason != "" && p.Credential != "ok" {
			cred += " (" + strings.TrimSpace(p.CredentialReason) + ")"
		}
		state := stateText(p)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s", p.Name, state, class, left,
			p.Requests, p.Successes, p.Failovers, cred, formatUsage(p.Usage))
		if spend {
			fmt.Fprint(tw, "\t"+budget.Dollars(int64(p.SpendUSD*1e6)))
		}
		fmt.Fprintln(tw)
		for _, sc := range p.Scopes {
			// a cooldown of one model family: "subscription · sonnet"
			fmt.Fprintf(tw, "%s · %s\t%s\t%s\t%s\t\t\t\t\t\n", p.Name, sc.Scope, breaker.Open, sc.Class, sc.CooldownLeft)
		}
	}
	_ = tw.Flush()
}

// printClientsTable lists, after the providers, the handlers' own limits
// and the clients with limits or spend: per limit what is used of it and
// when it frees up. Nothing when there are none.
func printClientsTable(out io.Writer, cr ClientsResponse) {
	rows := make([]ClientStatus, 0, len(cr.Clients)+1)
	if len(cr.Limits) > 0 {
		rows = append(rows, ClientStatus{Name: "(all clients)", Limits: cr.Limits})
	}
	for _, c := range cr.Clients {
		if len(c.Limits) > 0 || c.SpendUSD > 0 {
			rows = append(rows, c)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tREQUESTS\tSPEND\tLIMITS")
	for _, c := range rows {
		limits := make([]string, 0, len(c.Limits))
		for _, l := range c.Limits {
			s := l.Text
			switch {
			case l.Reached:
				s += ", reached, frees up in " + l.FreesUpIn
			case l.FreesUpIn != "":
				s += ", frees up in " + l.FreesUpIn
			}
			limits = append(limits, s)
		}
		lim := strings.Join(limits, " | ")
		if lim == "" {
			lim = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.Name, c.Requests, budget.Dollars(int64(c.SpendUSD*1e6)), lim)
	}
	_ = tw.Flush()
}

// formatUsage is the usage column of `caddy llm`:
// "5h 87% · resets in 1h12m | 7d 41%". The binding window says when it
// resets.
func formatUsage(u *UsageStatus) string {
	if u == nil || len(u.Windows) == 0 {
		if u != nil && u.Status != "" {
			return u.Status
		}
		return "-"
	}
	names := make([]string, 0, len(u.Windows))
	for name := range u.Windows {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := capacity.Rank(a), capacity.Rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for _, name := range names {
		w := u.Windows[name]
		if w.Utilization == nil {
			continue
		}
		s := fmt.Sprintf("%s %d%%", name, int(math.Round(*w.Utilization*100)))
		if name == u.Binding && w.ResetsInSeconds > 0 {
			s += " · resets in " + compactDuration(time.Duration(w.ResetsInSeconds)*time.Second)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " | ")
}

// compactDuration writes a duration as 3d4h, 1h12m, 4m or 30s: two units
// at most, which is what a reset hours away needs.
func compactDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		days, hours := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
		if hours == 0 {
			return strconv.Itoa(int(days)) + "d"
		}
		return fmt.Sprintf("%dd%dh", days, hours)
	case d >= time.Hour:
		hours, mins := d/time.Hour, (d%time.Hour)/time.Minute
		if mins == 0 {
			return strconv.Itoa(int(hours)) + "h"
		}
		return fmt.Sprintf("%dh%dm", hours, mins)
	case d >= time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}
