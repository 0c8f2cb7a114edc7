# vipd — build, test, benchmark, demo. Root is needed for test, bench and
# demo: they create network namespaces (never touching the host's interfaces).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
ETCD    := test/etcd/bin/etcd
SRC     := $(wildcard *.go) go.mod go.sum

.PHONY: build etcd test lint bench demo fuzz clean

build: vipd

vipd: $(SRC)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ .

# The pinned etcd server for tests and the demo, built once and cached.
etcd: $(ETCD)

$(ETCD): test/etcd/main.go test/etcd/go.mod test/etcd/go.sum
	cd test/etcd && CGO_ENABLED=0 $(GO) build -trimpath -o bin/etcd .

test: $(ETCD) lint
	VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -count=1 -timeout 20m ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || ls *.go)); \
	if [ -n "$$out" ]; then echo "gofmt: not formatted: $$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks print tables; they measure, they do not assert times.
bench: $(ETCD) vipd
	VIPD_ETCD=$(CURDIR)/$(ETCD) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m .

# Fuzz each parser for FUZZTIME (default 30s); new crashers land in testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzSplitCmdline$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzProbeFilesystem$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzEthernetFrame$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzARPPacket$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzIPv6Header$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzNDPMessage$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzAddrMessage$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzLinkMessage$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzARPClaimant$$' -fuzztime $(FUZZTIME) .
	$(GO) test -run '^$$' -fuzz '^FuzzNDPClaimant$$' -fuzztime $(FUZZTIME) .

# The demo is the test lab with a live view (demo_test.go), run from a
# compiled test binary so that Ctrl-C reaches it directly and it cleans up.
demo: $(ETCD)
	$(GO) test -c -o bin/vipd.test .
	VIPD_DEMO=1 VIPD_ETCD=$(CURDIR)/$(ETCD) ./bin/vipd.test -test.run '^TestDemo$$' -test.count=1

clean:
	rm -f vipd
	rm -rf bin test/etcd/bin
