package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The component tree: an agent's sources, sinks and sink groups, with each
// source's interceptors and channel selector and each group's sink
// processor, as Flume lays them out:
//
//	a1.sources = r1                          a1.sinks = k1 k2
//	a1.sources.r1.type = netcat              a1.sinks.k1.type = logger
//	a1.sources.r1.channels = c1 c2           a1.sinks.k1.channel = c1
//	a1.sources.r1.interceptors = i1 i2       a1.sinkgroups = g1
//	a1.sources.r1.interceptors.i1.type = …   a1.sinkgroups.g1.sinks = k1 k2
//	a1.sources.r1.selector.type = …          a1.sinkgroups.g1.processor.type = failover
//
// Parse builds the tree and checks its wiring (every listed component has a
// type, a source names its channels with `channels`, a sink its one channel
// with `channel`, every channel and sink named exists, a sink is in at most
// one group); what each component's own keys mean is for the component to
// read through its View, which reports the keys nobody read.

// Component kinds.
const (
	KindSource      = "source"
	KindSink        = "sink"
	KindSinkGroup   = "sinkgroup"
	KindInterceptor = "interceptor"
	KindSelector    = "selector"
	KindProcessor   = "processor"
)

// Component is one configured component and its properties.
type Component struct {
	Kind string
	Name string // empty for a selector or processor (named by their owner)
	// Type is the value of its type key; a selector defaults to
	// "replicating", a processor to "default".
	Type string
	// Prefix is the full key prefix of its properties, e.g.
	// "a1.sources.r1." or "a1.sources.r1.interceptors.i1.".
	Prefix string
	// File and Line locate it: the line of its type key, else of the list
	// that names it.
	File string
	Line int

	// Channels: a source's channels (in the order listed), a sink's one.
	Channels []string
	// Interceptors of a source, in the order its interceptors key lists
	// them (the order they run in); Selector its channel selector.
	Interceptors []*Component
	Selector     *Component
	// Sinks of a sink group, in the order listed; Processor its sink
	// processor.
	Sinks     []string
	Processor *Component

	props map[string]Property // by property name (the key after Prefix)
	used  map[string]bool     // properties read through View or by Parse
	asked map[string]bool     // properties looked up through View, set or not
}

// Key returns the full key of one of c's properties.
func (c *Component) Key(prop string) string { return c.Prefix + prop }

// View returns a typed view of c. Reads through it mark keys as used (the
// marks are c's, shared by all its views); Unread lists the others.
func (c *Component) View() *View { return &View{c: c} }

// View reads a component's properties with types, defaults and limits; each
// error is an *Error naming the file, line and full key.
type View struct{ c *Component }

func (v *View) mark(prop string) (Property, bool) {
	if v.c.asked == nil {
		v.c.asked = map[string]bool{}
	}
	v.c.asked[prop] = true
	pr, ok := v.c.props[prop]
	if ok {
		v.c.used[prop] = true
	}
	return pr, ok
}

func (v *View) errorf(pr Property, format string, args ...any) error {
	return &Error{File: v.c.File, Line: pr.Line, Key: pr.Key, Reason: fmt.Sprintf(format, args...)}
}

// Errorf returns an *Error naming prop's full key and the line that sets
// it (the component's line when it is not set), for a value the component
// refuses after reading it.
func (v *View) Errorf(prop, format string, args ...any) error {
	pr, ok := v.c.props[prop]
	if !ok {
		pr = Property{Key: v.c.Key(prop), Line: v.c.Line}
	}
	return v.errorf(pr, format, args...)
}

// Key returns the full key of prop.
func (v *View) Key(prop string) string { return v.c.Key(prop) }

// Line returns the line that sets prop, or 0.
func (v *View) Line(prop string) int { return v.c.props[prop].Line }

// Suggest returns the property looked up through a view of the component
// (set or not) nearest to prop, for a "did you mean" hint on a key nobody
// read; "" when none is close.
func (v *View) Suggest(prop string) string {
	var asked []string
	for p := range v.c.asked {
		asked = append(asked, p)
	}
	slices.Sort(asked)
	return nearest(prop, asked)
}

// Has reports whether prop is set (without marking it read).
func (v *View) Has(prop string) bool { _, ok := v.c.props[prop]; return ok }

// String returns prop's value, or def when it is not set.
func (v *View) String(prop, def string) string {
	if pr, ok := v.mark(prop); ok {
		return pr.Value
	}
	return def
}

// Required returns prop's value; unset or empty is an error naming the
// component's line.
func (v *View) Required(prop string) (string, error) {
	pr, ok := v.mark(prop)
	if !ok || pr.Value == "" {
		return "", &Error{File: v.c.File, Line: v.c.Line, Key: v.c.Key(prop), Reason: "missing: required for " + v.c.describe()}
	}
	return pr.Value, nil
}

// Int returns prop as an integer in [min, max], or def when it is not set.
func (v *View) Int(prop string, def, min, max int64) (int64, error) {
	return v.integer(prop, def, min, max, "")
}

func (v *View) integer(prop string, def, min, max int64, unit string) (int64, error) {
	pr, ok := v.mark(prop)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(pr.Value), 10, 64)
	if err != nil {
		hint := ""
		if unit != "" {
			hint = " (the key takes a whole number of " + unit + ", with no unit suffix)"
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, v.errorf(pr, "%q is out of range%s", pr.Value, hint)
		}
		return 0, v.errorf(pr, "%q is not an integer%s", pr.Value, hint)
	}
	if n < min || n > max {
		return 0, v.errorf(pr, "%d is out of range [%d, %d]", n, min, max)
	}
	return n, nil
}

// Millis returns prop, a whole number of milliseconds (Flume's *Millis,
// *Ms and *Interval keys), as a duration in [0, max], or def.
func (v *View) Millis(prop string, def, max time.Duration) (time.Duration, error) {
	n, err := v.integer(prop, int64(def/time.Millisecond), 0, int64(max/time.Millisecond), "milliseconds")
	return time.Duration(n) * time.Millisecond, err
}

// Seconds returns prop, a whole number of seconds, as a duration in
// [0, max], or def.
func (v *View) Seconds(prop string, def, max time.Duration) (time.Duration, error) {
	n, err := v.integer(prop, int64(def/time.Second), 0, int64(max/time.Second), "seconds")
	return time.Duration(n) * time.Second, err
}

// Bool returns prop as true or false (case-insensitive, as Java reads
// them), or def.
func (v *View) Bool(prop string, def bool) (bool, error) {
	pr, ok := v.mark(prop)
	if !ok {
		return def, nil
	}
	switch strings.ToLower(strings.TrimSpace(pr.Value)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, v.errorf(pr, "%q is not true or false", pr.Value)
}

// List returns prop split on blanks (Flume's list syntax), or nil.
func (v *View) List(prop string) []string {
	pr, ok := v.mark(prop)
	if !ok {
		return nil
	}
	return strings.Fields(pr.Value)
}

// Prefixed returns the properties under prefix (e.g. "kafka.") with the
// prefix removed from their keys' property names, marking them read: for
// pass-through settings the component maps itself. Sorted by name.
func (v *View) Prefixed(prefix string) map[string]Property {
	out := map[string]Property{}
	for prop, pr := range v.c.props {
		if rest, ok := strings.CutPrefix(prop, prefix); ok && rest != "" {
			v.c.used[prop] = true
			out[rest] = pr
		}
	}
	return out
}

// Unread lists the properties nobody read, in file order.
func (v *View) Unread() []Property {
	var out []Property
	for prop, pr := range v.c.props {
		if !v.c.used[prop] {
			out = append(out, pr)
		}
	}
	slices.SortFunc(out, func(a, b Property) int { return a.Line - b.Line })
	return out
}

func (c *Component) describe() string {
	if c.Name == "" {
		return "the " + c.Kind + " " + strings.TrimSuffix(c.Prefix, ".")
	}
	return c.Kind + " " + c.Name
}

// tree builds the sources, sinks and sink groups of the agent from their
// keys (props: every key under "<agent>.sources", ".sinks", ".sinkgroups")
// and checks how they are wired to each other and to the channels.
func (p *parser) tree(props map[string]Property, channels []string) error {
	a := p.agent + "."
	known := map[string]bool{}
	for _, n := range channels {
		known[n] = true
	}
	var err error
	if p.cfg.Sources, err = p.components(props, a+"sources", KindSource); err != nil {
		return err
	}
	if p.cfg.Sinks, err = p.components(props, a+"sinks", KindSink); err != nil {
		return err
	}
	if p.cfg.SinkGroups, err = p.components(props, a+"sinkgroups", KindSinkGroup); err != nil {
		return err
	}
	for _, c := range p.cfg.Sources {
		if err := p.wireSource(c, known); err != nil {
			return err
		}
	}
	sinks := map[string]bool{}
	for _, c := range p.cfg.Sinks {
		sinks[c.Name] = true
		if err := p.wireSink(c, known); err != nil {
			return err
		}
	}
	inGroup := map[string]*Component{}
	for _, g := range p.cfg.SinkGroups {
		pr, ok := g.props["sinks"]
		g.used["sinks"] = true
		if !ok || len(strings.Fields(pr.Value)) == 0 {
			return p.errorf(g.Line, g.Key("sinks"), "missing: sink group %s needs the sinks it balances or fails over (%s = k1 k2)", g.Name, g.Key("sinks"))
		}
		for _, k := range strings.Fields(pr.Value) {
			switch {
			case !sinks[k]:
				return p.errorf(pr.Line, pr.Key, "sink %q is not in %ssinks", k, a)
			case inGroup[k] == g:
				return p.errorf(pr.Line, pr.Key, "sink %q is listed twice", k)
			case inGroup[k] != nil:
				return p.errorf(pr.Line, pr.Key, "sink %q is already in sink group %s (a sink belongs to at most one group; Flume would silently leave it out of this one)", k, inGroup[k].Name)
			}
			inGroup[k] = g
			g.Sinks = append(g.Sinks, k)
		}
		g.Processor = p.child(g, "processor.", KindProcessor, "", "default")
	}
	return nil
}

// components reads the list key (e.g. "a1.sources") and the properties of
// every component it names; properties of unlisted names are warned about.
func (p *parser) components(props map[string]Property, list, kind string) ([]*Component, error) {
	listPr, listed := props[list]
	var names []string
	if listed {
		for _, n := range strings.Fields(listPr.Value) {
			if slices.Contains(names, n) {
				p.warn(listPr.Line, list, fmt.Sprintf("%s %q listed twice; once is enough", kind, n))
				continue
			}
			names = append(names, n)
		}
	}
	byName := map[string]*Component{}
	var out []*Component
	for _, n := range names {
		c := &Component{Kind: kind, Name: n, Prefix: list + "." + n + ".", File: p.file, Line: listPr.Line,
			props: map[string]Property{}, used: map[string]bool{}}
		byName[n] = c
		out = append(out, c)
	}
	var keys []string
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		pr := props[k]
		rest, ok := strings.CutPrefix(k, list+".")
		if !ok {
			continue
		}
		name, prop, ok := strings.Cut(rest, ".")
		if !ok || name == "" || prop == "" {
			p.warn(pr.Line, k, fmt.Sprintf("unknown key, ignored (expected %s.NAME.PROPERTY)", list))
			continue
		}
		c := byName[name]
		if c == nil {
			if !listed {
				p.warn(pr.Line, k, fmt.Sprintf("%s %q is configured but %s is not set, ignored (add %s = %s)", kind, name, list, list, name))
			} else {
				p.warn(pr.Line, k, fmt.Sprintf("%s %q is not listed in %s (line %d), ignored", kind, name, list, listPr.Line))
			}
			continue
		}
		c.props[prop] = pr
	}
	for _, c := range out {
		if kind == KindSinkGroup {
			continue // a group has processor.type, not type
		}
		tp, ok := c.props["type"]
		c.used["type"] = true
		if !ok || strings.TrimSpace(tp.Value) == "" {
			return nil, p.errorf(listPr.Line, c.Key("type"), "%s %s has no type (set %s; Flume would silently drop the %s)", kind, c.Name, c.Key("type"), kind)
		}
		c.Type, c.Line = strings.TrimSpace(tp.Value), tp.Line
	}
	return out, nil
}

// wireSource reads a source's channels, interceptors and selector.
func (p *parser) wireSource(c *Component, known map[string]bool) error {
	pr, ok := c.props["channels"]
	c.used["channels"] = true
	if !ok {
		if one, singular := c.props["channel"]; singular {
			return p.errorf(one.Line, one.Key, "a source names its channels with %s (plural; Flume would silently drop the source)", c.Key("channels"))
		}
		return p.errorf(c.Line, c.Key("channels"), "missing: source %s needs the channels it puts into (%s = c1 c2)", c.Name, c.Key("channels"))
	}
	for _, ch := range strings.Fields(pr.Value) {
		if !known[ch] {
			return p.errorf(pr.Line, pr.Key, "channel %q is not in %s.channels", ch, p.agent)
		}
		if !slices.Contains(c.Channels, ch) {
			c.Channels = append(c.Channels, ch)
		}
	}
	if len(c.Channels) == 0 {
		return p.errorf(pr.Line, pr.Key, "no channel names")
	}
	listPr, listed := c.props["interceptors"]
	c.used["interceptors"] = true
	var names []string
	if listed {
		for _, n := range strings.Fields(listPr.Value) {
			if slices.Contains(names, n) {
				return p.errorf(listPr.Line, listPr.Key, "interceptor %q is listed twice", n)
			}
			names = append(names, n)
		}
	}
	for _, n := range names {
		ic := p.child(c, "interceptors."+n+".", KindInterceptor, n, "")
		if ic.Type == "" {
			return p.errorf(listPr.Line, ic.Key("type"), "interceptor %s of source %s has no type (set %s)", n, c.Name, ic.Key("type"))
		}
		c.Interceptors = append(c.Interceptors, ic)
	}
	for prop, ipr := range c.props {
		if rest, ok := strings.CutPrefix(prop, "interceptors."); ok && !c.used[prop] {
			n, _, _ := strings.Cut(rest, ".")
			c.used[prop] = true
			p.warn(ipr.Line, ipr.Key, fmt.Sprintf("interceptor %q is not listed in %s, ignored", n, c.Key("interceptors")))
		}
	}
	c.Selector = p.child(c, "selector.", KindSelector, "", "replicating")
	return nil
}

// wireSink reads a sink's one channel.
func (p *parser) wireSink(c *Component, known map[string]bool) error {
	pr, ok := c.props["channel"]
	c.used["channel"] = true
	if !ok {
		if many, plural := c.props["channels"]; plural {
			return p.errorf(many.Line, many.Key, "a sink takes from one channel, named with %s (singular; Flume would silently drop the sink)", c.Key("channel"))
		}
		return p.errorf(c.Line, c.Key("channel"), "missing: sink %s needs the channel it takes from (%s = c1)", c.Name, c.Key("channel"))
	}
	ch := strings.TrimSpace(pr.Value)
	if strings.ContainsAny(ch, " \t,") {
		return p.errorf(pr.Line, pr.Key, "a sink takes from exactly one channel (got %q); use one sink per channel, or a sink group", ch)
	}
	if !known[ch] {
		return p.errorf(pr.Line, pr.Key, "channel %q is not in %s.channels", ch, p.agent)
	}
	c.Channels = []string{ch}
	return nil
}

// child moves the properties of owner under prefix into a child component
// (an interceptor, a selector, a processor) whose type key is prefix+"type".
func (p *parser) child(owner *Component, prefix, kind, name, defType string) *Component {
	c := &Component{Kind: kind, Name: name, Type: defType, Prefix: owner.Prefix + prefix, File: owner.File, Line: owner.Line,
		props: map[string]Property{}, used: map[string]bool{}}
	for prop, pr := range owner.props {
		if rest, ok := strings.CutPrefix(prop, prefix); ok && rest != "" {
			owner.used[prop] = true
			c.props[rest] = pr
		}
	}
	if tp, ok := c.props["type"]; ok {
		c.used["type"] = true
		c.Type, c.Line = strings.TrimSpace(tp.Value), tp.Line
	}
	return c
}
