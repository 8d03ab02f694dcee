// Package interceptors holds Flume's built-in interceptors: timestamp,
// host, static, remove_header, search_replace, regex_filter,
// regex_extractor (with the pass-through and millis serializers) and uuid,
// under their aliases and Flume's class names. morphline is refused. Each
// reads Flume's keys with Flume's defaults (see README.md).
//
// Regular expressions are Go's RE2: Java's lookaround, backreferences and
// possessive quantifiers are refused when the agent builds, naming the key.
package interceptors

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
)

const flumePkg = "org.apache.flume.interceptor."

// Register adds the built-in interceptors to r.
func Register(r *agent.Registry) {
	r.Interceptor(newTimestamp, "timestamp", flumePkg+"TimestampInterceptor$Builder")
	r.Interceptor(newHost, "host", flumePkg+"HostInterceptor$Builder")
	r.Interceptor(newStatic, "static", flumePkg+"StaticInterceptor$Builder")
	r.Interceptor(newRemoveHeader, "remove_header", flumePkg+"RemoveHeaderInterceptor$Builder")
	r.Interceptor(newSearchReplace, "search_replace", flumePkg+"SearchAndReplaceInterceptor$Builder")
	r.Interceptor(newRegexFilter, "regex_filter", flumePkg+"RegexFilteringInterceptor$Builder")
	r.Interceptor(newRegexExtractor, "regex_extractor", flumePkg+"RegexExtractorInterceptor$Builder")
	r.Interceptor(newUUID, "uuid", "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder")
	r.Refuse("interceptor", "Sluice has no Kite Morphlines runtime; use regex_extractor, search_replace, regex_filter and remove_header for what a morphline did",
		"morphline", "org.apache.flume.sink.solr.morphline.MorphlineInterceptor$Builder")
}

// headerFunc sets one header on each event; the value is computed per
// batch (now) or per event.
type headerSetter struct {
	header   string
	preserve bool
	value    func() string
	perEvent bool
}

func (h *headerSetter) Intercept(evs []channel.Event) ([]channel.Event, error) {
	v := ""
	if !h.perEvent {
		v = h.value()
	}
	for i := range evs {
		if h.preserve {
			if _, ok := evs[i].Headers[h.header]; ok {
				continue
			}
		}
		if evs[i].Headers == nil {
			evs[i].Headers = map[string]string{}
		}
		if h.perEvent {
			v = h.value()
		}
		evs[i].Headers[h.header] = v
	}
	return evs, nil
}

// timestamp: headerName (timestamp) = the time the event is intercepted, in
// milliseconds since the epoch; preserveExisting (false) keeps a header
// already there.
func newTimestamp(s *agent.Setup) (agent.Interceptor, error) {
	pres, err := s.Conf.Bool("preserveExisting", false)
	if err != nil {
		return nil, err
	}
	return &headerSetter{header: s.Conf.String("headerName", "timestamp"), preserve: pres, perEvent: true,
		value: func() string { return strconv.FormatInt(time.Now().UnixMilli(), 10) }}, nil
}

// host: hostHeader (host) = this host's IP address (useIP, true) or host
// name; preserveExisting (false).
func newHost(s *agent.Setup) (agent.Interceptor, error) {
	pres, err := s.Conf.Bool("preserveExisting", false)
	if err != nil {
		return nil, err
	}
	useIP, err := s.Conf.Bool("useIP", true)
	if err != nil {
		return nil, err
	}
	var v string
	if useIP {
		v = localIP()
	} else if v, err = os.Hostname(); err != nil {
		return nil, fmt.Errorf("interceptor %s: host name: %w", s.Name, err)
	}
	return &headerSetter{header: s.Conf.String("hostHeader", "host"), preserve: pres, value: func() string { return v }}, nil
}

// localIP is the first non-loopback IPv4 address of an interface that is
// up (else IPv6, else 127.0.0.1): what the host interceptor stamps. No
// name lookup: it never touches the network.
func localIP() string {
	ifs, _ := net.Interfaces()
	var v6 string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
				continue
			}
			if ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
			if v6 == "" {
				v6 = ipn.IP.String()
			}
		}
	}
	if v6 != "" {
		return v6
	}
	return "127.0.0.1"
}

// static: key (key) = value (value); preserveExisting (true).
func newStatic(s *agent.Setup) (agent.Interceptor, error) {
	pres, err := s.Conf.Bool("preserveExisting", true)
	if err != nil {
		return nil, err
	}
	v := s.Conf.String("value", "value")
	return &headerSetter{header: s.Conf.String("key", "key"), preserve: pres, value: func() string { return v }}, nil
}

// uuid: headerName (id) = prefix + a random (version 4) UUID, per event;
// preserveExisting (true).
func newUUID(s *agent.Setup) (agent.Interceptor, error) {
	pres, err := s.Conf.Bool("preserveExisting", true)
	if err != nil {
		return nil, err
	}
	prefix := s.Conf.String("prefix", "")
	return &headerSetter{header: s.Conf.String("headerName", "id"), preserve: pres, perEvent: true,
		value: func() string { return prefix + newUUIDv4() }}, nil
}

func newUUIDv4() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// removeHeader drops the headers named withName, those in fromList (split
// on the regex fromListSeparator, default \s*,\s*) and those whose whole
// name matches the regex matching.
type removeHeader struct {
	name     string
	list     map[string]bool
	matching *regexp.Regexp
}

func newRemoveHeader(s *agent.Setup) (agent.Interceptor, error) {
	r := &removeHeader{name: s.Conf.String("withName", ""), list: map[string]bool{}}
	sep, err := compile(s, "fromListSeparator", `\s*,\s*`)
	if err != nil {
		return nil, err
	}
	if l := s.Conf.String("fromList", ""); l != "" {
		for _, n := range sep.Split(l, -1) {
			if n != "" {
				r.list[n] = true
			}
		}
	}
	if s.Conf.Has("matching") {
		m, err := compile(s, "matching", "")
		if err != nil {
			return nil, err
		}
		r.matching = regexp.MustCompile(`^(?:` + m.String() + `)$`) // Java's matches(): the whole name
	}
	return r, nil
}

func (r *removeHeader) Intercept(evs []channel.Event) ([]channel.Event, error) {
	for _, ev := range evs {
		for k := range ev.Headers {
			if k == r.name && r.name != "" || r.list[k] || r.matching != nil && r.matching.MatchString(k) {
				delete(ev.Headers, k)
			}
		}
	}
	return evs, nil
}

// compile reads prop as a regular expression (def when unset).
func compile(s *agent.Setup, prop, def string) (*regexp.Regexp, error) {
	expr := s.Conf.String(prop, def)
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, s.Conf.Errorf(prop, "%q is not a regular expression Sluice can run (Go RE2 syntax: no lookaround, backreferences or possessive quantifiers): %v", expr, err)
	}
	return re, nil
}
