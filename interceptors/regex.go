package interceptors

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
)

// searchReplace rewrites bodies: every match of searchPattern is replaced
// by replaceString (Java's replaceAll syntax: $1, ${name}, \ escapes;
// default: empty), the body read in charset (UTF-8, also US-ASCII and
// ISO-8859-1).
type searchReplace struct {
	re      *regexp.Regexp
	tmpl    []byte
	latin1  bool
	charset string
}

func newSearchReplace(s *agent.Setup) (agent.Interceptor, error) {
	if _, err := s.Conf.Required("searchPattern"); err != nil {
		return nil, err
	}
	re, err := compile(s, "searchPattern", "")
	if err != nil {
		return nil, err
	}
	repl := s.Conf.String("replaceString", "")
	tmpl, err := javaReplacement(repl, re)
	if err != nil {
		return nil, s.Conf.Errorf("replaceString", "%q: %v", repl, err)
	}
	sr := &searchReplace{re: re, tmpl: []byte(tmpl)}
	switch cs := strings.ToUpper(s.Conf.String("charset", "UTF-8")); cs {
	case "UTF-8", "UTF8":
	case "US-ASCII", "ASCII", "ISO-8859-1", "ISO8859_1", "LATIN1":
		sr.latin1, sr.charset = true, cs
	default:
		return nil, s.Conf.Errorf("charset", "charset %q is not supported (UTF-8, US-ASCII or ISO-8859-1)", cs)
	}
	return sr, nil
}

func (sr *searchReplace) Intercept(evs []channel.Event) ([]channel.Event, error) {
	for i := range evs {
		body := evs[i].Body
		if sr.latin1 {
			body = latin1ToUTF8(body)
		}
		out := sr.re.ReplaceAll(body, sr.tmpl)
		if sr.latin1 {
			out = utf8ToLatin1(out, sr.charset != "ISO-8859-1" && sr.charset != "ISO8859_1" && sr.charset != "LATIN1")
		}
		evs[i].Body = out
	}
	return evs, nil
}

func latin1ToUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}

// utf8ToLatin1 encodes as Java does: a character the charset cannot
// represent becomes '?'.
func utf8ToLatin1(b []byte, ascii bool) []byte {
	out := make([]byte, 0, len(b))
	limit := rune(0xff)
	if ascii {
		limit = 0x7f
	}
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		if r > limit || r == utf8.RuneError && n == 1 {
			r = '?'
		}
		out = append(out, byte(r))
	}
	return out
}

// javaReplacement turns a java.util.regex replacement into a Go Expand
// template: $n (as many digits as make a group number of re), ${name},
// \c a literal c; a literal $ becomes $$.
func javaReplacement(s string, re *regexp.Regexp) (string, error) {
	var b strings.Builder
	groups := re.NumSubexp()
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			i++
			if i == len(s) {
				return "", fmt.Errorf("character to be escaped is missing after the final \\")
			}
			if s[i] == '$' {
				b.WriteString("$$")
			} else {
				b.WriteByte(s[i])
			}
		case '$':
			i++
			if i == len(s) {
				return "", fmt.Errorf("illegal group reference: $ at the end (write \\$ for a dollar sign)")
			}
			if s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return "", fmt.Errorf("named group reference is missing its }")
				}
				name := s[i+1 : i+end]
				if re.SubexpIndex(name) < 0 {
					return "", fmt.Errorf("no group named %q in the search pattern", name)
				}
				b.WriteString("${" + name + "}")
				i += end
				continue
			}
			if s[i] < '0' || s[i] > '9' {
				return "", fmt.Errorf("illegal group reference $%c (write \\$ for a dollar sign)", s[i])
			}
			n := int(s[i] - '0')
			for i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' && n*10+int(s[i+1]-'0') <= groups {
				i++
				n = n*10 + int(s[i]-'0')
			}
			if n > groups {
				return "", fmt.Errorf("no group %d in the search pattern (it has %d)", n, groups)
			}
			b.WriteString("${" + strconv.Itoa(n) + "}")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// regexFilter keeps the events whose body contains a match of regex
// (default .*), or with excludeEvents drops them.
type regexFilter struct {
	re      *regexp.Regexp
	exclude bool
}

func newRegexFilter(s *agent.Setup) (agent.Interceptor, error) {
	re, err := compile(s, "regex", ".*")
	if err != nil {
		return nil, err
	}
	ex, err := s.Conf.Bool("excludeEvents", false)
	if err != nil {
		return nil, err
	}
	return &regexFilter{re: re, exclude: ex}, nil
}

func (f *regexFilter) Intercept(evs []channel.Event) ([]channel.Event, error) {
	out := evs[:0]
	for _, ev := range evs {
		if f.re.Match(ev.Body) != f.exclude {
			out = append(out, ev)
		}
	}
	return out, nil
}

// regexExtractor puts the groups of the first match of regex in the body
// into headers: serializers lists one serializer per group, in order
// (serializers.<s>.name is the header; serializers.<s>.type is default,
// the value as matched, or the millis serializer, which parses it with
// serializers.<s>.pattern into milliseconds since the epoch). Groups
// beyond the serializers, and groups that did not take part in the match,
// set nothing. A value the millis serializer cannot parse fails the batch.
type regexExtractor struct {
	re    *regexp.Regexp
	names []string
	parse []func(string) (string, error)
}

const (
	millisSerializer      = "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer"
	passThroughSerializer = "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer"
)

func newRegexExtractor(s *agent.Setup) (agent.Interceptor, error) {
	if _, err := s.Conf.Required("regex"); err != nil {
		return nil, err
	}
	re, err := compile(s, "regex", "")
	if err != nil {
		return nil, err
	}
	if _, err := s.Conf.Required("serializers"); err != nil {
		return nil, err
	}
	x := &regexExtractor{re: re}
	for _, sn := range s.Conf.List("serializers") {
		p := "serializers." + sn + "."
		name, err := s.Conf.Required(p + "name")
		if err != nil {
			return nil, err
		}
		var f func(string) (string, error)
		switch t := s.Conf.String(p+"type", "default"); strings.ToLower(t) {
		case "default", strings.ToLower(passThroughSerializer):
			f = func(v string) (string, error) { return v, nil }
		case strings.ToLower(millisSerializer):
			pat, err := s.Conf.Required(p + "pattern")
			if err != nil {
				return nil, err
			}
			layout, err := jodaLayout(pat)
			if err != nil {
				return nil, s.Conf.Errorf(p+"pattern", "%q: %v", pat, err)
			}
			f = func(v string) (string, error) {
				t, err := time.ParseInLocation(layout, v, time.Local)
				if err != nil {
					return "", fmt.Errorf("header %s: %q does not match the pattern %q", name, v, pat)
				}
				return strconv.FormatInt(t.UnixMilli(), 10), nil
			}
		default:
			return nil, s.Conf.Errorf(p+"type", "unknown serializer %q (default, or %s)", t, millisSerializer)
		}
		x.names = append(x.names, name)
		x.parse = append(x.parse, f)
	}
	return x, nil
}

func (x *regexExtractor) Intercept(evs []channel.Event) ([]channel.Event, error) {
	for i := range evs {
		m := x.re.FindSubmatchIndex(evs[i].Body)
		if m == nil {
			continue
		}
		for g := 1; g < len(m)/2 && g <= len(x.names); g++ {
			if m[2*g] < 0 {
				continue
			}
			v, err := x.parse[g-1](string(evs[i].Body[m[2*g]:m[2*g+1]]))
			if err != nil {
				return nil, err
			}
			if evs[i].Headers == nil {
				evs[i].Headers = map[string]string{}
			}
			evs[i].Headers[x.names[g-1]] = v
		}
	}
	return evs, nil
}

// jodaLayout turns a Joda-Time / SimpleDateFormat pattern into a Go time
// layout for parsing (numeric fields accept one or two digits, as Joda's
// parser does). Quoted text is literal; a literal that Go would read as a
// layout element (a digit, Jan, Mon, MST, PM, _) is refused.
func jodaLayout(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); {
		c := p[i]
		if c == '\'' {
			end := strings.IndexByte(p[i+1:], '\'')
			if end < 0 {
				return "", fmt.Errorf("unterminated quote")
			}
			lit := p[i+1 : i+1+end]
			if end == 0 {
				lit = "'"
			}
			if err := literal(lit); err != nil {
				return "", err
			}
			b.WriteString(lit)
			i += end + 2
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			if err := literal(string(c)); err != nil {
				return "", err
			}
			b.WriteByte(c)
			i++
			continue
		}
		n := 1
		for i+n < len(p) && p[i+n] == c {
			n++
		}
		i += n
		var f string
		switch c {
		case 'y', 'Y':
			f = "2006"
			if n == 2 {
				f = "06"
			}
		case 'M':
			switch {
			case n <= 2:
				f = "1"
			case n == 3:
				f = "Jan"
			default:
				f = "January"
			}
		case 'd':
			f = "2"
		case 'D':
			f = "002"
		case 'H':
			f = "15"
		case 'h':
			f = "3"
		case 'm':
			f = "4"
		case 's':
			f = "5"
		case 'S':
			s := b.String()
			if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, ",") {
				return "", fmt.Errorf("fraction of second (S) must follow '.' or ','")
			}
			f = strings.Repeat("0", n)
		case 'a':
			f = "PM"
		case 'E':
			f = "Mon"
			if n >= 4 {
				f = "Monday"
			}
		case 'Z':
			f = "-0700"
			if n == 2 {
				f = "-07:00"
			} else if n > 2 {
				return "", fmt.Errorf("time zone ids (ZZZ) are not supported; use Z or ZZ")
			}
		case 'X':
			f = [...]string{"Z07", "Z0700", "Z07:00"}[min(n, 3)-1]
		case 'z':
			f = "MST"
		default:
			return "", fmt.Errorf("pattern letter %q is not supported", c)
		}
		b.WriteString(f)
	}
	return b.String(), nil
}

func literal(s string) error {
	for _, bad := range []string{"Jan", "Mon", "MST", "PM", "pm", "_"} {
		if strings.Contains(s, bad) {
			return fmt.Errorf("literal %q cannot be matched (it reads as a Go layout element)", s)
		}
	}
	if strings.ContainsAny(s, "0123456789") {
		return fmt.Errorf("literal %q cannot be matched (digits read as Go layout elements)", s)
	}
	return nil
}
