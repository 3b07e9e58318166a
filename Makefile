# k2mc build. `make` builds build/k2mc and the tools; `make test` builds the
# ASan and TSan variants too and runs the unit and integration suites.
# Missing Debian packages are installed on first use (see `deps`).
#
# Sections, in order: flags and the three build variants, librdkafka, the
# version, deps, k2mc, tools, tests, fuzz, demo and bench, kafka (a real
# broker), install and package, lint, clean. A module is any .c file under
# src/ or a sub-folder of its subsystems (src/*/*.c, src/*/*/*.c) but main's:
# a new one is compiled into every variant of k2mc and every suite with no
# edit here. How the suites are built and run: docs/tests.md.
.DEFAULT_GOAL := all

# ---- flags and the three build variants ---------------------------------------
CC       ?= cc
CFLAGS   ?= -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
               -Wmissing-prototypes -Wformat=2 -Werror -Isrc -pthread
# Every object exists in three variants, each in a tree of its own:
# build/obj (plain: CFLAGS, which the package build fills with Debian's
# hardening flags, link flags included), build/asan (ASan+UBSan) and
# build/tsan (TSan). <variant>_CFLAGS compile, <variant>_LDFLAGS link k2mc.
obj_CFLAGS   = $(CFLAGS)
asan_CFLAGS  = -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
tsan_CFLAGS  = -O1 -fsanitize=thread
obj_LDFLAGS  = $(CFLAGS_BASE) $(CFLAGS)
asan_LDFLAGS = -fsanitize=address,undefined
tsan_LDFLAGS = -fsanitize=thread
# $(call objs,VARIANT,SOURCES): the objects of SOURCES in that variant
objs = $(patsubst %.c,build/$(1)/%.o,$(2))
# Prerequisites may name $$* (the tools' and the suites' rules look up what
# they link by their stem). Nothing built is deleted as an intermediate file
# (the suites' helper objects are reached through pattern rules alone).
.SECONDEXPANSION:
.SECONDARY:

# ---- librdkafka ---------------------------------------------------------------
# By default the version pinned in contrib/librdkafka.pin, built from
# Debian's own source package into build/rdkafka by contrib/librdkafka.sh and
# linked statically (as kcat ships it); its tarball is cached in
# build/rdkafka-src. The libraries it needs are bookworm's (their -dev
# packages join DEB_PKGS). `make RDKAFKA=system` builds against the system's
# librdkafka-dev instead (2.0.2 on bookworm: no SASL/SCRAM on Kafka 4, no
# KIP-848; k2mc warns at start).
RDKAFKA ?= vendored
ifeq ($(RDKAFKA),system)
RDK_LIBS  := -lrdkafka
RDK_PKGS  := librdkafka-dev
RDK_STAMP :=
else ifeq ($(RDKAFKA),vendored)
RDK_DIR   := build/rdkafka
RDK_PIN   ?= contrib/librdkafka.pin
RDK_STAMP := $(RDK_DIR)/.built
RDK_LIBS  := $(RDK_DIR)/lib/librdkafka.a -lsasl2 -lzstd -llz4 -lcurl -lssl -lcrypto -lz -lm -ldl -lrt
RDK_PKGS  := libsasl2-dev libzstd-dev liblz4-dev zlib1g-dev libcurl4-openssl-dev pkg-config
# -isystem: its header draws warnings (a const return type) that -Werror
# would make ours
CFLAGS_BASE += -isystem $(RDK_DIR)/include
else
$(error RDKAFKA=$(RDKAFKA): expected vendored (the default) or system)
endif
# What k2mc and the tools link (libhashkit: placement's hashes; libcrypto:
# TLS and Dalli's SHA-1; libsystemd: sd_notify), and the suites.
LIBS  := $(RDK_LIBS) -lmemcached -lurcu -lurcu-common -lxxhash -lmicrohttpd -lpthread \
         -lssl -lcrypto -lsystemd -lhashkit -lavro -ljansson -lcurl
TLIBS := $(RDK_LIBS) -lmemcached -lurcu -lurcu-common -lxxhash -lmicrohttpd -lpthread \
         -lcriterion -lssl -lcrypto -lsystemd -lhashkit -lavro -ljansson -lcurl

# ---- the version --------------------------------------------------------------
# VERSION holds the release (0.1.0). In a git checkout of this tree the
# commit is added the way `git describe --tags --always --dirty` would say
# it: a v<release> tag gives <release>+<commits since>.g<hash>, no tag gives
# <VERSION>+g<hash>, and uncommitted changes add .dirty; spelled so that it is
# also a valid Debian version. Outside a checkout (a tarball, the copy `make
# deb` builds from): the VERSION file. `git describe --dirty` itself is not
# run: it refreshes and rewrites .git/index, racing other git commands in the
# same tree. safe.directory: root building in a user's clone (or the other
# way round) must not trip git's ownership check and fall back to VERSION.
GIT := git -c safe.directory='$(CURDIR)'
VERSION := $(shell v=$$(cat VERSION 2>/dev/null || echo 0.0.0); \
  if [ "$$($(GIT) rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
    d=$$($(GIT) describe --tags --match 'v[0-9]*' HEAD 2>/dev/null | \
         sed 's/^v//; s/-\([0-9]*\)-g/+\1.g/'); \
    [ -n "$$d" ] || d="$$v+g$$($(GIT) rev-parse --short HEAD)"; \
    $(GIT) update-index -q --refresh >/dev/null 2>&1; \
    $(GIT) diff-index --quiet HEAD -- 2>/dev/null || d="$$d.dirty"; v=$$d; \
  fi; echo "$$v")
CFLAGS_BASE += -DK2MC_VERSION='"$(VERSION)"'
# Objects that print the version are rebuilt when it changes: build/.version
# is rewritten only then.
VERSION_STAMP := build/.version
VERSION_USERS := $(shell grep -l K2MC_VERSION src/*/*.c src/*/*/*.c bench/*.c 2>/dev/null)
$(foreach v,obj asan tsan,$(call objs,$(v),$(VERSION_USERS))): $(VERSION_STAMP)
$(VERSION_STAMP): k2mc-version-check
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = '$(VERSION)' ] || echo '$(VERSION)' > $@
.PHONY: k2mc-version-check version
k2mc-version-check: ;
version:
	@echo '$(VERSION)'

# ---- deps: the Debian packages ------------------------------------------------
# DEB_PKGS: the one list of what k2mc builds and `make test` runs with, shown
# in README ("The two commands"; tests/package_check.sh checks it, through
# `make deps-list`) and in debian/control's Build-Depends: the libraries k2mc
# links, with their headers; Criterion, memcached, openssl (the TLS tests'
# certificates) and nutcracker (the proxy test). build-essential, git and
# python3 are taken as given. The allocator's -dev package joins it (see k2mc).
# libavro-dev and libjansson-dev: the Avro decoder (src/workers/avro.c parses
# schemas with libavro and reads their attributes with jansson, libavro's own
# JSON library); its registry client links libcurl, which the vendored
# librdkafka's packages bring already.
DEB_PKGS := $(RDK_PKGS) libmemcached-dev liburcu-dev libxxhash-dev libmicrohttpd-dev \
            libssl-dev libsystemd-dev libcriterion-dev memcached openssl nutcracker \
            libavro-dev libjansson-dev \
            $(if $(filter libcurl4-openssl-dev,$(RDK_PKGS)),,libcurl4-openssl-dev)
# Packages only some targets need, each installed by a stamp of its own
# (build/.deps-NAME) on first use: the checks of make test (Prometheus'
# parser, gnuplot for dashboard-png), the JSON bench's competitors, the
# readers of make interop, the bench's Python baseline, the package tools
# (debhelper, lintian, systemd for systemd-analyze), the linters.
PKGS_checks    := python3-prometheus-client gnuplot-nox
PKGS_jsonbench := libjansson-dev libjson-c-dev
PKGS_interop   := python3-pylibmc php-cli php-memcached python3-pymemcache ruby ruby-dalli \
                  golang-go golang-github-bradfitz-gomemcache-dev libspymemcached-java \
                  default-jdk-headless
PKGS_lint      := clang-format cppcheck
BENCH_PKGS     := python3-confluent-kafka python3-pymemcache python3-venv gnuplot-nox
PKG_TOOLS      := debhelper dpkg-dev lintian systemd

# $(call apt,PACKAGES): contrib/apt-deps.sh installs those missing, as root
# or through sudo for a user who has it (otherwise it prints the one apt-get
# line to run and make stops); only apt-get runs as root, build/ stays the
# user's, and no service starts during the install. flock, on the script
# itself: a -j build may reach two package lists at once, and apt-get takes
# one at a time.
# K2MC_DEPS=none skips it (the package build: dpkg-buildpackage has checked
# Build-Depends).
apt = { [ "$(K2MC_DEPS)" = none ] || flock contrib/apt-deps.sh contrib/apt-deps.sh $(1); }

# Every rule that compiles depends on DEPS_STAMP, and every other package
# stamp on DEPS_APT, so that a newcomer's first `make -j2` installs DEB_PKGS
# first and alone. Nothing make resolves itself (a -lNAME prerequisite, a
# vpath) may name a package's file: make looks for it before the install.
.PHONY: deps deps-list rdkafka-mode pkg-deps
DEPS_APT   := build/.deps-apt
DEPS_STAMP := build/.deps
deps: $(DEPS_STAMP)
$(DEPS_APT): Makefile
	@mkdir -p build
	@$(call apt,$(DEB_PKGS))
	@touch $@
$(DEPS_STAMP): $(DEPS_APT) $(RDK_STAMP) Makefile
	@touch $@
ifneq ($(RDK_STAMP),)
$(RDK_STAMP): $(RDK_PIN) contrib/librdkafka.sh $(DEPS_APT)
	contrib/librdkafka.sh $(RDK_DIR) build/rdkafka-src $(RDK_PIN)
	@touch $@
endif
build/.deps-%: $(DEPS_APT) Makefile
	@mkdir -p build
	@$(call apt,$(PKGS_$*))
	@touch $@
# the package list, for tests/package_check.sh (README must show it)
deps-list:
	@echo $(DEB_PKGS)
rdkafka-mode:
	@echo $(RDKAFKA)
pkg-deps: deps
	@$(call apt,$(PKG_TOOLS))

# ---- k2mc ---------------------------------------------------------------------
# The modules: every .c under src/ but main's.
MAIN_SRC  := src/core/k2mc.c
K2MC_SRCS := $(filter-out $(MAIN_SRC),$(sort $(wildcard src/*/*.c src/*/*/*.c)))

.PHONY: all
all: build/k2mc build/k2mc-mock build/k2mc-verify

build/obj/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(obj_CFLAGS) -MMD -MP -c $< -o $@
build/asan/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(asan_CFLAGS) -MMD -MP -c $< -o $@
build/tsan/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(tsan_CFLAGS) -MMD -MP -c $< -o $@

# The allocator: build/k2mc links K2MC_ALLOC, jemalloc by default, ahead of
# LIBS and libc, so that its malloc and free are the ones librdkafka's calls
# resolve to (librdkafka's fetch thread allocates one op per message and
# k2mc's writers free them: nearly every free crosses threads; figures in
# docs/tuning.md and perf/FINDINGS.md). `make K2MC_ALLOC=mimalloc` or
# `K2MC_ALLOC=glibc` for the others. Only build/k2mc: the ASan and TSan
# builds keep the sanitizers' own allocators, the tests and tools glibc's;
# build/k2mc-glibc is the same objects with glibc's malloc, for the bench's
# comparison. -lNAME is on the link line, not a prerequisite (see deps).
K2MC_ALLOC ?= jemalloc
ALLOC_PKG_mimalloc := libmimalloc-dev
ALLOC_PKG_jemalloc := libjemalloc-dev
ifneq ($(ALLOC_PKG_$(K2MC_ALLOC)),)
DEB_PKGS  += $(ALLOC_PKG_$(K2MC_ALLOC))
ALLOC_LIB := -l$(K2MC_ALLOC)
else ifneq ($(K2MC_ALLOC),glibc)
$(error K2MC_ALLOC=$(K2MC_ALLOC): expected mimalloc, jemalloc or glibc)
endif

build/k2mc: $(call objs,obj,$(K2MC_SRCS) $(MAIN_SRC))
	$(CC) $(obj_LDFLAGS) $^ $(ALLOC_LIB) -o $@ $(LIBS)
	@echo "build/k2mc: linked with librdkafka $$($@ -V | sed -n 's/.*librdkafka \([^ ,;)]*\).*/\1/p' | head -1)"
build/k2mc-glibc: $(call objs,obj,$(K2MC_SRCS) $(MAIN_SRC))
	$(CC) $(obj_LDFLAGS) $^ -o $@ $(LIBS)
build/asan/k2mc: $(call objs,asan,$(K2MC_SRCS) $(MAIN_SRC))
	$(CC) $(asan_LDFLAGS) $^ -o $@ $(LIBS)
build/tsan/k2mc: $(call objs,tsan,$(K2MC_SRCS) $(MAIN_SRC))
	$(CC) $(tsan_LDFLAGS) $^ -o $@ $(LIBS)

# ---- tools --------------------------------------------------------------------
# bench/NAME.c makes build/NAME (with - for _): the mock cluster in its own
# process (k2mc-mock), the cache checker (k2mc-verify), the bench's ceilings
# (the same records straight into Memcached through k2mc's connection code;
# a plain librdkafka consumer) and the cost of placing one key. Each links
# the modules it calls from build/obj/libk2mc.a: the linker takes those and
# what they call, so a module split in two needs no edit here.
TOOLS := build/k2mc-mock build/k2mc-verify build/mc-ceiling build/kafka-ceiling \
         build/placement-bench build/avro-bench
build/obj/libk2mc.a: $(call objs,obj,$(K2MC_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^
$(TOOLS): build/%: build/obj/bench/$$(subst -,_,$$*).o build/obj/libk2mc.a
	$(CC) $^ -o $@ $(LIBS)
# The JSON extractor against jansson and json-c, and the templates' cost per
# record: those libraries are the bench's, k2mc does not link them.
JSONBENCH_OBJS := $(call objs,obj,bench/json_bench.c bench/json_bench_libs.c bench/json_bench_jsonc.c)
$(JSONBENCH_OBJS): build/.deps-jsonbench
build/json-bench: $(JSONBENCH_OBJS) build/obj/libk2mc.a
	$(CC) $^ -o $@ -ljansson -ljson-c $(LIBS)

# ---- tests --------------------------------------------------------------------
# One Criterion suite per module (tests/test_<module>.c). Unit suites run
# plain, under ASan+UBSan and under TSan; integration suites start real
# servers (tests/harness.c) and run the sanitizer builds of k2mc in their
# sanitizer-tagged tests; the real-Kafka suites run in `make test-kafka`
# (kafka section). What each suite covers: docs/tests.md.
UNIT_SUITES  := ring watermark config cfgfile mcconn takeover fence budget transport notify \
                placement log mapping avro
INTEG_SUITES := pipeline metrics policies faults fencing memory deploy logs mapping_e2e refill \
                coalesce retention
KAFKA_SUITES := kafka_real kafka_group
UNIT_BINS  := $(UNIT_SUITES:%=build/tests/test_%)
ASAN_BINS  := $(UNIT_SUITES:%=build/tests/asan/test_%)
TSAN_BINS  := $(UNIT_SUITES:%=build/tests/tsan/test_%)
INTEG_BINS := $(INTEG_SUITES:%=build/tests/test_%)
UNLISTED   := $(filter-out $(UNIT_SUITES) $(INTEG_SUITES) $(KAFKA_SUITES), \
                $(patsubst tests/test_%.c,%,$(wildcard tests/test_*.c)))
$(if $(UNLISTED),$(warning suites in no list above, so never run: $(UNLISTED)))
.PHONY: asan tsan
asan: build/asan/k2mc $(ASAN_BINS)
tsan: build/tsan/k2mc $(TSAN_BINS)

# A suite is its file and the harness, compiled with its variant's flags,
# linked with every module's object in that variant; test_<name>_LINKS, where
# set, replaces "every module" (sources; their objects are linked): the fake
# memcached (tests/fake_mc.c), memcached on a unix socket and with TLS
# (tests/servers.c), the real broker (tests/kafka_real.c), the cache watcher
# (tests/mc_reader.c), a path that can be slowed, held or cut (the TCP relay,
# tests/relay.c). test_notify plays systemd's part: the module and the logger
# alone.
test_mcconn_LINKS      = $(K2MC_SRCS) tests/fake_mc.c
test_transport_LINKS   = $(K2MC_SRCS) tests/fake_mc.c tests/servers.c
test_deploy_LINKS      = $(K2MC_SRCS) tests/fake_mc.c tests/servers.c
test_refill_LINKS      = $(K2MC_SRCS) tests/fake_mc.c tests/servers.c
test_avro_LINKS        = $(K2MC_SRCS) tests/fake_mc.c tests/servers.c
test_mapping_e2e_LINKS = $(K2MC_SRCS) tests/fake_mc.c tests/servers.c
test_notify_LINKS      = src/core/notify.c src/core/log.c
test_fencing_LINKS     = $(K2MC_SRCS) tests/relay.c
test_kafka_group_LINKS = tests/mc_reader.c tests/relay.c
# $(call links,VARIANT,SUITE)
links = $(call objs,$(1),$(or $(test_$(2)_LINKS),$(K2MC_SRCS)))
# Every suite's harness: processes and files (harness.c), the test world in
# one call (world.c: Kafka mock or real, memcached, k2mc, the checks) and the
# real broker (kafka_real.c).
TEST_SRCS    := tests/harness.c tests/world.c tests/kafka_real.c
TEST_HEADERS := $(wildcard tests/*.h)

build/tests/test_%: tests/test_%.c $(TEST_SRCS) $(TEST_HEADERS) $$(call links,obj,$$*)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(obj_CFLAGS) $(filter-out %.h,$^) -o $@ $(TLIBS)
build/tests/asan/test_%: tests/test_%.c $(TEST_SRCS) $(TEST_HEADERS) $$(call links,asan,$$*)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(asan_CFLAGS) $(filter-out %.h,$^) -o $@ $(TLIBS)
build/tests/tsan/test_%: tests/test_%.c $(TEST_SRCS) $(TEST_HEADERS) $$(call links,tsan,$$*)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(tsan_CFLAGS) $(filter-out %.h,$^) -o $@ $(TLIBS)

# Preloaded, not linked: tests/tsan_c11_shim.c makes librdkafka's C11
# threads visible to TSan (K2MC_TSAN_PRELOAD); tests/redirect_shim.c
# redirects connect() so that test_fencing's members reach Kafka through the
# test's relay (K2MC_REDIRECT_SHIM overrides its path).
TSAN_SHIM     := build/tests/libtsan_c11_shim.so
REDIRECT_SHIM := build/tests/libredirect_shim.so
$(TSAN_SHIM): tests/tsan_c11_shim.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -shared $< -o $@ -pthread
$(REDIRECT_SHIM): tests/redirect_shim.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -shared $< -o $@ -ldl
build/tests/test_fencing: | $(REDIRECT_SHIM)

# Arrows point down: no file of src/ includes a file of a higher layer (the
# layer table of docs/architecture.md; tests/include_check.py).
.PHONY: test unit integration doc-check include-check
include-check:
	@python3 tests/include_check.py

test: deps include-check unit integration doc-check

# Criterion forks a process per test; -j2 matches this machine's two cores.
CRITERION_OPTS ?= --jobs 2

# Every suite runs, whatever failed before it; the last line counts them
# and names the ones that failed (the target fails if any did). test_config
# runs build/k2mc (with and without --check-config, expecting the same stop).
# The python checks of test_metrics and test_log(s) run /usr/bin/python3,
# where apt puts Prometheus' parser (build/.deps-checks).
unit: $(UNIT_BINS) $(ASAN_BINS) $(TSAN_BINS) build/k2mc build/.deps-checks
	@pass=0; failed=""; for t in $(UNIT_BINS) $(ASAN_BINS) $(TSAN_BINS); do echo "== $$t"; \
	  case $$t in */tsan/*) run="setarch -R";; *) run="";; esac; \
	  if TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" $$run $$t $(CRITERION_OPTS); \
	  then pass=$$((pass + 1)); else failed="$$failed $$t"; fi; done; \
	echo "unit: $$pass suites passed, $$(echo $$failed | wc -w) failed$${failed:+:$$failed}"; \
	[ -z "$$failed" ]

# Integration suites find the binaries through K2MC_BIN / K2MC_MOCK; the
# sanitizer builds of k2mc run the same suite's sanitizer-tagged tests.
integration: all build/asan/k2mc build/tsan/k2mc $(TSAN_SHIM) $(INTEG_BINS) build/.deps-checks
	@pass=0; failed=""; for t in $(INTEG_BINS); do echo "== $$t"; \
	  if K2MC_BIN=build/k2mc K2MC_ASAN_BIN=build/asan/k2mc K2MC_TSAN_BIN=build/tsan/k2mc \
	    K2MC_TSAN_PRELOAD=$(CURDIR)/$(TSAN_SHIM) K2MC_MOCK=build/k2mc-mock $$t --jobs 1; \
	  then pass=$$((pass + 1)); else failed="$$failed $$t"; fi; done; \
	echo "integration: $$pass suites passed, $$(echo $$failed | wc -w) failed$${failed:+:$$failed}"; \
	[ -z "$$failed" ]

# The man page is kept next to --help: every long option of one must be in
# the other, and every short option of --help in the man page.
doc-check: build/k2mc
	@build/k2mc --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u > build/help-long.txt
	@sed 's/\\-/-/g' k2mc.1 | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u > build/man-long.txt
	@diff build/help-long.txt build/man-long.txt >/dev/null || { echo "doc-check: long options" \
	  "differ between 'k2mc --help' (<) and k2mc.1 (>):"; diff build/help-long.txt build/man-long.txt; exit 1; }
	@for o in $$(build/k2mc --help | grep -oE -- '(^| )-[A-Za-z]\b' | sort -u); do \
	  sed 's/\\-/-/g' k2mc.1 | grep -qE -- "(^|[^a-zA-Z0-9-])$$o([^a-zA-Z0-9-]|$$)" || \
	  { echo "doc-check: $$o is in --help but not in k2mc.1"; exit 1; }; done
	@echo "doc-check: --help and k2mc.1 list the same options"

# make interop (.ci/run, after make test): every --distribution read back
# by its readers' real client libraries (tests/interop/run.py); the clients
# are installed here, and one that cannot be installed fails the target.
.PHONY: interop
interop: deps build/.deps-interop build/k2mc build/k2mc-mock
	K2MC_BIN=build/k2mc K2MC_MOCK=build/k2mc-mock /usr/bin/python3 tests/interop/run.py

# make rdkafka-fallback-test (.ci/run): a fresh clone of HEAD built with a pin
# Debian does not serve must say so, name what Debian serves, and link the
# fallback of contrib/librdkafka.pin (tests/rdkafka_fallback.sh).
.PHONY: rdkafka-fallback-test
rdkafka-fallback-test:
	tests/rdkafka_fallback.sh

# ---- fuzz ---------------------------------------------------------------------
# make fuzz: libFuzzer targets (clang, ASan + UBSan) over the command line,
# the record mapping, the reply parser and the Avro decoder, FUZZ_SECONDS
# each (default 30).
# Inputs that crash are left as build/fuzz/crash-*; each becomes a
# regression test in its module's suite. The corpus grows in
# build/fuzz/corpus, seeded from fuzz/seeds. Not the version define: the
# targets are not rebuilt when it changes.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS  := $(filter-out -Werror -DK2MC_VERSION=%,$(CFLAGS_BASE)) -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_STAMP   := build/.fuzz-deps
.PHONY: fuzz
$(FUZZ_STAMP): $(DEPS_STAMP)
	@command -v $(FUZZ_CC) >/dev/null || $(call apt,clang)
	@touch $@
# A target is fuzz/fuzz_NAME.c and makes build/fuzz/fuzz_NAME. As the tools
# do from build/obj/libk2mc.a, it links the modules it calls from
# build/fuzz/libk2mc.a, every module compiled with FUZZ_CFLAGS (instrumented
# for coverage and the sanitizers): a new target, or a module split in two,
# needs no edit here. fuzz_NAME_LDFLAGS adds to one target's link:
# fuzz_config wraps fopen (--config files are never opened).
FUZZ_BINS := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))
fuzz_config_LDFLAGS := -Wl,--wrap=fopen
build/fuzz/obj/%.o: %.c $(FUZZ_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
build/fuzz/libk2mc.a: $(call objs,fuzz/obj,$(K2MC_SRCS))
	@rm -f $@
	$(AR) rcs $@ $^
build/fuzz/fuzz_%: build/fuzz/obj/fuzz/fuzz_%.o build/fuzz/libk2mc.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(fuzz_$*_LDFLAGS) $^ -o $@ $(LIBS)
fuzz: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_BINS); do n=$$(basename $$t); mkdir -p build/fuzz/corpus/$$n; \
	  echo "== $$n for $(FUZZ_SECONDS) s"; \
	  if $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	      build/fuzz/corpus/$$n fuzz/seeds/$$n > build/fuzz/$$n.log 2>&1; then \
	    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE' build/fuzz/$$n.log; \
	  else grep -E -A12 '^==[0-9]+==(ERROR|WARNING)|runtime error|deadly signal' build/fuzz/$$n.log | head -40; \
	    grep -E 'Test unit written to' build/fuzz/$$n.log; \
	    echo "$$n: failed (log build/fuzz/$$n.log); make it a regression test"; exit 1; fi; done

# ---- demo and bench -----------------------------------------------------------
# KAFKA=real: `make demo`, `make bench` and `make bench-quick` on a real
# Apache Kafka broker (tests/kafka/kafka-broker, from the jars of `make
# kafka`, KAFKA_VERSION) instead of librdkafka's mock cluster, the default.
# The bench's results then go to build/bench/real-quick or real-full.
KAFKA ?= mock
ifeq ($(KAFKA),real)
KAFKA_PREREQ := kafka
else ifneq ($(KAFKA),mock)
$(error KAFKA=$(KAFKA): expected mock (the default) or real)
endif

.PHONY: demo bench bench-quick bench-deps dashboard-png
demo: deps all $(KAFKA_PREREQ)
	K2MC_KAFKA=$(KAFKA) K2MC_KAFKA_VERSION=$(KAFKA_VERSION) bench/demo.sh

# Benchmarks print ratios against ceilings measured in the same run and never
# fail on a number. bench-quick is the short version (under 2 minutes; about
# 3 with KAFKA=real). Results go to build/bench/ (a newcomer's run leaves the
# tree clean); BENCH_OUT=bench/results records a run in the tree (with
# KAFKA=real, bench/results/real-quick or real-full).
BENCH_BINS := build/mc-ceiling build/kafka-ceiling build/placement-bench build/json-bench \
              build/k2mc-glibc build/k2mc-verify build/avro-bench
bench-deps: deps
	@$(call apt,$(BENCH_PKGS))
bench: bench-deps all $(BENCH_BINS) $(KAFKA_PREREQ)
	/usr/bin/python3 bench/bench.py --mode full --kafka $(KAFKA) --kafka-version $(KAFKA_VERSION) \
	  $(if $(BENCH_OUT),--out $(BENCH_OUT))
bench-quick: bench-deps all $(BENCH_BINS) $(KAFKA_PREREQ)
	/usr/bin/python3 bench/bench.py --mode quick --kafka $(KAFKA) --kafka-version $(KAFKA_VERSION) \
	  $(if $(BENCH_OUT),--out $(BENCH_OUT))

# docs/dashboard.png, drawn by contrib/grafana/plot.sh with gnuplot from a
# real run's --stats-json
dashboard-png: all build/.deps-checks
	contrib/grafana/plot.sh docs/dashboard.png

# ---- kafka: a real Apache Kafka broker ---------------------------------------
# `make kafka`: the broker's jars (the kafka_2.13 artifact and its runtime
# dependencies, named by tests/kafka/pom.xml) from Maven Central into
# build/kafka/VERSION, for KAFKA_VERSION (the 4.x line) and
# KAFKA_OLD_VERSION (3.9.x). Maven resolves a relative -DoutputDirectory
# against the pom's folder, hence CURDIR; later runs read ~/.m2. java and mvn
# are installed only where missing; kcat is the launcher's readiness probe.
# Nothing is downloaded any other way. tests/kafka/kafka-broker starts a
# KRaft broker from those jars. `make test` needs none of this.
KAFKA_VERSION     ?= 4.1.1
KAFKA_OLD_VERSION ?= 3.9.1
KAFKA_VERSIONS    := $(KAFKA_VERSION) $(KAFKA_OLD_VERSION)
KAFKA_DEPS_STAMP  := build/.deps-kafka
.PHONY: kafka test-kafka
$(KAFKA_DEPS_STAMP): $(DEPS_APT) Makefile
	@mkdir -p build
	@if [ "$(K2MC_DEPS)" != none ]; then \
	  command -v java >/dev/null || $(call apt,openjdk-17-jre-headless) || exit 1; \
	  command -v mvn >/dev/null || $(call apt,maven) || exit 1; \
	  $(call apt,kcat openssl) || exit 1; fi
	@touch $@
# kafka.line (the major version) picks the logging jars in the pom
# the tools are order-only: a new Makefile re-checks them, not the jars
build/kafka/%/.stamp: tests/kafka/pom.xml | $(KAFKA_DEPS_STAMP)
	@rm -rf build/kafka/$* && mkdir -p build/kafka/$*
	@echo "mvn: org.apache.kafka:kafka_2.13:$* -> build/kafka/$*"
	nice mvn -q -B -Dstyle.color=never -f tests/kafka/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(CURDIR)/build/kafka/$* -DincludeScope=runtime \
	  -Dkafka.version=$* -Dkafka.line=$(firstword $(subst ., ,$*))
	@touch $@
kafka: $(KAFKA_VERSIONS:%=build/kafka/%/.stamp)
# `make cdc`: the servers of the end-to-end CDC test (issue 26) in build/cdc/,
# started by tests/cdc/cdc-world (docs/tests.md). connect/: Kafka Connect's
# standalone worker at KAFKA_VERSION (lib/), Debezium's PostgreSQL connector
# and Apicurio's Avro converter (plugins/), one profile of
# tests/cdc/pom-connect.xml each; the plugins without the worker's own
# org.apache.kafka and org.slf4j jars. registry/: Apicurio Registry
# re-augmented into target/quarkus-app/quarkus-run.jar from a copy of
# tests/cdc/registry/, whose application.properties is the app's own (from its
# jar) followed by ours. PostgreSQL and a JDK (javac, for the registry's one
# class) come from Debian, where missing.
APICURIO_VERSION := 2.4.2.Final
CDC_DEPS_STAMP   := build/.deps-cdc
CDC_PLUGINS      := worker:lib debezium:plugins/debezium-postgres \
                    converter:plugins/apicurio-converter
.PHONY: cdc cdc-smoke
$(CDC_DEPS_STAMP): $(KAFKA_DEPS_STAMP) Makefile
	@if [ "$(K2MC_DEPS)" != none ]; then \
	  command -v javac >/dev/null || $(call apt,openjdk-17-jdk-headless) || exit 1; \
	  $(call apt,postgresql) || exit 1; fi
	@touch $@
build/cdc/connect/.stamp: tests/cdc/pom-connect.xml $(CDC_DEPS_STAMP)
	@rm -rf build/cdc/connect && mkdir -p build/cdc/connect
	@set -e; for p in $(CDC_PLUGINS); do ex=; [ $${p%%:*} = worker ] || \
	  ex=-DexcludeGroupIds=org.apache.kafka,org.slf4j; \
	  echo "mvn: $${p%%:*} -> build/cdc/connect/$${p#*:}"; \
	  nice mvn -q -B -Dstyle.color=never -f tests/cdc/pom-connect.xml -P$${p%%:*} \
	    dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/build/cdc/connect/$${p#*:} \
	    -DincludeScope=runtime -Dkafka.version=$(KAFKA_VERSION) \
	    -Dapicurio.version=$(APICURIO_VERSION) $$ex; done
	@touch $@
build/cdc/registry/.stamp: tests/cdc/registry/pom.xml tests/cdc/registry/application-k2mc.properties \
		$(shell find tests/cdc/registry/src -name '*.java') $(CDC_DEPS_STAMP)
	@rm -rf build/cdc/registry && mkdir -p build/cdc/registry/src/main/resources
	cp -r tests/cdc/registry/pom.xml tests/cdc/registry/src build/cdc/registry/
	nice mvn -q -B -Dstyle.color=never -f build/cdc/registry/pom.xml dependency:unpack \
	  -Dartifact=io.apicurio:apicurio-registry-app:$(APICURIO_VERSION) \
	  -Dmdep.unpack.includes=application.properties -DoutputDirectory=$(CURDIR)/build/cdc/registry/app
	cat build/cdc/registry/app/application.properties tests/cdc/registry/application-k2mc.properties \
	  > build/cdc/registry/src/main/resources/application.properties
	nice mvn -q -B -Dstyle.color=never -f build/cdc/registry/pom.xml package \
	  -Dapicurio.version=$(APICURIO_VERSION)
	@touch $@
cdc: build/kafka/$(KAFKA_VERSION)/.stamp build/cdc/connect/.stamp build/cdc/registry/.stamp
# the servers end to end, each format once (tests/cdc/smoke.py)
cdc-smoke: cdc
	/usr/bin/python3 tests/cdc/smoke.py
# Every suite runs on every version even when one fails; the failures are
# listed at the end and make fails. Criterion runs one test at a time: a
# broker is a JVM on two cores. Per suite: passes, skips and failures apart.
# make test-kafka-world: the integration suites that have a meaning on a real
# broker (tests/world.h: one broker per suite process), on $(KAFKA_VERSION); a
# test that needs the mock cluster is skipped there with its reason. In .ci/run.
KAFKA_WORLD_SUITES := pipeline faults fencing coalesce mapping_e2e refill policies metrics retention
kafka_run = failed=""; for v in $(1); do t0=$$(date +%s); \
	  for s in $(2); do echo "== $$s on Kafka $$v"; t1=$$(date +%s); \
	    log=build/$$s-kafka-$$v.log; \
	    K2MC_KAFKA=real K2MC_KAFKA_VERSION=$$v K2MC_BIN=build/k2mc K2MC_MOCK=build/k2mc-mock \
	      build/tests/$$s --jobs 1 --verbose=1 > $$log 2>&1 || failed="$$failed $$s@$$v"; \
	    cat $$log; \
	    echo "== $$s on Kafka $$v: $$(grep -c '\[PASS\]' $$log) passed," \
	      "$$(grep -c '\[SKIP\]' $$log) skipped, $$(grep -c '\[FAIL\]' $$log) failed," \
	      "$$(( $$(date +%s) - t1 )) s"; done; \
	  echo "== Kafka $$v: $$(( $$(date +%s) - t0 )) s"; done; \
	if [ -n "$$failed" ]; then echo "== $@ failed:$$failed"; exit 1; fi
.PHONY: test-kafka test-kafka-world
# then the end-to-end CDC test (tests/cdc/e2e.py, issue 26) on $(KAFKA_VERSION):
# PostgreSQL -> Debezium -> the broker -> k2mc -> memcached, every format
test-kafka: kafka cdc build/k2mc build/k2mc-mock $(KAFKA_SUITES:%=build/tests/test_%)
	@rc=0; ( $(call kafka_run,$(KAFKA_VERSIONS),$(KAFKA_SUITES:%=test_%)) ) || rc=1; \
	echo "== cdc end to end on Kafka $(KAFKA_VERSION) (tests/cdc/e2e.py)"; \
	/usr/bin/python3 tests/cdc/e2e.py --kafka-version $(KAFKA_VERSION) --k2mc build/k2mc || \
	  { rc=1; echo "== $@ failed: tests/cdc/e2e.py"; }; exit $$rc
test-kafka-world: kafka build/k2mc build/k2mc-mock $(KAFKA_WORLD_SUITES:%=build/tests/test_%)
	@$(call kafka_run,$(KAFKA_VERSION),$(KAFKA_WORLD_SUITES:%=test_%))

# ---- install and package ------------------------------------------------------
# make install: PREFIX (default /usr/local) and DESTDIR as usual. The
# configuration goes to /etc for the system prefixes /usr and /usr/local (the
# unit reads /etc/k2mc/INSTANCE.conf wherever the binary is), under PREFIX for
# any other. Units: /lib/systemd/system for PREFIX=/usr (Debian's place),
# else PREFIX/lib/systemd/system (systemd reads /usr/local/lib/systemd/system;
# for other prefixes, `systemctl link` the unit). The installed unit names
# the installed paths. The mock cluster and the bench tools stay in build/.
# make uninstall removes exactly these files, and /etc/k2mc when it is empty
# (instance configurations stay).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(if $(filter /usr /usr/local,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
INSTALLED  := $(BINDIR)/k2mc $(MANDIR)/man1/k2mc.1 $(SYSCONFDIR)/k2mc/k2mc.conf.example \
              $(UNITDIR)/k2mc@.service
.PHONY: install uninstall deb package-test
install: build/k2mc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(SYSCONFDIR)/k2mc \
	  $(DESTDIR)$(UNITDIR)
	install -m 0755 build/k2mc $(DESTDIR)$(BINDIR)/k2mc
	sed '/^\.TH /s/"k2mc [^"]*"/"k2mc $(VERSION)"/' k2mc.1 > $(DESTDIR)$(MANDIR)/man1/k2mc.1
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/k2mc.1
	install -m 0644 contrib/k2mc.conf.example $(DESTDIR)$(SYSCONFDIR)/k2mc/k2mc.conf.example
	sed -e 's|/usr/bin/k2mc|$(BINDIR)/k2mc|g' -e 's|/etc/k2mc|$(SYSCONFDIR)/k2mc|g' \
	  contrib/systemd/k2mc@.service > $(DESTDIR)$(UNITDIR)/k2mc@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/k2mc@.service
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	@rmdir $(DESTDIR)$(SYSCONFDIR)/k2mc 2>/dev/null || \
	  { [ ! -d $(DESTDIR)$(SYSCONFDIR)/k2mc ] || \
	    echo "kept $(DESTDIR)$(SYSCONFDIR)/k2mc: it holds other files (configurations)"; }

# make deb: k2mc_$(VERSION)_<arch>.deb in build/, built with debhelper
# (debian/) by dpkg-buildpackage from a copy of the tree in build/deb/, so
# that nothing is written outside build/ (dpkg-buildpackage puts its results
# in the parent directory). The copy gets the version in VERSION and in
# debian/changelog. No network, no tests (override_dh_auto_test). Leaves the
# debug symbols as build/k2mc-dbgsym_*.deb, the build log in
# build/deb/build.log.
DEB_ARCH := $(shell dpkg --print-architecture 2>/dev/null)
DEB_FILE := build/k2mc_$(VERSION)_$(DEB_ARCH).deb
DEB_SRC  := build/deb/k2mc-$(VERSION)
deb: pkg-deps $(RDK_STAMP)
	@rm -rf build/deb build/k2mc_*.deb build/k2mc-dbgsym_*.deb && mkdir -p $(DEB_SRC)
	@if [ "$$($(GIT) rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
	  $(GIT) ls-files -co --exclude-standard | while IFS= read -r f; do [ ! -e "$$f" ] || \
	    printf '%s\n' "$$f"; done; \
	else find . -path ./build -prune -o -path ./.git -prune -o ! -type d -print; fi | \
	  tar -cf - -T - | tar -xf - -C $(DEB_SRC)
	@echo '$(VERSION)' > $(DEB_SRC)/VERSION
	@# the librdkafka tarball, checked against its pin again there: the
	@# package build needs no network
	@if [ -n "$(RDK_STAMP)" ]; then mkdir -p $(DEB_SRC)/build/rdkafka-src && \
	  cp build/rdkafka-src/librdkafka_*.orig.tar.gz $(DEB_SRC)/build/rdkafka-src/; fi
	@sed -i '1s/([^)]*)/($(VERSION))/' $(DEB_SRC)/debian/changelog
	@echo "dpkg-buildpackage -us -uc -b in $(DEB_SRC) (log: build/deb/build.log)"
	@cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b > ../build.log 2>&1 || \
	  { tail -40 ../build.log; echo "make deb: dpkg-buildpackage failed"; exit 1; }
	@cp build/deb/*.deb build/
	@# root building in a user's tree: what it made stays the tree owner's,
	@# so that the user's next `make deb` can remove it
	@[ "$$(id -u)" != 0 ] || [ "$$(stat -c %u .)" = 0 ] || \
	  chown -R "$$(stat -c %u:%g .)" build/deb build/k2mc_*.deb build/k2mc-dbgsym_*.deb
	@ls -1 build/*_$(VERSION)_*.deb

# make package-test (.ci/run): the .deb through lintian (errors fail), into a
# scratch root (files, Depends, k2mc --version and --help), its unit through
# systemd-analyze verify and security; then make install / uninstall into a
# DESTDIR. See tests/package_check.sh.
package-test: deb
	tests/package_check.sh $(DEB_FILE)

# ---- lint ---------------------------------------------------------------------
# Style and static checks, reported for review; not part of `make test` (a
# formatting difference is not a failure). `make lint` runs every check in
# LINT_CHECKS, each a phony target of its own: a new check is one more name
# there (or a `LINT_CHECKS +=` further down: lint expands the list last), and
# one that must hold can also be a prerequisite of test.
LINT_SRCS   := $(K2MC_SRCS) $(MAIN_SRC)
LINT_CHECKS := include-check lint-format lint-cppcheck
.PHONY: lint lint-format lint-cppcheck
lint: $$(LINT_CHECKS)
lint-format: build/.deps-lint
	-clang-format --dry-run $(LINT_SRCS) $(wildcard src/*/*.h src/*/*/*.h) 2>&1 | \
	  grep -c 'warning:' | sed 's/^/clang-format: lines to reformat: /'
lint-cppcheck: build/.deps-lint
	cppcheck --quiet --std=c11 --enable=warning,portability,performance --inline-suppr \
	  -D_GNU_SOURCE -Isrc $(LINT_SRCS)

# ---- clean --------------------------------------------------------------------
.PHONY: clean
clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
