package config

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Property is one key = value entry of a properties file, with the line
// its logical line starts on (1-based).
type Property struct {
	Key, Value string
	Line       int
}

// ParseProperties reads the Java .properties format that Flume uses:
//
//   - a line whose first non-blank character is # or ! is a comment;
//   - a line ending in an odd number of backslashes continues on the next
//     line, whose leading blanks are dropped;
//   - the key ends at the first unescaped '=', ':' or blank; blanks and one
//     '=' or ':' around the separator are skipped; the rest is the value
//     (trailing blanks are trimmed, unlike Java, because they are never
//     meant in a configuration value);
//   - escapes \t \n \r \f \uXXXX, and \c for any other c, in keys and values.
//
// Entries come back in file order; a repeated key appears twice (the caller
// decides which wins). Errors are *Error naming the line.
func ParseProperties(data string) ([]Property, error) {
	var props []Property
	lines := strings.Split(data, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimRight(lines[i], "\r")
		trimmed := strings.TrimLeft(line, " \t\f")
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == '!' {
			continue
		}
		logical := trimmed
		for endsInContinuation(logical) && i+1 < len(lines) {
			logical = logical[:len(logical)-1]
			i++
			logical += strings.TrimLeft(strings.TrimRight(lines[i], "\r"), " \t\f")
		}
		if endsInContinuation(logical) { // continuation on the last line
			logical = logical[:len(logical)-1]
		}
		if !utf8.ValidString(logical) {
			return nil, &Error{Line: start, Reason: "not valid UTF-8"}
		}
		rawKey, rawValue := splitKeyValue(logical)
		key, err := unescape(rawKey)
		if err != nil {
			return nil, &Error{Line: start, Reason: "key: " + err.Error()}
		}
		value, err := unescape(strings.TrimRight(rawValue, " \t\f"))
		if err != nil {
			return nil, &Error{Line: start, Key: key, Reason: err.Error()}
		}
		props = append(props, Property{Key: key, Value: value, Line: start})
	}
	return props, nil
}

// endsInContinuation reports whether s ends in an odd number of backslashes.
func endsInContinuation(s string) bool {
	n := 0
	for i := len(s) - 1; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// splitKeyValue splits a logical line (no leading blanks) into its raw key
// and raw value.
func splitKeyValue(s string) (key, value string) {
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\\' {
			i += 2
			continue
		}
		if c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\f' {
			break
		}
		i++
	}
	if i > len(s) {
		i = len(s)
	}
	key, rest := s[:i], s[i:]
	rest = strings.TrimLeft(rest, " \t\f")
	if rest != "" && (rest[0] == '=' || rest[0] == ':') {
		rest = strings.TrimLeft(rest[1:], " \t\f")
	}
	return key, rest
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(s) {
			break // a lone trailing backslash (continuation at EOF) is dropped
		}
		switch c = s[i]; c {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", fmt.Errorf(`malformed \uXXXX escape`)
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
			if err != nil {
				return "", fmt.Errorf(`malformed \uXXXX escape %q`, s[i-1:i+5])
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
