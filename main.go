// Command vipd keeps one shared IP address on exactly one node of a cluster,
// elected through an etcd lease, announced with gratuitous ARP.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// version is stamped by the Makefile (-X main.version=...).
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // could not start at all (no rtnetlink, no etcd client)
	exitUsage   = 2 // bad input: flags or configuration
)

func main() {
	os.Exit(vipd(os.Args[1:], os.Stdout, os.Stderr))
}

func vipd(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cmdlinePath := fs.String("cmdline", "/proc/cmdline", "read vip.* words from `PATH` (\"none\": no kernel command line)")
	check := fs.Bool("check", false, "validate the configuration, print it as vip.key=value lines and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vipd [-cmdline PATH] [-check] [-version] [vip.key=value ...]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *showVersion {
		fmt.Fprintf(stdout, "vipd %s\n", version)
		return exitOK
	}

	cmdline, err := readCmdline(*cmdlinePath)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	args := fs.Args()
	boot, err := bootstrapConfig(args, cmdline)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	log, err := openLogger(boot.Log)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	hostname, _ := os.Hostname() // the parser ignores names many hosts share

	// The config source is read first; arguments and the kernel command
	// line override what it says, TLS paths included.
	var loaded loadedConfig
	if boot.ConfigSource != "" {
		spec, _ := parseConfigSpec(boot.ConfigSource) // validated by bootstrapConfig
		effectiveTLS := func(fileWords []string) map[string]string {
			c, _, err := parseConfigSources(args, cmdline, fileWords, hostname)
			if err != nil {
				return nil // reported by the full parse below
			}
			return tlsPaths(c)
		}
		if loaded, err = loadConfig(spec, boot.ConfigTimeout, log, effectiveTLS); err != nil {
			return failConfig(stderr, log, err)
		}
	}
	cfg, sources, err := parseConfigSources(args, cmdline, loaded.words, hostname)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	if cfg.Log != boot.Log { // set in the config file
		if log, err = openLogger(cfg.Log); err != nil {
			fmt.Fprintf(stderr, "vipd: %v\n", err)
			return exitUsage
		}
	}
	files := loaded.files
	if boot.ConfigSource == "" {
		if files, err = readTLSFiles(cfg); err != nil {
			return failConfig(stderr, log, err)
		}
	}
	tlsCfg, err := etcdTLS(cfg, files, log)
	if err != nil {
		return failConfig(stderr, log, err)
	}
	if *check {
		for _, w := range cfg.WordsWithSources(sources) {
			fmt.Fprintln(stdout, w)
		}
		return exitOK
	}
	return serve(cfg, tlsCfg, log)
}

// failConfig reports a configuration that could not be loaded: bad input
// exits 2; a device that never appeared or would not mount exits 1.
func failConfig(stderr io.Writer, log *logger, err error) int {
	var ce *configError
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return exitUsage
	}
	log.errorf("%v", err)
	return exitRuntime
}

// readCmdline reads the kernel command line words. A missing /proc (a very
// early init) is not an error; a file named with -cmdline that cannot be
// read is.
func readCmdline(path string) ([]string, error) {
	if path == "none" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == "/proc/cmdline" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("-cmdline %s: %w", path, err)
	}
	return splitCmdline(string(b)), nil
}

func serve(cfg Config, tlsCfg *tls.Config, log *logger) int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	rt, err := dialRTNL(0)
	if err != nil {
		log.errorf("%v", err)
		return exitRuntime
	}
	defer rt.Close()
	watch, err := watchRTNL(0)
	if err != nil {
		log.errorf("%v", err)
		return exitRuntime
	}

	// The client does not connect here: an unreachable etcd is waited for
	// by the lease loop, with logs.
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Etcd,
		TLS:                  tlsCfg,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		log.errorf("etcd client for %s: %v", strings.Join(cfg.Etcd, ","), err)
		return exitRuntime
	}
	defer cli.Close()

	n := newNode(cfg, tlsCfg, log, rt, cli)
	go keepWatching(watch, n.rtEvents)
	n.run(signals)
	log.infof("stopped")
	return exitOK
}

// keepWatching feeds kernel events to the node for as long as vipd runs; if
// the subscription fails it is opened again and the node told to resync.
func keepWatching(w *rtnlWatch, out chan<- rtnlEvent) {
	for {
		w.run(out) // returns after reporting its error
		w.Close()
		for {
			time.Sleep(time.Second)
			var err error
			if w, err = watchRTNL(0); err == nil {
				break
			}
		}
		out <- rtnlEvent{resync: true}
	}
}
