package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/builtin"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/internal/router"
	"github.com/sluicehq/sluice/server"
)

// flumeDefines takes Flume's -Dname=value Java system properties out of
// args (the flag package would refuse them).
func flumeDefines(args []string) (rest, defines []string) {
	for _, a := range args {
		if d, ok := strings.CutPrefix(a, "-D"); ok && d != "" {
			defines = append(defines, d)
			continue
		}
		rest = append(rest, a)
	}
	return rest, defines
}

func runServe(args []string, flumeStyle bool) int {
	name := "serve"
	synopsis := "[--config FILE] [--name AGENT]"
	if flumeStyle {
		name, synopsis = "agent", "--conf-file FILE --name AGENT"
	}
	fs := newFlagSet(name, synopsis)
	var configPath, agent, readyFile, logLevel string
	var printDefault, check bool
	var shutdownTimeout time.Duration
	if flumeStyle {
		fs.StringVar(&configPath, "conf-file", "", "configuration `file` (Flume properties)")
		fs.StringVar(&configPath, "f", "", "shorthand for --conf-file")
		fs.StringVar(&agent, "name", "", "agent `name`: the prefix of the channel keys (required)")
		fs.StringVar(&agent, "n", "", "shorthand for --name")
		fs.String("conf", "", "Flume's configuration directory (accepted and ignored)")
		fs.String("c", "", "shorthand for --conf (ignored)")
		fs.Bool("no-reload-conf", false, "accepted: Sluice does not poll the configuration file (SIGHUP reloads keys and tokens)")
	} else {
		fs.StringVar(&configPath, "config", "", "configuration `file` (Flume properties); default: the embedded default configuration")
		fs.StringVar(&agent, "name", config.DefaultAgent, "agent `name`: the prefix of the channel keys")
		fs.BoolVar(&printDefault, "print-default-config", false, "print the embedded default configuration and exit")
	}
	fs.BoolVar(&check, "check", false, "validate the configuration and every component without starting anything; exit 0 when valid, 1 listing every problem")
	fs.StringVar(&readyFile, "ready-file", "", "once serving, write the bound addresses to this `file` (lines grpc=ADDR and metrics=ADDR)")
	fs.StringVar(&logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long in-flight RPCs may take before they are cut off")
	var defines []string
	if flumeStyle {
		args, defines = flumeDefines(args)
	}
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if printDefault {
		fmt.Print(config.Default)
		return 0
	}
	if flumeStyle && (configPath == "" || agent == "") {
		fmt.Fprintln(os.Stderr, "sluice agent: --conf-file and --name are required")
		fs.Usage()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: --log-level: %v\n", name, err)
		fs.Usage()
		return 2
	}
	var notes []string
	for _, d := range defines {
		// Flume's -Dflume.root.logger=LEVEL,console sets the log level.
		if v, ok := strings.CutPrefix(d, "flume.root.logger="); ok {
			lv, _, _ := strings.Cut(v, ",")
			if err := level.UnmarshalText([]byte(strings.ToLower(lv))); err == nil {
				notes = append(notes, "-D"+d+": log level "+level.String())
				continue
			}
		}
		notes = append(notes, "-D"+d+": a Java system property; ignored")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	for _, n := range notes {
		log.Info("sluice agent: Flume command-line option", "option", n)
	}

	// Signals first: a SIGTERM during recovery is handled once it finishes.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var cfg *config.Config
	var err error
	if configPath == "" {
		cfg, err = config.LoadDefault(agent, log)
	} else {
		cfg, err = config.Load(configPath, agent, log)
	}
	if err != nil {
		log.Error("configuration", "err", err)
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", name, err)
		return 1
	}
	ag, err := buildAgent(cfg, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: the configuration has problems:\n%s\n", name, indent(err))
		return 1
	}
	if check {
		fmt.Printf("%s: agent %s is valid: %d channels, %d sources, %d sinks, %d sink groups; %d warnings\n",
			cfg.File, cfg.Agent, len(cfg.Channels), len(cfg.Sources), len(cfg.Sinks), len(cfg.SinkGroups), len(cfg.Warnings)+len(ag.Warnings()))
		return 0
	}
	if err := serve(cfg, ag, log, sigs, readyFile, shutdownTimeout); err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", name, err)
		return 1
	}
	return 0
}

func describeStore(st config.Store) string {
	if st.Type == config.TypeMemory {
		return "memory store"
	}
	return fmt.Sprintf("file store dataDirs=%s checkpointDir=%s", strings.Join(st.File.DataDirs, ","), st.File.CheckpointDir)
}

// serve runs the server until a SIGTERM or SIGINT: it listens first, answers
// UNAVAILABLE (health NOT_SERVING) while the stores recover, then serves.
func serve(cfg *config.Config, ag *agent.Agent, log *slog.Logger, sigs <-chan os.Signal, readyFile string, shutdownTimeout time.Duration) error {
	stores := cfg.Stores()
	groups := make([][]string, len(stores))
	descr := make([]string, len(stores))
	maxEvent := 0
	for i, st := range stores {
		groups[i] = st.Channels
		descr[i] = describeStore(st)
		maxEvent = max(maxEvent, st.MaxEventSize())
	}
	rt, err := router.New(groups, descr)
	if err != nil {
		return err
	}
	srv, err := server.New(rt, server.Options{
		MaxEventSize: maxEvent,
		CertFile:     cfg.Server.CertFile,
		KeyFile:      cfg.Server.KeyFile,
		ClientCAFile: cfg.Server.ClientCAFile,
		TokensFile:   cfg.Server.TokensFile,
		Logger:       log,

		MaxRecvMsgSize:       cfg.Server.Limits.MaxRecvMsgSize,
		MaxConcurrentStreams: uint32(cfg.Server.Limits.MaxConcurrentStreams),
		MaxConcurrentPuts:    cfg.Server.Limits.MaxConcurrentPuts,
		MaxTakeStreams:       cfg.Server.Limits.MaxTakeStreams,
		MaxTakeBytes:         cfg.Server.Limits.MaxTakeBytes,
		MaxHeadersPerEvent:   cfg.Server.Limits.MaxHeadersPerEvent,
		ServerOptions: []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(recoveringUnary(rt)),
			grpc.ChainStreamInterceptor(recoveringStream(rt)),
		},
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Server.GRPCAddress)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	var mlis net.Listener
	if cfg.Server.MetricsAddress != "" {
		if mlis, err = net.Listen("tcp", cfg.Server.MetricsAddress); err != nil {
			lis.Close()
			return fmt.Errorf("metrics listener: %w", err)
		}
	}
	serveErr := make(chan error, 2)
	go func() {
		if err := srv.Serve(lis); err != nil {
			serveErr <- fmt.Errorf("gRPC server: %w", err)
		}
	}()
	var hsrv *http.Server
	metricsAddr := ""
	if mlis != nil {
		metricsAddr = mlis.Addr().String()
		m := srv.MetricsHandler()
		m.Registry().MustRegister(ag.Collector())
		m.AddGroups(ag.JSON)
		hsrv = &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hsrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	warnExposure(log, lis.Addr(), cfg.Server.CertFile != "", cfg.Server.ClientCAFile != "", cfg.Server.TokensFile != "", mlis)
	log.Info("sluice listening", "version", version, "agent", cfg.Agent, "config", cfg.File,
		"grpc", lis.Addr().String(), "metrics", metricsAddr, "tls", cfg.Server.CertFile != "")

	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.GracefulStop(ctx); err != nil {
			log.Warn("graceful stop cut off in-flight RPCs", "err", err)
		}
		if hsrv != nil {
			hsrv.Shutdown(ctx)
		}
	}

	opened, err := openStores(stores, log)
	if err != nil {
		stop()
		return err
	}
	rt.SetStores(opened)
	// The agent's components use the router the gRPC server serves.
	if err := ag.Start(context.Background(), rt); err != nil {
		stop()
		rt.Close()
		return err
	}
	defer ag.Stop() // on an early return; the loop below stops it first
	log.Info("sluice ready", "channels", strings.Join(rt.Channels(), ","), "stores", len(opened))
	if readyFile != "" {
		if err := writeReadyFile(readyFile, lis.Addr().String(), metricsAddr, ag.Addrs()); err != nil {
			log.Error("ready file", "err", err)
		}
	}

	var result error
loop:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := srv.ReloadTokens(); err != nil {
					log.Error("SIGHUP: reload tokens failed; NO token is valid: every request is refused until the tokens file is fixed and SIGHUP sent again", "err", err)
				} else {
					log.Info("SIGHUP: tokens reloaded")
				}
				reloadKeys(cfg, stores, opened, log)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break loop
		case err := <-serveErr:
			log.Error("listener failed; shutting down", "err", err)
			result = err
			break loop
		}
	}
	// Sources stop first (each commits or rolls back what it read), then
	// sinks (each finishes its take), then the gRPC server and the stores.
	ag.Stop()
	stop()
	start := time.Now()
	if err := rt.Close(); err != nil {
		log.Error("closing stores", "err", err)
		if result == nil {
			result = err
		}
	} else {
		log.Info("stores closed", "took", time.Since(start).Round(time.Millisecond))
	}
	return result
}

// warnExposure warns about listeners that other hosts can reach without
// protection: the gRPC address without TLS or without client
// authentication (bearer tokens or mutual TLS), and the metrics endpoint,
// which has no authentication at all.
func warnExposure(log *slog.Logger, grpcAddr net.Addr, tls, mtls, tokens bool, metrics net.Listener) {
	if !isLoopback(grpcAddr) {
		var missing []string
		if !tls {
			missing = append(missing, "TLS (sluice.server.tls.certFile and keyFile)")
		}
		if !tokens && !mtls {
			missing = append(missing, "client authentication (sluice.server.auth.tokensFile or sluice.server.tls.clientCAFile)")
		}
		if len(missing) > 0 {
			log.Warn("INSECURE: the gRPC server listens on a non-loopback address without "+strings.Join(missing, " and ")+
				"; whoever reaches it can see or change events (and tokens travel in clear text without TLS)",
				"address", grpcAddr.String(), "missing", strings.Join(missing, ", "))
		}
	}
	if metrics != nil && !isLoopback(metrics.Addr()) {
		log.Warn("the metrics endpoint has no authentication and listens on a non-loopback address; it reveals channel names and sizes (default sluice.server.metrics.address is 127.0.0.1:7071)",
			"address", metrics.Addr().String())
	}
}

// isLoopback reports whether a listener's address is a loopback IP (an
// unspecified address such as 0.0.0.0 or [::] listens on every interface).
func isLoopback(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// openStores opens every store concurrently; on a failure it closes the
// ones that opened.
func openStores(stores []config.Store, log *slog.Logger) ([]channel.Store, error) {
	out := make([]channel.Store, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Go(func() {
			start := time.Now()
			d := describeStore(st)
			switch st.Type {
			case config.TypeMemory:
				m, err := memstore.New(st.Memory)
				out[i], errs[i] = m, err
			default:
				opts := st.File
				opts.Logger = log.With("store", d)
				kr, err := st.Keyring()
				if err != nil {
					errs[i] = fmt.Errorf("open %s: encryption: %w", d, st.Explain(err))
					return
				}
				opts.Encryption = kr
				log.Info("recovering store", "store", d, "channels", strings.Join(st.Channels, ","),
					"encryption_key", activeKey(kr), "compression", opts.Compression)
				f, err := filestore.Open(opts)
				if err == nil {
					out[i] = f
				}
				errs[i] = err
			}
			if errs[i] != nil {
				// Explained before the store's description is added: that
				// names every directory of the store.
				errs[i] = fmt.Errorf("open %s: %w", d, st.Explain(errs[i]))
				return
			}
			log.Info("store open", "store", d, "took", time.Since(start).Round(time.Millisecond))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			if s != nil {
				s.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

// writeReadyFile writes grpc=ADDR, metrics=ADDR and a line
// source.NAME=ADDR for every source listening on a socket.
func writeReadyFile(path, grpcAddr, metricsAddr string, sources map[string]string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	data := fmt.Sprintf("grpc=%s\nmetrics=%s\n", grpcAddr, metricsAddr)
	for _, n := range slices.Sorted(maps.Keys(sources)) {
		data += fmt.Sprintf("source.%s=%s\n", n, sources[n])
	}
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

const (
	healthCheck = "/grpc.health.v1.Health/Check"
	healthWatch = "/grpc.health.v1.Health/Watch"
)

// recoveringUnary answers health checks NOT_SERVING until the stores are
// open (other RPCs get UNAVAILABLE from the router).
func recoveringUnary(rt *router.Router) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == healthCheck && !rt.IsReady() {
			return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
		}
		return h(ctx, req)
	}
}

// recoveringStream makes a health Watch report NOT_SERVING until the stores
// are open, then hands over to the health service.
func recoveringStream(rt *router.Router) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == healthWatch && !rt.IsReady() {
			if err := ss.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
				return err
			}
			select {
			case <-rt.Ready():
			case <-ss.Context().Done():
				return ss.Context().Err()
			}
		}
		return h(srv, ss)
	}
}

// activeKey describes a keyring for the log.
func activeKey(kr *crypto.Keyring) string {
	if kr == nil {
		return "none"
	}
	return fmt.Sprintf("%d (%s)", kr.Active(), kr.File())
}

// reloadKeys re-reads the configuration and the key files of the encrypted
// file stores and installs the keys with (*filestore.Store).Rekey: this is how
// the active key is rotated without a restart (edit encryption.activeKey, or
// append a key with sluice keygen when activeKey is unset, then SIGHUP).
// Nothing else of the configuration is reloaded. Every failure is logged and
// leaves that store's current keys in force.
func reloadKeys(cfg *config.Config, stores []config.Store, opened []channel.Store, log *slog.Logger) {
	quiet := slog.New(slog.DiscardHandler) // warnings were logged at startup
	var next *config.Config
	var err error
	if cfg.File == config.DefaultFileName {
		next, err = config.LoadDefault(cfg.Agent, quiet)
	} else {
		next, err = config.Load(cfg.File, cfg.Agent, quiet)
	}
	if err != nil {
		log.Error("SIGHUP: re-reading the configuration for encryption keys failed; the current keys stay in force", "err", err)
		return
	}
	nextStores := next.Stores()
	for i, st := range stores {
		f, ok := opened[i].(*filestore.Store)
		if !ok {
			continue
		}
		d := describeStore(st)
		var ns *config.Store
		for j := range nextStores {
			if nextStores[j].Type == config.TypeFile && slices.Equal(nextStores[j].File.DataDirs, st.File.DataDirs) &&
				nextStores[j].File.CheckpointDir == st.File.CheckpointDir {
				ns = &nextStores[j]
			}
		}
		switch {
		case ns == nil:
			if f.EncryptionKey() != 0 {
				log.Error("SIGHUP: the store is no longer in the configuration; its current keys stay in force until restart", "store", d)
			}
			continue
		case ns.KeyFile == "":
			if f.EncryptionKey() != 0 {
				log.Error("SIGHUP: encryption cannot be turned off while running; the current keys stay in force", "store", d)
			}
			continue
		}
		kr, err := ns.Keyring()
		if err != nil {
			log.Error("SIGHUP: loading encryption keys failed; the current keys stay in force", "store", d, "err", err)
			continue
		}
		if err := f.Rekey(kr); err != nil {
			log.Error("SIGHUP: installing encryption keys failed; the current keys stay in force", "store", d, "err", err)
			continue
		}
		log.Info("SIGHUP: encryption keys reloaded", "store", d, "key_file", kr.File(), "active_key", kr.Active(), "keys", len(kr.IDs()))
	}
}

// buildAgent builds the configuration's sources, sinks and sink groups
// with the built-in component types (nothing is opened yet).
func buildAgent(cfg *config.Config, log *slog.Logger) (*agent.Agent, error) {
	return agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: log})
}

// indent lists the problems of a joined error one per line.
func indent(err error) string {
	var b strings.Builder
	for _, l := range strings.Split(err.Error(), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}
