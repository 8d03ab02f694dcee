package interceptors_test

import (
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/interceptors"
)

var quiet = slog.New(slog.DiscardHandler)

// chain builds the interceptors i1, i2 … of source r1 from props (keys
// after "a.sources.r1.interceptors.") and returns a function running them.
func chain(t *testing.T, props string) (func([]channel.Event) ([]channel.Event, error), error) {
	t.Helper()
	var names []string
	var body strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(props), "\n") {
		l = strings.TrimSpace(l)
		if n, _, ok := strings.Cut(l, "."); ok && !contains(names, n) {
			names = append(names, n)
		}
		body.WriteString("a.sources.r1.interceptors." + l + "\n")
	}
	text := "a.channels = c1\na.channels.c1.type = memory\na.sources = r1\na.sources.r1.type = seq\na.sources.r1.channels = c1\n" +
		"a.sources.r1.interceptors = " + strings.Join(names, " ") + "\n" + body.String()
	cfg, err := config.Parse("i.properties", text, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	r := agent.NewRegistry()
	interceptors.Register(r)
	var ics []agent.Interceptor
	for _, c := range cfg.Sources[0].Interceptors {
		ic, err := agent.BuildInterceptor(r, c, []string{"c1"}, quiet)
		if err != nil {
			return nil, err
		}
		if un := c.View().Unread(); len(un) > 0 {
			t.Errorf("unread keys: %v", un)
		}
		ics = append(ics, ic)
	}
	return func(evs []channel.Event) ([]channel.Event, error) {
		for _, ic := range ics {
			var err error
			if evs, err = ic.Intercept(evs); err != nil {
				return nil, err
			}
		}
		return evs, nil
	}, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func ev(body string, kv ...string) channel.Event {
	e := channel.Event{Body: []byte(body)}
	if len(kv) > 0 {
		e.Headers = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			e.Headers[kv[i]] = kv[i+1]
		}
	}
	return e
}

func show(evs []channel.Event) string {
	var parts []string
	for _, e := range evs {
		var hs []string
		for _, k := range sortedKeys(e.Headers) {
			hs = append(hs, k+"="+e.Headers[k])
		}
		parts = append(parts, fmt.Sprintf("%s{%s}", e.Body, strings.Join(hs, ",")))
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// Flume's documented behaviours, one row each: the chain's properties, the
// input events and the output.
func TestInterceptorTable(t *testing.T) {
	for _, tc := range []struct {
		name, props string
		in          []channel.Event
		want        string
	}{
		{"static defaults: key=value, preserveExisting true", "i1.type = static",
			[]channel.Event{ev("a"), ev("b", "key", "old")}, "a{key=value} b{key=old}"},
		{"static overwrite", "i1.type = static\ni1.key = dc\ni1.value = east\ni1.preserveExisting = false",
			[]channel.Event{ev("a", "dc", "west")}, "a{dc=east}"},
		{"static by Flume class name", "i1.type = org.apache.flume.interceptor.StaticInterceptor$Builder\ni1.key = k\ni1.value = v",
			[]channel.Event{ev("a")}, "a{k=v}"},
		{"chain runs in list order: later static sees the earlier header", "i1.type = static\ni1.key = k\ni1.value = first\ni2.type = static\ni2.key = k\ni2.value = second",
			[]channel.Event{ev("a")}, "a{k=first}"},
		{"remove_header withName", "i1.type = remove_header\ni1.withName = secret",
			[]channel.Event{ev("a", "secret", "x", "keep", "y")}, "a{keep=y}"},
		{"remove_header fromList with the default separator", "i1.type = remove_header\ni1.fromList = a , b,c",
			[]channel.Event{ev("x", "a", "1", "b", "2", "c", "3", "d", "4")}, "x{d=4}"},
		{"remove_header fromList with fromListSeparator", "i1.type = remove_header\ni1.fromList = a:b\ni1.fromListSeparator = :",
			[]channel.Event{ev("x", "a", "1", "b", "2", "c", "3")}, "x{c=3}"},
		{"remove_header matching is a whole-name match", "i1.type = remove_header\ni1.matching = tmp.*",
			[]channel.Event{ev("x", "tmp1", "1", "tmpx", "2", "mytmp", "3")}, "x{mytmp=3}"},
		{"search_replace with Java groups", "i1.type = search_replace\ni1.searchPattern = (\\\\w+)@(\\\\w+)\ni1.replaceString = $2 at $1",
			[]channel.Event{ev("mail bob@example now")}, "mail example at bob now{}"},
		{"search_replace replaceString defaults to empty", "i1.type = search_replace\ni1.searchPattern = [0-9]+",
			[]channel.Event{ev("a1b22c")}, "abc{}"},
		{"search_replace escaped dollar", "i1.type = search_replace\ni1.searchPattern = USD\ni1.replaceString = \\\\$",
			[]channel.Event{ev("5 USD")}, "5 ${}"},
		{"search_replace ISO-8859-1 body", "i1.type = search_replace\ni1.searchPattern = \u00e9\ni1.replaceString = e\ni1.charset = ISO-8859-1",
			[]channel.Event{{Body: []byte{'c', 'a', 'f', 0xe9}}}, "cafe{}"},
		{"regex_filter keeps matches (find, not whole)", "i1.type = regex_filter\ni1.regex = ERR",
			[]channel.Event{ev("an ERROR"), ev("ok"), ev("ERR")}, "an ERROR{} ERR{}"},
		{"regex_filter excludeEvents drops matches", "i1.type = regex_filter\ni1.regex = ^DEBUG\ni1.excludeEvents = true",
			[]channel.Event{ev("DEBUG x"), ev("INFO y")}, "INFO y{}"},
		{"regex_filter default .* keeps everything", "i1.type = regex_filter",
			[]channel.Event{ev(""), ev("x")}, "{} x{}"},
		{"regex_extractor: one header per serializer, extra groups ignored", "i1.type = regex_extractor\ni1.regex = (\\\\d):(\\\\d):(\\\\d)\ni1.serializers = s1 s2\ni1.serializers.s1.name = one\ni1.serializers.s2.name = two",
			[]channel.Event{ev("1:2:3"), ev("none")}, "1:2:3{one=1,two=2} none{}"},
		{"regex_extractor overwrites an existing header", "i1.type = regex_extractor\ni1.regex = user=(\\\\w+)\ni1.serializers = u\ni1.serializers.u.name = user\ni1.serializers.u.type = default",
			[]channel.Event{ev("user=ann", "user", "old")}, "user=ann{user=ann}"},
		{"regex_extractor skips a group that did not take part", "i1.type = regex_extractor\ni1.regex = (a)?(b)\ni1.serializers = s1 s2\ni1.serializers.s1.name = A\ni1.serializers.s2.name = B",
			[]channel.Event{ev("b")}, "b{B=b}"},
		{"timestamp preserveExisting", "i1.type = timestamp\ni1.preserveExisting = true",
			[]channel.Event{ev("a", "timestamp", "42")}, "a{timestamp=42}"},
		{"uuid preserveExisting (default true)", "i1.type = uuid",
			[]channel.Event{ev("a", "id", "mine")}, "a{id=mine}"},
		{"host preserveExisting", "i1.type = host\ni1.preserveExisting = true\ni1.hostHeader = h",
			[]channel.Event{ev("a", "h", "given")}, "a{h=given}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run, err := chain(t, tc.props)
			if err != nil {
				t.Fatal(err)
			}
			out, err := run(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := show(out); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Headers whose value is generated: timestamp (ms now), uuid (prefix + a
// version-4 UUID, different per event), host (an IP address, or the host
// name with useIP = false).
func TestGeneratedHeaders(t *testing.T) {
	run, err := chain(t, "i1.type = timestamp\ni1.headerName = ts\ni2.type = uuid\ni2.prefix = ev-\ni3.type = host")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMilli()
	out, err := run([]channel.Event{ev("a"), ev("b")})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	uuidRE := regexp.MustCompile(`^ev-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, e := range out {
		ts, err := strconv.ParseInt(e.Headers["ts"], 10, 64)
		if err != nil || ts < before || ts > after {
			t.Errorf("ts %q not in [%d, %d]", e.Headers["ts"], before, after)
		}
		if !uuidRE.MatchString(e.Headers["id"]) {
			t.Errorf("id %q", e.Headers["id"])
		}
		if !regexp.MustCompile(`^[0-9a-f.:]+$`).MatchString(e.Headers["host"]) {
			t.Errorf("host %q is not an IP address", e.Headers["host"])
		}
	}
	if out[0].Headers["id"] == out[1].Headers["id"] {
		t.Error("uuid repeated")
	}
}

// The millis serializer parses with a Joda pattern into epoch milliseconds
// (local time zone unless the pattern has one); a value it cannot parse
// fails the batch.
func TestRegexExtractorMillis(t *testing.T) {
	props := `i1.type = regex_extractor
i1.regex = ^(\\d\\d\\d\\d-\\d\\d-\\d\\d \\d\\d:\\d\\d)(?::(\\d+))?
i1.serializers = when
i1.serializers.when.type = org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer
i1.serializers.when.name = timestamp
i1.serializers.when.pattern = yyyy-MM-dd HH:mm`
	run, err := chain(t, props)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run([]channel.Event{ev("2012-10-17 14:34 message")})
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2012, 10, 17, 14, 34, 0, 0, time.Local).UnixMilli()
	if out[0].Headers["timestamp"] != strconv.FormatInt(want, 10) {
		t.Errorf("timestamp %q, want %d", out[0].Headers["timestamp"], want)
	}
	for _, tc := range []struct{ pattern, value string }{
		{"yyyy-MM-dd'T'HH:mm:ss.SSSZ", "2020-02-29T23:59:58.250+0100"},
		{"dd/MMM/yyyy:HH:mm:ss ZZ", "29/Feb/2020:23:59:58 +01:00"},
	} {
		run, err := chain(t, "i1.type = regex_extractor\ni1.regex = (.*)\ni1.serializers = s\ni1.serializers.s.name = ts\n"+
			"i1.serializers.s.type = org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer\ni1.serializers.s.pattern = "+tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		out, err := run([]channel.Event{ev(tc.value)})
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		ms := time.Date(2020, 2, 29, 22, 59, 58, 0, time.UTC).UnixMilli()
		if strings.Contains(tc.pattern, "SSS") {
			ms += 250
		}
		if out[0].Headers["ts"] != strconv.FormatInt(ms, 10) {
			t.Errorf("%s: %q, want %d", tc.pattern, out[0].Headers["ts"], ms)
		}
	}
	run, err = chain(t, props)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run([]channel.Event{ev("2012-13-45 99:99 nonsense")}); err == nil || !strings.Contains(err.Error(), "does not match the pattern") {
		t.Errorf("bad date: %v", err)
	}
}

// Configuration errors name FILE:LINE and the key.
func TestInterceptorConfigErrors(t *testing.T) {
	for _, tc := range []struct{ props, want string }{
		{"i1.type = morphline", `i.properties:7: key a.sources.r1.interceptors.i1.type: interceptor type "morphline" is not supported: Sluice has no Kite Morphlines`},
		{"i1.type = org.apache.flume.sink.solr.morphline.MorphlineInterceptor$Builder", "is not supported: Sluice has no Kite Morphlines"},
		{"i1.type = regex_filter\ni1.regex = (?=x)", `i.properties:8: key a.sources.r1.interceptors.i1.regex: "(?=x)" is not a regular expression Sluice can run`},
		{"i1.type = search_replace", `key a.sources.r1.interceptors.i1.searchPattern: missing`},
		{"i1.type = search_replace\ni1.searchPattern = (a)\ni1.replaceString = $2", `i.properties:9: key a.sources.r1.interceptors.i1.replaceString: "$2": no group 2`},
		{"i1.type = regex_extractor\ni1.regex = (a)", `key a.sources.r1.interceptors.i1.serializers: missing`},
		{"i1.type = regex_extractor\ni1.regex = (a)\ni1.serializers = s\ni1.serializers.s.name = x\ni1.serializers.s.type = org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer",
			`key a.sources.r1.interceptors.i1.serializers.s.pattern: missing`},
		{"i1.type = static\ni1.preserveExisting = yes", `i.properties:8: key a.sources.r1.interceptors.i1.preserveExisting: "yes" is not true or false`},
		{"i1.type = com.example.MyInterceptor$Builder", `Sluice does not load Java classes`},
	} {
		_, err := chain(t, tc.props)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got  %v\n want …%s…", tc.props, err, tc.want)
		}
	}
}
