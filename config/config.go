// Package config reads Sluice's configuration: Flume-style properties
// files (the format of Flume's agent configuration) plus sluice.server.*
// keys for the server.
//
//	agent.channels = c1 c2
//	agent.channels.c1.type = file
//	agent.channels.c1.dataDirs = /disk1/sluice,/disk2/sluice
//	agent.channels.c1.checkpointDir = /disk1/sluice-checkpoint
//	agent.channels.c2.type = memory
//	sluice.server.grpc.address = 127.0.0.1:7070
//	sluice.server.limits.maxConcurrentPuts = 64
//
// The sluice.server.limits.* keys (maxRecvMsgSize, maxConcurrentStreams,
// maxConcurrentPuts, maxTakeStreams, maxTakeBytes, maxHeadersPerEvent) are
// positive integers setting the server.Options fields of the same name;
// unset, the server's defaults apply.
//
// Encryption at rest and compression are store-wide (like maxFileSize: the
// channels of one store must agree) and use Flume's names where Flume has
// them:
//
//	agent.channels.c1.encryption.keyProvider.keyFile = /etc/sluice/keys   (alias: keyStoreFile)
//	agent.channels.c1.encryption.activeKey = 2       key id; default: the highest id in the file
//	agent.channels.c1.encryption.keyProvider = file  or Flume's JCEKSFILE; accepted, ignored
//	agent.channels.c1.compression = zstd             none, zstd or s2
//
// encryption.cipherProvider and Flume's key store properties
// (encryption.keyProvider.keys.*, keyStorePasswordFile) are accepted with a
// warning: Sluice always uses AES-256-GCM with keys from a Sluice key file
// (see package crypto and sluice keygen).
//
// Sources, sinks and sink groups are read into a component tree (see
// component.go) whose wiring is checked; each component reads its own keys
// through a View.
//
// The agent name ("agent" by default) is the prefix of the channel keys.
// Unknown keys are logged as warnings naming the file and line; invalid
// values are errors of type *Error, whose text is "FILE:LINE: key K: reason".
//
// Channels map to stores (see Config.Stores): file channels with the same
// dataDirs and checkpointDir share one durable store, so a put transaction
// can cover them atomically; all memory channels share one memory store.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/crypto"
)

// Channel kinds.
const (
	TypeFile   = "file"
	TypeMemory = "memory"
)

// Flume class names accepted as aliases of the built-in kinds.
const (
	FlumeFileChannelClass   = "org.apache.flume.channel.file.FileChannel"
	FlumeMemoryChannelClass = "org.apache.flume.channel.MemoryChannel"
)

// Defaults of the server keys.
const (
	DefaultAgent          = "agent"
	DefaultGRPCAddress    = "127.0.0.1:7070"
	DefaultMetricsAddress = "127.0.0.1:7071"
)

// Limits of maxFileSize (the WAL segment size).
const (
	MinSegmentSize = 64 << 10
	MaxSegmentSize = 1 << 30
	// FlumeMaxFileSize is Flume's default (and largest) maxFileSize: a
	// value up to it is taken as MaxSegmentSize, with a warning.
	FlumeMaxFileSize = 2146435071
	// MaxSpareSegments bounds spareSegments (per data directory).
	MaxSpareSegments = 1 << 16
)

// Default is the embedded configuration `sluice serve` runs without
// --config: one file channel named "default" under ./sluice-data.
const Default = `# Sluice embedded default configuration (sluice serve without --config).
# Print it with: sluice serve --print-default-config
sluice.server.grpc.address = 127.0.0.1:7070
sluice.server.metrics.address = 127.0.0.1:7071

agent.channels = default
agent.channels.default.type = file
agent.channels.default.dataDirs = ./sluice-data/data
agent.channels.default.checkpointDir = ./sluice-data/checkpoint
`

// DefaultFileName is the name errors and warnings give the embedded default.
const DefaultFileName = "<default config>"

// Error is an invalid configuration value: File and Line locate the entry,
// Key names it (empty for a syntax error that has no key).
type Error struct {
	File   string
	Line   int // 0 when the problem is a missing key
	Key    string
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString("key " + e.Key + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Channel is one configured channel.
type Channel struct {
	Name string
	Type string // TypeFile or TypeMemory
	// Line is where the channel's type is set.
	Line int
	// Config holds the per-channel limits (defaults applied).
	Config channel.ChannelConfig

	// File channels only (zero for memory channels).
	DataDirs            []string
	CheckpointDir       string
	BackupCheckpointDir string
	CheckpointInterval  time.Duration // 0: the store's default
	SegmentSize         int64         // 0: the store's default
	MinFreeBytes        int64         // 0: the store's default; <0: no check
	SpareSegments       int           // 0: the store's default; <0: none
	// MaxEventSize is 0 for the store's default.
	MaxEventSize int
	// ProducerExpiry is 0 for the store's default, negative for never
	// (file and memory channels).
	ProducerExpiry time.Duration
	// MaxProducers is 0 for the store's default.
	MaxProducers int
	// Encryption at rest: KeyFile is empty when not encrypting; ActiveKey
	// is 0 for the highest key id in the file.
	KeyFile   string
	ActiveKey uint16
	// Compression of new WAL payloads: "" (none), "zstd" or "s2".
	Compression string

	// set records the line of every store-wide key set explicitly.
	set map[string]int
	// paths are the properties that named a directory or file of the
	// store (dataDirs, checkpointDir, backupCheckpointDir, the key file).
	paths []Property
	// keyFileKey is the property that set KeyFile (keyFile or its Flume
	// alias keyStoreFile), for error messages.
	keyFileKey string
}

// Server holds the sluice.server.* keys.
type Server struct {
	GRPCAddress    string // sluice.server.grpc.address
	MetricsAddress string // sluice.server.metrics.address; empty: no metrics listener
	CertFile       string // sluice.server.tls.certFile
	KeyFile        string // sluice.server.tls.keyFile
	ClientCAFile   string // sluice.server.tls.clientCAFile
	TokensFile     string // sluice.server.auth.tokensFile

	// Limits (sluice.server.limits.*; 0: the server package's default).
	Limits ServerLimits
}

// ServerLimits holds the sluice.server.limits.* keys; each maps to the
// server.Options field of the same name.
type ServerLimits struct {
	MaxRecvMsgSize       int // maxRecvMsgSize: bytes of one request (one Put)
	MaxConcurrentStreams int // maxConcurrentStreams: RPCs per connection
	MaxConcurrentPuts    int // maxConcurrentPuts: Put RPCs in flight, server-wide
	MaxTakeStreams       int // maxTakeStreams: open Take streams, server-wide
	MaxTakeBytes         int // maxTakeBytes: bytes one take request returns
	MaxHeadersPerEvent   int // maxHeadersPerEvent
}

// Config is a parsed configuration for one agent.
type Config struct {
	File     string
	Agent    string
	Channels []Channel // in the order of the agent.channels list
	// Sources, Sinks and SinkGroups are the component tree (component.go),
	// in the order their lists name them; package agent builds and runs
	// them.
	Sources    []*Component
	Sinks      []*Component
	SinkGroups []*Component
	Server     Server
	// Warnings repeats what was logged: unknown and ignored keys.
	Warnings []string
}

// Store is one store to open: the channels that share it and its options.
type Store struct {
	Type     string // TypeFile or TypeMemory
	Channels []string
	// File is set for TypeFile (Logger and FS left nil).
	File filestore.Options
	// Memory is set for TypeMemory.
	Memory memstore.Options
	// Origins say which configuration entry named each directory and file
	// of the store, for errors raised when it opens (see Explain).
	Origins []Origin
	// KeyFile and ActiveKey configure encryption at rest of a file store
	// (KeyFile empty: not encrypted; ActiveKey 0: the highest key id in the
	// file). The key file is read when the store opens (see Keyring), not
	// by Parse. File.Compression is set from the configuration.
	KeyFile   string
	ActiveKey uint16
}

// Origin is the configuration entry that named a path of a store.
type Origin struct {
	Path string
	File string
	Line int
	Key  string
}

// Explain adds to an error raised while the store opens the configuration
// entry that set the path it names (the longest such path), so "permission
// denied on /data/x" also says which key on which line to fix. Errors that
// name no configured path come back unchanged.
func (s Store) Explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var best *Origin
	for i, o := range s.Origins {
		if o.Path != "" && strings.Contains(msg, o.Path) && (best == nil || len(o.Path) > len(best.Path)) {
			best = &s.Origins[i]
		}
	}
	if best == nil {
		return err
	}
	return fmt.Errorf("%w (%s is set by %s:%d, key %s)", err, best.Path, best.File, best.Line, best.Key)
}

// Keyring loads the store's key file with crypto.LoadKeyring (which refuses
// a key file readable or writable by group or others) and selects the
// active key. It returns nil and no error when the store is not encrypted.
func (s Store) Keyring() (*crypto.Keyring, error) {
	if s.KeyFile == "" {
		return nil, nil
	}
	return crypto.LoadKeyring(s.KeyFile, s.ActiveKey)
}

// MaxEventSize is the store's event size limit (its default when unset).
func (s Store) MaxEventSize() int {
	n := s.File.MaxEventSize
	if s.Type == TypeMemory {
		n = s.Memory.MaxEventSize
	}
	if n == 0 {
		n = channel.DefaultMaxEventSize
	}
	return n
}

// Load reads and parses the file at path for agent (DefaultAgent when
// empty). Warnings go to log (slog.Default() when nil).
func Load(path, agent string, log *slog.Logger) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, string(data), agent, log)
}

// LoadDefault parses the embedded default configuration.
func LoadDefault(agent string, log *slog.Logger) (*Config, error) {
	return Parse(DefaultFileName, Default, agent, log)
}

// Parse parses a configuration; file names it in errors and warnings.
func Parse(file, data, agent string, log *slog.Logger) (*Config, error) {
	if agent == "" {
		agent = DefaultAgent
	}
	if log == nil {
		log = slog.Default()
	}
	props, err := ParseProperties(data)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = file
		}
		return nil, err
	}
	p := &parser{file: file, agent: agent, log: log, cfg: &Config{File: file, Agent: agent}}
	if err := p.run(props); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

type parser struct {
	file  string
	agent string
	log   *slog.Logger
	cfg   *Config
}

func (p *parser) errorf(line int, key, format string, args ...any) error {
	return &Error{File: p.file, Line: line, Key: key, Reason: fmt.Sprintf(format, args...)}
}

func (p *parser) warn(line int, key, msg string) {
	at := fmt.Sprintf("%s:%d", p.file, line)
	p.cfg.Warnings = append(p.cfg.Warnings, fmt.Sprintf("%s: key %s: %s", at, key, msg))
	p.log.Warn("config: "+msg, "at", at, "key", key)
}

// Flume channel properties Sluice does not use: accepted with a warning.
var flumeIgnored = map[string]string{
	"useDualCheckpoints":            "set backupCheckpointDir to keep a backup checkpoint",
	"checkpointOnClose":             "Sluice always checkpoints on close",
	"use-log-replay-v1":             "not applicable to Sluice's WAL",
	"use-fast-replay":               "not applicable to Sluice's WAL",
	"fsyncPerTransaction":           "every commit is fdatasync'd",
	"fsyncInterval":                 "every commit is fdatasync'd",
	"byteCapacityBufferPercentage":  "headers count in Event.Size instead",
	"transactionCapacityPercentage": "not applicable",
	"checkpointOnCloseTimeout":      "not applicable",
}

// Encryption and compression keys (Flume's names where Flume has them).
const (
	keyActiveKey    = "encryption.activeKey"
	keyKeyProvider  = "encryption.keyProvider"
	keyKeyFile      = "encryption.keyProvider.keyFile"
	keyKeyStoreFile = "encryption.keyProvider.keyStoreFile" // Flume's name, an alias of keyFile
	keyCipher       = "encryption.cipherProvider"
	keyCompression  = "compression"
)

func (p *parser) run(props []Property) error {
	// Last value of a repeated key wins, as in Java properties.
	last := map[string]Property{}
	var order []string
	for _, pr := range props {
		if prev, dup := last[pr.Key]; dup {
			p.warn(pr.Line, pr.Key, fmt.Sprintf("repeated key overrides line %d", prev.Line))
		} else {
			order = append(order, pr.Key)
		}
		last[pr.Key] = pr
	}

	for _, k := range order {
		if err := p.inlineComment(last[k]); err != nil {
			return err
		}
	}
	srv := Server{GRPCAddress: DefaultGRPCAddress, MetricsAddress: DefaultMetricsAddress}
	chanProps := map[string][]Property{} // channel name -> its properties
	treeProps := map[string]Property{}   // sources, sinks, sink groups
	var list *Property
	prefix := p.agent + "."
	for _, k := range order {
		pr := last[k]
		switch {
		case k == prefix+"channels":
			list = &pr
		case strings.HasPrefix(k, prefix+"channels."):
			rest := strings.TrimPrefix(k, prefix+"channels.")
			name, prop, ok := strings.Cut(rest, ".")
			if !ok || name == "" || prop == "" {
				p.warn(pr.Line, k, "unknown key, ignored (expected "+prefix+"channels.NAME.PROPERTY)")
				continue
			}
			chanProps[name] = append(chanProps[name], pr)
		case k == prefix+"sources" || strings.HasPrefix(k, prefix+"sources.") ||
			k == prefix+"sinks" || strings.HasPrefix(k, prefix+"sinks.") ||
			k == prefix+"sinkgroups" || strings.HasPrefix(k, prefix+"sinkgroups."):
			treeProps[k] = pr
		case strings.HasPrefix(k, "sluice.server."):
			if err := p.serverKey(&srv, pr); err != nil {
				return err
			}
		case otherAgentKey(k):
			p.log.Debug("config: key of another agent, ignored", "at", fmt.Sprintf("%s:%d", p.file, pr.Line), "key", k)
		default:
			p.warn(pr.Line, k, "unknown key, ignored")
		}
	}
	if (srv.CertFile == "") != (srv.KeyFile == "") {
		k, have := "sluice.server.tls.keyFile", "sluice.server.tls.certFile"
		if srv.KeyFile != "" {
			k, have = have, k
		}
		return p.errorf(last[have].Line, have, "%s is required too", k)
	}
	if srv.ClientCAFile != "" && srv.CertFile == "" {
		k := "sluice.server.tls.clientCAFile"
		return p.errorf(last[k].Line, k, "mutual TLS needs sluice.server.tls.certFile and keyFile")
	}
	p.cfg.Server = srv

	if list == nil {
		msg := fmt.Sprintf("missing: no channels configured for agent %q", p.agent)
		if others := agentsIn(order, last); len(others) > 0 {
			msg += fmt.Sprintf("; the file configures agent %s (choose one with --name)", strings.Join(others, ", "))
		}
		return p.errorf(0, prefix+"channels", "%s", msg)
	}
	names := strings.FieldsFunc(list.Value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(names) == 0 {
		return p.errorf(list.Line, list.Key, "no channel names")
	}
	listed := map[string]bool{}
	for _, n := range names {
		if listed[n] {
			return p.errorf(list.Line, list.Key, "channel %q listed twice", n)
		}
		listed[n] = true
		cc := channel.ChannelConfig{Name: n, Capacity: 1, TransactionCapacity: 1}
		if err := cc.Validate(); err != nil {
			return p.errorf(list.Line, list.Key, "channel name %q must be 1-128 characters of [A-Za-z0-9._-]", n)
		}
	}
	for name, prs := range chanProps {
		if !listed[name] {
			for _, pr := range prs {
				p.warn(pr.Line, pr.Key, fmt.Sprintf("channel %q is not listed in %s, ignored", name, list.Key))
			}
		}
	}
	for _, n := range names {
		ch, err := p.channel(n, list, chanProps[n])
		if err != nil {
			return err
		}
		p.cfg.Channels = append(p.cfg.Channels, ch)
	}
	if err := p.tree(treeProps, names); err != nil {
		return err
	}
	_, err := p.cfg.stores(p)
	return err
}

// agentsIn lists, sorted, the agents whose channels list the file sets.
func agentsIn(order []string, last map[string]Property) []string {
	var out []string
	for _, k := range order {
		if a, ok := strings.CutSuffix(k, ".channels"); ok && a != "" && !strings.Contains(a, ".") {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// otherAgentKey reports whether k looks like a key of some agent's
// channels, sources or sinks (Flume files often configure several agents).
func otherAgentKey(k string) bool {
	parts := strings.SplitN(k, ".", 3)
	if len(parts) < 2 {
		return false
	}
	switch parts[1] {
	case "channels", "sources", "sinks", "sinkgroups":
		return true
	}
	return false
}

func (p *parser) serverKey(srv *Server, pr Property) error {
	switch pr.Key {
	case "sluice.server.grpc.address":
		if err := checkAddress(pr.Value); err != nil {
			return p.errorf(pr.Line, pr.Key, "%v", err)
		}
		srv.GRPCAddress = pr.Value
	case "sluice.server.metrics.address":
		if pr.Value != "" {
			if err := checkAddress(pr.Value); err != nil {
				return p.errorf(pr.Line, pr.Key, "%v", err)
			}
		}
		srv.MetricsAddress = pr.Value
	case "sluice.server.tls.certFile":
		srv.CertFile = pr.Value
	case "sluice.server.tls.keyFile":
		srv.KeyFile = pr.Value
	case "sluice.server.tls.clientCAFile":
		srv.ClientCAFile = pr.Value
	case "sluice.server.auth.tokensFile":
		srv.TokensFile = pr.Value
	case "sluice.server.limits.maxRecvMsgSize", "sluice.server.limits.maxConcurrentStreams",
		"sluice.server.limits.maxConcurrentPuts", "sluice.server.limits.maxTakeStreams",
		"sluice.server.limits.maxTakeBytes", "sluice.server.limits.maxHeadersPerEvent":
		n, err := p.int64(pr, 1)
		if err != nil {
			return err
		}
		if n > 1<<31-1 {
			return p.errorf(pr.Line, pr.Key, "%d is more than %d", n, 1<<31-1)
		}
		l := &srv.Limits
		switch strings.TrimPrefix(pr.Key, "sluice.server.limits.") {
		case "maxRecvMsgSize":
			l.MaxRecvMsgSize = int(n)
		case "maxConcurrentStreams":
			l.MaxConcurrentStreams = int(n)
		case "maxConcurrentPuts":
			l.MaxConcurrentPuts = int(n)
		case "maxTakeStreams":
			l.MaxTakeStreams = int(n)
		case "maxTakeBytes":
			l.MaxTakeBytes = int(n)
		case "maxHeadersPerEvent":
			l.MaxHeadersPerEvent = int(n)
		}
	default:
		p.warn(pr.Line, pr.Key, "unknown key, ignored")
	}
	return nil
}

func checkAddress(a string) error {
	if a == "" {
		return errors.New("empty address (want host:port)")
	}
	host, port, err := splitHostPort(a)
	if err != nil {
		return err
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("address %q: port %q is not a number from 0 to 65535", a, port)
	}
	return nil
}

func splitHostPort(a string) (host, port string, err error) {
	i := strings.LastIndex(a, ":")
	if i < 0 {
		return "", "", fmt.Errorf("address %q has no port (want host:port)", a)
	}
	host, port = a[:i], a[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", "", fmt.Errorf("address %q: unbalanced [", a)
		}
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return "", "", fmt.Errorf("address %q: IPv6 hosts need brackets, as [::1]:7070", a)
	}
	return host, port, nil
}

func (p *parser) channel(name string, list *Property, prs []Property) (Channel, error) {
	ch := Channel{Name: name, set: map[string]int{}}
	ch.Config = channel.ChannelConfig{Name: name}
	byProp := map[string]Property{}
	for _, pr := range prs {
		prop := strings.TrimPrefix(pr.Key, p.agent+".channels."+name+".")
		byProp[prop] = pr
	}
	typeKey := p.agent + ".channels." + name + ".type"
	tp, ok := byProp["type"]
	if !ok {
		return ch, p.errorf(list.Line, list.Key, "channel %q has no type (set %s = file or memory)", name, typeKey)
	}
	ch.Line = tp.Line
	switch {
	case strings.EqualFold(tp.Value, TypeFile) || tp.Value == FlumeFileChannelClass:
		ch.Type = TypeFile
	case strings.EqualFold(tp.Value, TypeMemory) || tp.Value == FlumeMemoryChannelClass:
		ch.Type = TypeMemory
	default:
		return ch, p.errorf(tp.Line, tp.Key, "channel type %q is not supported (want file or memory, or Flume's %s or %s)",
			tp.Value, FlumeFileChannelClass, FlumeMemoryChannelClass)
	}
	// File-only keys that are not store keys (those say so in storeKeys).
	fileOnly := map[string]bool{"dataDirs": true, "checkpointDir": true, keyKeyProvider: true, keyCipher: true}
	if a, b := byProp[keyKeyFile], byProp[keyKeyStoreFile]; a.Key != "" && b.Key != "" && a.Value != b.Value {
		at := max(a.Line, b.Line)
		k := a.Key
		if b.Line == at {
			k = b.Key
		}
		return ch, p.errorf(at, k, "%s and its alias keyStoreFile name different files (%q, %q); set one of them", keyKeyFile, a.Value, b.Value)
	}
	var capSet, tcSet *Property
	for _, pr := range prs {
		prop := strings.TrimPrefix(pr.Key, p.agent+".channels."+name+".")
		if pr != byProp[prop] {
			continue
		}
		sk, isStoreKey := storeKeyNamed(prop)
		if (fileOnly[prop] || (isStoreKey && sk.fileOnly) || strings.HasPrefix(prop, "encryption.")) && ch.Type != TypeFile {
			p.warn(pr.Line, pr.Key, "applies to file channels only, ignored")
			continue
		}
		switch prop {
		case "dataDirs", "checkpointDir", "backupCheckpointDir", keyKeyFile, keyKeyStoreFile:
			ch.paths = append(ch.paths, pr)
		}
		if isStoreKey {
			if err := sk.parse(p, pr, &ch); err != nil {
				return ch, err
			}
			ch.set[sk.name] = max(ch.set[sk.name], pr.Line)
			continue
		}
		var err error
		switch prop {
		case "type":
		case "capacity":
			ch.Config.Capacity, err = p.int64(pr, 1)
			capSet = &pr
		case "transactionCapacity":
			var n int64
			n, err = p.int64(pr, 1)
			if err == nil && n > 1<<31-1 {
				err = p.errorf(pr.Line, pr.Key, "%d is too large", n)
			}
			ch.Config.TransactionCapacity = int(n)
			tcSet = &pr
		case "byteCapacity":
			ch.Config.MaxBytes, err = p.int64(pr, 0)
		case "keep-alive":
			var n int64
			n, err = p.int64(pr, 0)
			if err == nil && n > 1<<31 {
				err = p.errorf(pr.Line, pr.Key, "%d seconds is too long", n)
			}
			ch.Config.KeepAlive = time.Duration(n) * time.Second
		case "dataDirs":
			for _, d := range strings.Split(pr.Value, ",") {
				if d = strings.TrimSpace(d); d != "" {
					ch.DataDirs = append(ch.DataDirs, filepath.Clean(d))
				}
			}
			if len(ch.DataDirs) == 0 {
				err = p.errorf(pr.Line, pr.Key, "no directories (want a comma-separated list)")
			}
		case "checkpointDir":
			if pr.Value == "" {
				err = p.errorf(pr.Line, pr.Key, "empty directory")
			}
			ch.CheckpointDir = filepath.Clean(pr.Value)
		case keyKeyProvider:
			// Flume's provider of keys from a Java key store; Sluice reads
			// its own key file format whatever this says.
			if v := strings.TrimSpace(pr.Value); !strings.EqualFold(v, "JCEKSFILE") && !strings.EqualFold(v, "file") {
				err = p.errorf(pr.Line, pr.Key, "key provider %q is not supported (want file, or Flume's JCEKSFILE; either reads a Sluice key file)", pr.Value)
			}
		case keyCipher:
			p.warn(pr.Line, pr.Key, "ignored: Sluice always encrypts with AES-256-GCM")
			continue
		default:
			if strings.HasPrefix(prop, keyKeyProvider+".") {
				p.warn(pr.Line, pr.Key, "Flume key store property not used by Sluice, ignored: keys come from "+keyKeyFile)
				continue
			}
			if why, ok := flumeIgnored[prop]; ok {
				p.warn(pr.Line, pr.Key, "Flume property not used by Sluice, ignored: "+why)
			} else if near := nearest(prop, channelProps()); near != "" {
				p.warn(pr.Line, pr.Key, "unknown channel property, ignored; did you mean "+near+"?")
			} else {
				p.warn(pr.Line, pr.Key, "unknown channel property, ignored")
			}
			continue
		}
		if err != nil {
			return ch, err
		}
	}
	if tcSet == nil && capSet != nil && ch.Config.Capacity < channel.DefaultTransactionCapacity {
		ch.Config.TransactionCapacity = int(ch.Config.Capacity) // default clamped to capacity
	}
	ch.Config.EnsureDefaults()
	if ch.Config.TransactionCapacity > 0 && int64(ch.Config.TransactionCapacity) > ch.Config.Capacity {
		at := tcSet
		if at == nil {
			at = capSet
		}
		return ch, p.errorf(at.Line, at.Key, "transactionCapacity %d exceeds capacity %d", ch.Config.TransactionCapacity, ch.Config.Capacity)
	}
	if err := ch.Config.Validate(); err != nil {
		return ch, p.errorf(tp.Line, tp.Key, "%v", err)
	}
	if ch.Type == TypeFile {
		if len(ch.DataDirs) == 0 {
			return ch, p.errorf(tp.Line, p.agent+".channels."+name+".dataDirs", "missing: required for a file channel")
		}
		if ch.CheckpointDir == "" {
			return ch, p.errorf(tp.Line, p.agent+".channels."+name+".checkpointDir", "missing: required for a file channel")
		}
		seen := map[string]string{ch.CheckpointDir: "checkpointDir"}
		check := func(d, what string) error {
			if prev, dup := seen[d]; dup {
				pr := byProp[what]
				return p.errorf(pr.Line, pr.Key, "directory %s is also the channel's %s", d, prev)
			}
			seen[d] = what
			return nil
		}
		if ch.BackupCheckpointDir != "" {
			if err := check(ch.BackupCheckpointDir, "backupCheckpointDir"); err != nil {
				return ch, err
			}
		}
		for _, d := range ch.DataDirs {
			if err := check(d, "dataDirs"); err != nil {
				return ch, err
			}
		}
		seg := ch.SegmentSize
		if seg == 0 {
			seg = MaxSegmentSize
		}
		mes := int64(ch.MaxEventSize)
		if mes == 0 {
			mes = channel.DefaultMaxEventSize
		}
		if mes > seg/4 {
			at := byProp["maxFileSize"]
			if l, ok := ch.set["maxEventSize"]; ok && l > at.Line {
				at = byProp["maxEventSize"]
			}
			return ch, p.errorf(at.Line, at.Key, "maxEventSize %d must be at most a quarter of maxFileSize %d", mes, seg)
		}
	}
	return ch, nil
}

// inlineComment rejects or warns about a value that holds blanks followed by
// '#': properties files have no inline comments, so `dataDirs = /d   # main
// disk` names a directory "/d   # main disk". Paths are errors (a directory
// of that name would be created), numbers fail to parse anyway (with the
// same hint, see int64), anything else is a warning.
func (p *parser) inlineComment(pr Property) error {
	i := strings.Index(pr.Value, "#")
	if i <= 0 || !strings.ContainsAny(pr.Value[i-1:i], " \t") {
		return nil
	}
	const why = "properties files have no inline comments: the value is %q; put the comment on a line of its own"
	prop := pr.Key[strings.LastIndex(pr.Key, ".")+1:]
	switch prop {
	case "dataDirs", "checkpointDir", "backupCheckpointDir", "keyFile", "keyStoreFile", "certFile", "clientCAFile", "tokensFile":
		return p.errorf(pr.Line, pr.Key, why, pr.Value)
	}
	if _, err := strconv.ParseInt(strings.TrimSpace(pr.Value[:i]), 10, 64); err == nil {
		return nil // a number: int64 reports it, with the hint
	}
	p.warn(pr.Line, pr.Key, fmt.Sprintf(why, pr.Value))
	return nil
}

// keyUnits names what a number key counts, for errors about a value given
// with a unit ("1G", "3s").
var keyUnits = map[string]string{
	"capacity": "events", "transactionCapacity": "events", "byteCapacity": "bytes", "keep-alive": "seconds",
	"checkpointInterval": "milliseconds", "maxFileSize": "bytes", "minimumRequiredSpace": "bytes",
	"maxEventSize": "bytes", "producerExpiry": "seconds", "maxProducers": "producer ids", "spareSegments": "segments",
	"maxRecvMsgSize": "bytes", "maxTakeBytes": "bytes",
}

func (p *parser) int64(pr Property, min int64) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(pr.Value), 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, p.errorf(pr.Line, pr.Key, "%q is out of range", pr.Value)
		}
		if strings.Contains(pr.Value, "#") {
			return 0, p.errorf(pr.Line, pr.Key, "%q is not an integer (properties files have no inline comments: put the comment on a line of its own)", pr.Value)
		}
		unit := keyUnits[pr.Key[strings.LastIndex(pr.Key, ".")+1:]]
		if v := strings.TrimSpace(pr.Value); unit != "" && v != "" && v[0] >= '0' && v[0] <= '9' { // "1G", "3s"
			return 0, p.errorf(pr.Line, pr.Key, "%q is not an integer: the key takes a whole number of %s, with no unit suffix", pr.Value, unit)
		}
		return 0, p.errorf(pr.Line, pr.Key, "%q is not an integer", pr.Value)
	}
	if n < min {
		return 0, p.errorf(pr.Line, pr.Key, "%d must be at least %d", n, min)
	}
	return n, nil
}

// Stores groups the channels into stores: file channels with the same
// dataDirs and checkpointDir share one file store (so one put transaction
// can cover them), and every memory channel goes to one memory store.
// Parse has already checked that the grouping is consistent.
func (c *Config) Stores() []Store {
	st, err := c.stores(nil)
	if err != nil { // Parse rejected such configurations
		panic(err)
	}
	return st
}

func (c *Config) stores(p *parser) ([]Store, error) {
	fail := func(line int, key, format string, args ...any) error {
		if p == nil {
			return fmt.Errorf(format, args...)
		}
		return p.errorf(line, key, format, args...)
	}
	type group struct {
		store Store
		first *Channel            // channel whose dirs define the store
		owner map[string]*Channel // store-wide key -> channel that set it
	}
	var groups []*group
	byKey := map[string]*group{}
	dirOwner := map[string]*group{} // every directory -> its store
	var mem *group
	for i := range c.Channels {
		ch := &c.Channels[i]
		var g *group
		if ch.Type == TypeMemory {
			if mem == nil {
				mem = &group{store: Store{Type: TypeMemory}, first: ch, owner: map[string]*Channel{}}
				groups = append(groups, mem)
			}
			g = mem
		} else {
			key := strings.Join(ch.DataDirs, "\x00") + "\x01" + ch.CheckpointDir
			g = byKey[key]
			if g == nil {
				g = &group{store: Store{Type: TypeFile, File: filestore.Options{
					DataDirs: slices.Clone(ch.DataDirs), CheckpointDir: ch.CheckpointDir,
				}}, first: ch, owner: map[string]*Channel{}}
				for _, d := range append(slices.Clone(ch.DataDirs), ch.CheckpointDir) {
					if o := dirOwner[d]; o != nil {
						k := c.Agent + ".channels." + ch.Name + ".dataDirs"
						if d == ch.CheckpointDir {
							k = c.Agent + ".channels." + ch.Name + ".checkpointDir"
						}
						return nil, fail(ch.Line, k, "directory %s is also used by channel %q, whose dataDirs and checkpointDir differ; "+
							"channels share a store only when both are identical", d, o.first.Name)
					}
					dirOwner[d] = g
				}
				byKey[key] = g
				groups = append(groups, g)
			}
		}
		g.store.Channels = append(g.store.Channels, ch.Name)
		for _, pr := range ch.paths {
			for _, v := range strings.Split(pr.Value, ",") {
				if v = strings.TrimSpace(v); v != "" {
					g.store.Origins = append(g.store.Origins, Origin{Path: filepath.Clean(v), File: c.File, Line: pr.Line, Key: pr.Key})
				}
			}
		}
		if ch.Type == TypeMemory {
			g.store.Memory.Channels = append(g.store.Memory.Channels, ch.Config)
		} else {
			g.store.File.Channels = append(g.store.File.Channels, ch.Config)
		}
		// Store-wide keys: an explicit setting applies to the whole store;
		// two explicit settings must agree.
		for _, sk := range storeKeys {
			k := sk.name
			line, ok := ch.set[k]
			if !ok {
				continue
			}
			key := c.Agent + ".channels." + ch.Name + "." + k
			if k == keyKeyFile {
				key = ch.keyFileKey
			}
			if o := g.owner[k]; o != nil && sk.value(o) != sk.value(ch) {
				return nil, fail(line, key, "differs from channel %q (line %d), which shares its store; store-wide settings must agree",
					o.Name, o.set[k])
			}
			g.owner[k] = ch
			sk.apply(&g.store, ch)
			if k == "backupCheckpointDir" && ch.BackupCheckpointDir != "" {
				if o := dirOwner[ch.BackupCheckpointDir]; o != nil && o != g {
					return nil, fail(line, key, "directory %s is also used by channel %q of another store", ch.BackupCheckpointDir, o.first.Name)
				}
				dirOwner[ch.BackupCheckpointDir] = g
			}
		}
	}
	// An active key id needs a key file (set by any channel of the store).
	for _, g := range groups {
		if o := g.owner[keyActiveKey]; o != nil && g.store.KeyFile == "" {
			return nil, fail(o.set[keyActiveKey], c.Agent+".channels."+o.Name+"."+keyActiveKey,
				"an active key needs a key file: set %s.channels.%s.%s (see sluice keygen)", c.Agent, o.Name, keyKeyFile)
		}
	}
	// A store-wide segment size set by one channel and an event size set by
	// another must still fit together.
	for _, g := range groups {
		if g.store.Type != TypeFile {
			continue
		}
		seg, mes := g.store.File.SegmentSize, int64(g.store.MaxEventSize())
		if seg == 0 {
			seg = MaxSegmentSize
		}
		if mes > seg/4 {
			k := "maxEventSize"
			o := g.owner[k]
			if o == nil {
				k = "maxFileSize"
				o = g.owner[k]
			}
			return nil, fail(o.set[k], c.Agent+".channels."+o.Name+"."+k,
				"maxEventSize %d must be at most a quarter of the store's maxFileSize %d", mes, seg)
		}
	}
	out := make([]Store, len(groups))
	for i, g := range groups {
		out[i] = g.store
	}
	return out, nil
}
