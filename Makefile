# vipd — build, test, benchmark, demo. Root is needed for test, bench and
# demo: they create network namespaces (never touching the host's interfaces).
# sudo resets PATH, so look for Go where its installer puts it too, and
# give the tests (which build vipd and etcd themselves) the same Go.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
ifneq ($(findstring /,$(GO)),)
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
endif
# The version is the file VERSION (semver; no git tags needed), the commit
# git's, 12 hex digits, "-dirty" when tracked files have uncommitted
# changes, "unknown" without git. vipd -version prints both.
VERSION := $(shell cat VERSION 2>/dev/null || echo dev)
COMMIT  = $(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) || c=unknown; \
	[ "$$c" = unknown ] || [ -z "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || c=$$c-dirty; echo $$c)
LDFLAGS = -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# gRPC's request tracing (golang.org/x/net/trace, with html/template) is
# never enabled by vipd; without it the binary is 0.75 MiB smaller.
TAGS    := grpcnotrace
ETCD    := test/etcd/bin/etcd
# The boot test's arm64 VM: vipd built for arm64 like vipd, and Debian's
# arm64 cloud kernel and busybox-static, unpacked by test/install-deps.
VIPD_ARM64 := bin/vipd-linux-arm64
ARM64_ROOT := bin/boot-arm64
SRC     := $(wildcard *.go) go.mod go.sum VERSION

.PHONY: build etcd test lint bench demo fuzz soak boot-test skew-test release release-check image image-check clean

# need-TARGET: what TARGET needs from the system, installed from Debian when
# missing (as root), or one line naming it (test/install-deps). It runs
# first, before anything is built.
need-%:
	@test/install-deps $*

build: vipd

vipd: $(SRC)
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)' -o $@ .

$(VIPD_ARM64): $(SRC)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)' -o $@ .

# The release (issue 21): dist/ holds exactly one binary per target,
# vipd-<version>-linux-<arch>, and their SHA256SUMS. Reproducible: the same
# tree gives the same bytes in any directory, with any cache. The Go
# toolchain is the one go.mod names (GOTOOLCHAIN fetches it through the
# module proxy when the local Go differs), the architecture levels are
# Go's defaults, pinned, and GOFLAGS is set (an empty one would let a go
# env file's through).
ARCHES    := amd64 arm64 riscv64
TOOLCHAIN := $(shell sed -n 's/^toolchain //p' go.mod)
release:
	rm -rf dist
	mkdir dist
	for a in $(ARCHES); do \
		env GOFLAGS=-mod=readonly GOTOOLCHAIN=$(TOOLCHAIN) CGO_ENABLED=0 GOOS=linux GOARCH=$$a \
			GOAMD64=v1 GOARM64=v8.0 GORISCV64=rva20u64 \
			$(GO) build -trimpath -buildvcs=false -tags $(TAGS) -ldflags '$(LDFLAGS)' \
			-o dist/vipd-$(VERSION)-linux-$$a . || exit 1; \
	done
	cd dist && sha256sum vipd-$(VERSION)-linux-* > SHA256SUMS
	@cat dist/SHA256SUMS

# The container image (Dockerfile): dist/'s binary for each platform in a
# FROM scratch image, built with podman for linux/amd64 and linux/arm64
# and checked (test/image-check). `make image` keeps the images, tagged
# vipd:<version>-<arch>.
IMAGE_ARCHES := amd64 arm64
image: need-image release
	for a in $(IMAGE_ARCHES); do \
		podman build --platform linux/$$a --build-arg VERSION=$(VERSION) -t vipd:$(VERSION)-$$a . || exit 1; \
	done

image-check: need-image release
	test/image-check

# Two releases of this tree (HEAD plus uncommitted changes to tracked
# files), each in its own directory with its own empty build cache, must
# be byte-identical; then each binary is checked (test/release-check) and
# run, -version and -check: arm64 and riscv64 under qemu-user.
release-check: need-release-check
	test/release-check

# The pinned etcd server for tests and the demo, built once and cached.
etcd: $(ETCD)

$(ETCD): test/etcd/main.go test/etcd/go.mod test/etcd/go.sum
	cd test/etcd && CGO_ENABLED=0 $(GO) build -trimpath -o bin/etcd .

# Every package of the module: the unit tests here, and the lab under
# test/ (test/lab, the scenarios in test/scenario; test/soak, test/bench and
# test/demo skip unless asked). One package at a time (-p 1), as when they
# were one package: the lab's timings assume it has the machine.
# Then the same tests once more as the user nobody (test/as-nobody): the
# unit, node and election tests need no root and must pass without it; the
# namespace tests skip, each with one line.
test: need-test $(ETCD) lint
	VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -p 1 -count=1 -timeout 20m ./...
	VIPD_ETCD=$(CURDIR)/$(ETCD) test/as-nobody

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || ls *.go)); \
	if [ -n "$$out" ]; then echo "gofmt: not formatted: $$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks (test/bench) print tables; they measure, they do not assert
# times. They run the vipd just built; VIPD_BENCH_MD=<file> chooses where
# the tables are appended (default: benchMD in test/bench/bench_test.go).
bench: need-bench $(ETCD) vipd
	VIPD=$(CURDIR)/vipd VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/bench

# The version-skew test (issue 21, test/skew): a 3-node lab running this
# vipd beside N-1 built from git history, commit SKEW_BASE (0.1.0, tagged
# v0.1.0; the build does not need the tag; docs/operating.md, "Upgrades
# and versions"): both mixes through crashes and graceful stops of the holder,
# an upgrade in place and a rollback by SIGHUP, crash restarts across
# versions, a rolling upgrade; and -status naming the holder of a vipd
# from before since=/beat= (SKEW_PRE_TENURE, the commit before 6d22a5b);
# and N-1 reading the words N adds to the entry (drained=1).
# A shallow clone lacks those commits: it is deepened first.
SKEW_BASE       ?= 7e6a942
SKEW_PRE_TENURE ?= 0611335
skew-test: need-test $(ETCD) vipd
	@for c in $(SKEW_BASE) $(SKEW_PRE_TENURE); do \
		git rev-parse --verify --quiet "$$c^{commit}" >/dev/null && continue; \
		if [ "$$(git rev-parse --is-shallow-repository)" = true ]; then \
			echo "skew-test: $$c is not in this shallow clone: git fetch --unshallow"; \
			git fetch --quiet --unshallow || { echo "skew-test: git fetch --unshallow failed: the skew test needs the history back to $$c"; exit 1; }; \
		fi; \
		git rev-parse --verify --quiet "$$c^{commit}" >/dev/null || { echo "skew-test: commit $$c is not in this clone's history"; exit 1; }; \
	done
	VIPD=$(CURDIR)/vipd VIPD_ETCD=$(CURDIR)/$(ETCD) VIPD_SKEW_BASE=$(SKEW_BASE) VIPD_SKEW_PRE_TENURE=$(SKEW_PRE_TENURE) \
		$(GO) test -count=1 -v -timeout 15m ./test/skew

# The soak (issue 9, test/soak): the 3-node lab under a random fault
# schedule for SOAK (a Go duration), with the invariants checked
# throughout; it prints tables and fails on any violation. VIPD_SOAK_SEED=<n> replays a schedule,
# VIPD_SOAK_MD=<file> appends the tables there. The test bounds itself
# (SOAK plus 10 minutes), so go test's own timeout is off.
SOAK ?= 30m
soak: need-soak $(ETCD)
	VIPD_SOAK=$(SOAK) VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -run '^TestSoak$$' -count=1 -timeout 0 -v ./test/soak

# The boot proof (issue 12): three VMs under qemu-system-x86_64 (TCG) boot
# Debian's cloud kernel with an initramfs of busybox init (docs/busybox)
# and this vipd, configured by the kernel command line or a config
# partition only. A separate module (test/boot); root.
boot-test: need-boot-test vipd $(VIPD_ARM64) $(ETCD)
	cd test/boot && $(GO) vet ./... && VIPD=$(CURDIR)/vipd VIPD_ARM64=$(CURDIR)/$(VIPD_ARM64) \
		VIPD_ARM64_ROOT=$(CURDIR)/$(ARM64_ROOT) VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -count=1 -v -timeout 15m .

# Fuzz each parser and decoder for FUZZTIME (default 30s each); new
# crashers land in testdata/fuzz and stay there as regression inputs.
FUZZTIME ?= 30s
FUZZ := FuzzSplitCmdline FuzzEntry FuzzParseConfig FuzzProbeFilesystem \
	FuzzEthernetFrame FuzzARPPacket FuzzIPv6Header FuzzNDPMessage \
	FuzzAddrMessage FuzzLinkMessage FuzzDecodeEvent FuzzARPClaimant FuzzNDPClaimant
fuzz:
	for f in $(FUZZ); do $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) . || exit 1; done

# The demo is the test lab with a live view (test/demo), run from a
# compiled test binary so that Ctrl-C reaches it directly and it cleans up.
demo: need-demo $(ETCD)
	$(GO) test -c -o bin/vipd.test ./test/demo
	VIPD_DEMO=1 VIPD_ETCD=$(CURDIR)/$(ETCD) ./bin/vipd.test -test.run '^TestDemo$$' -test.count=1

clean:
	rm -f vipd
	rm -rf dist
	rm -rf bin test/etcd/bin
