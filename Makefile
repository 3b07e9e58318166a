# k2mc build. `make` builds build/k2mc and the tools; `make test` builds the
# ASan and TSan variants too and runs the unit and integration suites.
# Missing Debian packages are installed on first use (see `deps`).

CC       ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
               -Wmissing-prototypes -Wformat=2 -Werror -Isrc -pthread
CFLAGS   ?= -O2
# librdkafka: by default the version pinned in contrib/librdkafka.pin, built
# from Debian's own source package into build/rdkafka by
# contrib/librdkafka.sh and linked statically (as kcat ships it); its
# tarball is cached in build/rdkafka-src. The libraries it needs are
# bookworm's (their -dev packages join DEB_PKGS below). `make RDKAFKA=system`
# builds against the system's librdkafka-dev instead (2.0.2 on bookworm:
# no SASL/SCRAM on Kafka 4, no KIP-848; k2mc warns at start).
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
LIBS     := $(RDK_LIBS) -lmemcached -lurcu -lurcu-common -lxxhash -lmicrohttpd -lpthread
TLIBS    := $(LIBS) -lcriterion


# The Debian packages k2mc needs: the one list, shown in README ("The two
# commands"). The libraries k2mc links, with their headers; for `make test`
# and `make demo`: Criterion, memcached, openssl (the TLS tests' certificates)
# and nutcracker (the proxy test). build-essential, git and python3 (demo,
# bench) are taken as given. PKG_TOOLS: only for `make deb` and
# `make package-test` (debhelper, lintian, and systemd for systemd-analyze).
DEB_PKGS  := $(RDK_PKGS) libmemcached-dev liburcu-dev libxxhash-dev libmicrohttpd-dev \
             libssl-dev libsystemd-dev libcriterion-dev memcached openssl nutcracker
PKG_TOOLS := debhelper dpkg-dev lintian systemd
DEPS_STAMP := build/.deps

K2MC_SRCS := src/core/config.c src/core/stats.c src/core/watermark.c src/core/committer.c \
             src/core/group.c src/core/log.c src/core/metrics.c src/core/fence.c src/core/takeover.c \
             src/workers/consumer.c src/workers/writer.c src/workers/mcconn.c \
             src/ring/ring.c src/ring/park.c
MAIN_SRC  := src/core/k2mc.c

.PHONY: all deps test unit integration doc-check asan tsan demo bench bench-quick bench-deps lint clean
all: build/k2mc build/k2mc-mock build/k2mc-verify

# Install what a fresh Debian machine lacks; a stamp keeps later builds quiet.
# contrib/apt-deps.sh runs apt-get as root, or through sudo for a user who
# has it; otherwise it prints the one apt-get line to run and make stops.
# Only apt-get is run as root: build/ stays the user's. No service starts
# during the install (policy-rc.d). K2MC_DEPS=none skips the check (the
# package build: dpkg-buildpackage has checked Build-Depends).
# Other blocks' stamps that install packages come after DEPS_APT (see the
# issue 11 block), so this is the one install a newcomer meets.
deps: $(DEPS_STAMP)
DEPS_APT := build/.deps-apt
$(DEPS_APT): Makefile
	@mkdir -p build
	@[ "$(K2MC_DEPS)" = none ] || contrib/apt-deps.sh $(DEB_PKGS)
	@touch $@
$(DEPS_STAMP): $(DEPS_APT) $(RDK_STAMP) Makefile
	@touch $@
ifneq ($(RDK_STAMP),)
$(RDK_STAMP): $(RDK_PIN) contrib/librdkafka.sh $(DEPS_APT)
	contrib/librdkafka.sh $(RDK_DIR) build/rdkafka-src $(RDK_PIN)
	@touch $@
endif

# Three variants of every object: plain, ASan+UBSan, TSan.
build/obj/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -MMD -MP -c $< -o $@
build/asan/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -MMD -MP -c $< -o $@
build/tsan/%.o: %.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=thread -MMD -MP -c $< -o $@

# The link rules below name $$(OBJS) etc.: with secondary expansion they
# see K2MC_SRCS as the whole file leaves it, so a module added by a block
# further down is linked into k2mc and into every test binary.
.SECONDEXPANSION:
OBJS   = $(K2MC_SRCS:%.c=build/obj/%.o)
AOBJS  = $(K2MC_SRCS:%.c=build/asan/%.o)
TOBJS  = $(K2MC_SRCS:%.c=build/tsan/%.o)

build/k2mc: $$(OBJS) build/obj/$(MAIN_SRC:.c=.o)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $^ -o $@ $(LIBS)
	@echo "build/k2mc: linked with librdkafka $$($@ -V | sed -n 's/.*librdkafka \([^ ,;)]*\).*/\1/p' | head -1)"
build/asan/k2mc: $$(AOBJS) build/asan/$(MAIN_SRC:.c=.o)
	$(CC) -fsanitize=address,undefined $^ -o $@ $(LIBS)
build/tsan/k2mc: $$(TOBJS) build/tsan/$(MAIN_SRC:.c=.o)
	$(CC) -fsanitize=thread $^ -o $@ $(LIBS)

build/k2mc-mock: build/obj/bench/k2mc_mock.o
	$(CC) $^ -o $@ $(LIBS)
build/k2mc-verify: build/obj/bench/k2mc_verify.o build/obj/src/core/config.o
	$(CC) $^ -o $@ $(LIBS)

# Benchmark ceilings: the same records straight into Memcached (through the
# same connection code k2mc uses), and a plain librdkafka consumer.
BENCH_TOOLS := build/mc-ceiling build/kafka-ceiling
build/mc-ceiling: build/obj/bench/mc_ceiling.o build/obj/src/workers/mcconn.o
	$(CC) $^ -o $@ $(LIBS)
build/kafka-ceiling: build/obj/bench/kafka_ceiling.o
	$(CC) $^ -o $@ $(LIBS)

# Tests: one Criterion suite per module (tests/test_<module>.c) linked against
# the module objects; integration suites start real servers through
# tests/harness.c. Unit suites run plain, under ASan+UBSan and under TSan.
UNIT_TESTS  := ring watermark config cfgfile mcconn takeover
INTEG_TESTS := pipeline metrics
HARNESS     := tests/harness.c tests/world.c tests/kafka_real.c
UNIT_BINS   := $(UNIT_TESTS:%=build/tests/test_%)
ASAN_BINS   := $(UNIT_TESTS:%=build/tests/asan/test_%)
TSAN_BINS   := $(UNIT_TESTS:%=build/tests/tsan/test_%)
INTEG_BINS  := $(INTEG_TESTS:%=build/tests/test_%)

build/tests/test_%: tests/test_%.c $(HARNESS) $$(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $^ -o $@ $(TLIBS)
build/tests/asan/test_%: tests/test_%.c $(HARNESS) $$(AOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer $^ -o $@ $(TLIBS)
build/tests/tsan/test_%: tests/test_%.c $(HARNESS) $$(TOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=thread $^ -o $@ $(TLIBS)

# See tests/tsan_c11_shim.c: librdkafka's C11 threads, made visible to TSan.
TSAN_SHIM := build/tests/libtsan_c11_shim.so
$(TSAN_SHIM): tests/tsan_c11_shim.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -shared $< -o $@ -pthread

asan: build/asan/k2mc $(ASAN_BINS)
tsan: build/tsan/k2mc $(TSAN_BINS)

# Criterion forks a process per test; -j2 matches this machine's two cores.
CRITERION_OPTS ?= --jobs 2

# Every suite runs, whatever failed before it; the last line counts them
# and names the ones that failed (the target fails if any did).
unit: $(UNIT_BINS) $(ASAN_BINS) $(TSAN_BINS)
	@pass=0; failed=""; for t in $(UNIT_BINS) $(ASAN_BINS) $(TSAN_BINS); do echo "== $$t"; \
	  case $$t in */tsan/*) run="setarch -R";; *) run="";; esac; \
	  if TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" $$run $$t $(CRITERION_OPTS); \
	  then pass=$$((pass + 1)); else failed="$$failed $$t"; fi; done; \
	echo "unit: $$pass suites passed, $$(echo $$failed | wc -w) failed$${failed:+:$$failed}"; \
	[ -z "$$failed" ]

# Integration suites find the binaries through K2MC_BIN / K2MC_MOCK; the
# sanitizer builds of k2mc run the same suite's sanitizer-tagged tests.
integration: all build/asan/k2mc build/tsan/k2mc $(TSAN_SHIM) $(INTEG_BINS)
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

test: deps unit integration doc-check

# KAFKA=real: `make demo`, `make bench` and `make bench-quick` on a real
# Apache Kafka broker (tests/kafka/kafka-broker, from the jars of `make kafka`,
# KAFKA_VERSION below) instead of librdkafka's mock cluster, the default.
# The bench's results then go to bench/results/real-quick or real-full.
KAFKA ?= mock
ifeq ($(KAFKA),real)
KAFKA_PREREQ := kafka
else ifneq ($(KAFKA),mock)
$(error KAFKA=$(KAFKA): expected mock (the default) or real)
endif

demo: deps all $(KAFKA_PREREQ)
	K2MC_KAFKA=$(KAFKA) K2MC_KAFKA_VERSION=$(KAFKA_VERSION) bench/demo.sh

# Benchmarks print ratios against ceilings measured in the same run and never
# fail on a number. bench-quick is the short version (under 2 minutes; about
# 3 with KAFKA=real).
BENCH_PKGS := python3-confluent-kafka python3-pymemcache gnuplot-nox
bench-deps: deps
	@[ "$(K2MC_DEPS)" = none ] || contrib/apt-deps.sh $(BENCH_PKGS)
bench: bench-deps all $(BENCH_TOOLS) $(KAFKA_PREREQ)
	/usr/bin/python3 bench/bench.py --mode full --kafka $(KAFKA) --kafka-version $(KAFKA_VERSION)
bench-quick: bench-deps all $(BENCH_TOOLS) $(KAFKA_PREREQ)
	/usr/bin/python3 bench/bench.py --mode quick --kafka $(KAFKA) --kafka-version $(KAFKA_VERSION)

# Style and static checks; not part of `make test` (a formatting difference
# is not a failure), reported for review.
LINT_SRCS := $(K2MC_SRCS) $(MAIN_SRC) $(wildcard src/*/*.h)
lint:
	-clang-format --dry-run $(LINT_SRCS) 2>&1 | grep -c 'warning:' | sed 's/^/clang-format: lines to reformat: /'
	cppcheck --quiet --std=c11 --enable=warning,portability,performance --inline-suppr \
	  -D_GNU_SOURCE -Isrc $(K2MC_SRCS) $(MAIN_SRC)

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# ---- issue 4: invalid-record policies, fault tests, fuzzing -----------------
# Appended block. The variables above are expanded where rules are read, so
# a new module and new suites are added to the targets here, explicitly.
DLQ_SRC := src/workers/dlq.c
K2MC_SRCS += $(DLQ_SRC)
build/k2mc: build/obj/$(DLQ_SRC:.c=.o)
build/asan/k2mc: build/asan/$(DLQ_SRC:.c=.o)
build/tsan/k2mc: build/tsan/$(DLQ_SRC:.c=.o)

# Integration suites: --on-invalid policies, and faults (Memcached and Kafka
# outages, rebalances, kill -9 at random points; K2MC_KILL_RUNS=N for more).
ISSUE4_INTEG := policies faults
INTEG_TESTS  += $(ISSUE4_INTEG)
INTEG_BINS   += $(ISSUE4_INTEG:%=build/tests/test_%)
integration: $(ISSUE4_INTEG:%=build/tests/test_%)
# every suite links every module
$(UNIT_BINS) $(INTEG_BINS): build/obj/$(DLQ_SRC:.c=.o)
$(ASAN_BINS): build/asan/$(DLQ_SRC:.c=.o)
$(TSAN_BINS): build/tsan/$(DLQ_SRC:.c=.o)

# make fuzz: libFuzzer targets (clang, ASan + UBSan) over the command line
# (and, added by later blocks, the record mapping and the reply parser),
# FUZZ_SECONDS each (default 30). Inputs that crash are left as
# build/fuzz/crash-*; each becomes a regression test in its module's suite. The corpus grows in build/fuzz/corpus, seeded from fuzz/seeds.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS  := $(filter-out -Werror,$(CFLAGS_BASE)) -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_BINS    := build/fuzz/fuzz_config
FUZZ_STAMP   := build/.fuzz-deps
.PHONY: fuzz
$(FUZZ_STAMP): $(DEPS_STAMP)
	@command -v $(FUZZ_CC) >/dev/null || contrib/apt-deps.sh clang
	@touch $@
build/fuzz/fuzz_config: fuzz/fuzz_config.c src/core/config.c $(FUZZ_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wl,--wrap=fopen fuzz/fuzz_config.c src/core/config.c -o $@ $(RDK_LIBS)
fuzz: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_BINS); do n=$$(basename $$t); mkdir -p build/fuzz/corpus/$$n; \
	  echo "== $$n for $(FUZZ_SECONDS) s"; \
	  if $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	      build/fuzz/corpus/$$n fuzz/seeds/$$n > build/fuzz/$$n.log 2>&1; then \
	    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE' build/fuzz/$$n.log; \
	  else grep -E -A12 '^==[0-9]+==(ERROR|WARNING)|runtime error|deadly signal' build/fuzz/$$n.log | head -40; \
	    grep -E 'Test unit written to' build/fuzz/$$n.log; \
	    echo "$$n: failed (log build/fuzz/$$n.log); make it a regression test"; exit 1; fi; done

# ---- issue 8: fencing ---------------------------------------------------------
# The membership lease (src/core/fence.c is in K2MC_SRCS above): its unit
# suite runs plain, under ASan+UBSan and under TSan like the others.
FENCE_UNIT := fence
UNIT_BINS  += $(FENCE_UNIT:%=build/tests/test_%)
ASAN_BINS  += $(FENCE_UNIT:%=build/tests/asan/test_%)
TSAN_BINS  += $(FENCE_UNIT:%=build/tests/tsan/test_%)
unit: $(FENCE_UNIT:%=build/tests/test_%) $(FENCE_UNIT:%=build/tests/asan/test_%) \
      $(FENCE_UNIT:%=build/tests/tsan/test_%)

# ---- issue 8: fencing integration tests --------------------------------------
# Appended block. test_fencing (integration): a member frozen with SIGSTOP,
# and a member cut off from Kafka by a relay in the test, must not write over
# the new owner's values. Its members reach the relay through an LD_PRELOAD
# library that redirects connect(); the test loads it from
# build/tests/libredirect_shim.so (K2MC_REDIRECT_SHIM overrides), so it is
# built with the suite (order-only: it is not linked into the binary).
REDIRECT_SHIM := build/tests/libredirect_shim.so
$(REDIRECT_SHIM): tests/redirect_shim.c $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -fPIC -shared $< -o $@ -ldl
ISSUE8_INTEG := fencing
INTEG_TESTS  += $(ISSUE8_INTEG)
INTEG_BINS   += $(ISSUE8_INTEG:%=build/tests/test_%)
integration: $(ISSUE8_INTEG:%=build/tests/test_%)
build/tests/test_fencing: build/obj/$(DLQ_SRC:.c=.o) | $(REDIRECT_SHIM)

# ---- issue 8: mcconn hardening tests ------------------------------------------
# Appended block. test_mcconn also links tests/fake_mc.c, a memcached impostor
# served by a thread of the test (memcached 1.6.9's "ms" syntax, proxies that
# close on probes, error replies, control bytes); compiled as an object of its
# own so that changes to tests/fake_mc.h rebuild it.
FAKE_MC := tests/fake_mc.c
build/tests/test_mcconn: build/obj/$(FAKE_MC:.c=.o)
build/tests/asan/test_mcconn: build/asan/$(FAKE_MC:.c=.o)
build/tests/tsan/test_mcconn: build/tsan/$(FAKE_MC:.c=.o)

# ---- issue 8, section 6: the byte budget (--max-buffer-bytes) ---------------
# Appended block. src/core/budget.c joins every variant of k2mc and every
# suite (each links all modules). test_budget is a unit suite (plain,
# ASan+UBSan, TSan); test_memory an integration suite: memcached frozen while
# k2mc consumes 64 partitions of 10 KB records, and k2mc's peak RSS bounded.
BUDGET_SRC := src/core/budget.c
K2MC_SRCS  += $(BUDGET_SRC)
build/k2mc: build/obj/$(BUDGET_SRC:.c=.o)
build/asan/k2mc: build/asan/$(BUDGET_SRC:.c=.o)
build/tsan/k2mc: build/tsan/$(BUDGET_SRC:.c=.o)
BUDGET_UNIT  := budget
UNIT_BINS    += $(BUDGET_UNIT:%=build/tests/test_%)
ASAN_BINS    += $(BUDGET_UNIT:%=build/tests/asan/test_%)
TSAN_BINS    += $(BUDGET_UNIT:%=build/tests/tsan/test_%)
unit: $(BUDGET_UNIT:%=build/tests/test_%) $(BUDGET_UNIT:%=build/tests/asan/test_%) \
      $(BUDGET_UNIT:%=build/tests/tsan/test_%)
BUDGET_INTEG := memory
INTEG_TESTS  += $(BUDGET_INTEG)
INTEG_BINS   += $(BUDGET_INTEG:%=build/tests/test_%)
integration: $(BUDGET_INTEG:%=build/tests/test_%)
# every suite links every module; these suites came after the issue-4 line
# that adds dlq.o to the ones before it
$(UNIT_BINS) $(INTEG_BINS): build/obj/$(BUDGET_SRC:.c=.o)
$(ASAN_BINS): build/asan/$(BUDGET_SRC:.c=.o)
$(TSAN_BINS): build/tsan/$(BUDGET_SRC:.c=.o)
$(BUDGET_UNIT:%=build/tests/test_%) $(BUDGET_INTEG:%=build/tests/test_%): \
  build/obj/$(DLQ_SRC:.c=.o)
$(BUDGET_UNIT:%=build/tests/asan/test_%): build/asan/$(DLQ_SRC:.c=.o)
$(BUDGET_UNIT:%=build/tests/tsan/test_%): build/tsan/$(DLQ_SRC:.c=.o)

# ---- issue 9: transports, --mc-protocol, misbehaving servers -----------------
# Appended block. src/workers/transport.c (TCP, unix sockets, TLS with
# OpenSSL) joins every variant of k2mc and every suite; mc-ceiling links it
# too (with log.o: mcconn logs a fallback value limit once per server).
# test_transport (unit: plain, ASan+UBSan, TSan) runs mcconn over unix
# sockets and TLS against real memcached (-s, -Z with certificates the test
# makes with openssl) and the fake server's misbehaviours; test_deploy
# (integration) runs k2mc end to end through nutcracker (twemproxy), over a
# unix socket and over TLS. make fuzz also fuzzes the reply parser.
# Its packages (libssl-dev, openssl, nutcracker) are in DEB_PKGS at the top.
TRANSPORT_SRC := src/workers/transport.c
K2MC_SRCS += $(TRANSPORT_SRC)
LIBS      += -lssl -lcrypto
TLIBS     += -lssl -lcrypto
build/k2mc: build/obj/$(TRANSPORT_SRC:.c=.o)
build/asan/k2mc: build/asan/$(TRANSPORT_SRC:.c=.o)
build/tsan/k2mc: build/tsan/$(TRANSPORT_SRC:.c=.o)
build/mc-ceiling: build/obj/$(TRANSPORT_SRC:.c=.o) build/obj/src/core/log.o
ISSUE9_UNIT  := transport
ISSUE9_INTEG := deploy
UNIT_BINS    += $(ISSUE9_UNIT:%=build/tests/test_%)
ASAN_BINS    += $(ISSUE9_UNIT:%=build/tests/asan/test_%)
TSAN_BINS    += $(ISSUE9_UNIT:%=build/tests/tsan/test_%)
unit: $(ISSUE9_UNIT:%=build/tests/test_%) $(ISSUE9_UNIT:%=build/tests/asan/test_%) \
      $(ISSUE9_UNIT:%=build/tests/tsan/test_%)
INTEG_TESTS  += $(ISSUE9_INTEG)
INTEG_BINS   += $(ISSUE9_INTEG:%=build/tests/test_%)
integration: $(ISSUE9_INTEG:%=build/tests/test_%)
# every suite links every module: transport.o into all of them, and into
# this block's suites every module the blocks above added (K2MC_SRCS now)
$(UNIT_BINS) $(INTEG_BINS): build/obj/$(TRANSPORT_SRC:.c=.o)
$(ASAN_BINS): build/asan/$(TRANSPORT_SRC:.c=.o)
$(TSAN_BINS): build/tsan/$(TRANSPORT_SRC:.c=.o)
# (tests/servers.c: memcached on a unix socket and with TLS, certificates)
SERVERS9 := tests/servers.c
$(ISSUE9_UNIT:%=build/tests/test_%) $(ISSUE9_INTEG:%=build/tests/test_%): \
  $(K2MC_SRCS:%.c=build/obj/%.o) build/obj/$(FAKE_MC:.c=.o) build/obj/$(SERVERS9:.c=.o)
$(ISSUE9_UNIT:%=build/tests/asan/test_%): $(K2MC_SRCS:%.c=build/asan/%.o) \
  build/asan/$(FAKE_MC:.c=.o) build/asan/$(SERVERS9:.c=.o)
$(ISSUE9_UNIT:%=build/tests/tsan/test_%): $(K2MC_SRCS:%.c=build/tsan/%.o) \
  build/tsan/$(FAKE_MC:.c=.o) build/tsan/$(SERVERS9:.c=.o)
# the reply parser, fed bytes without a socket (mcconn_feed)
FUZZ_BINS += build/fuzz/fuzz_replies
fuzz: build/fuzz/fuzz_replies
build/fuzz/fuzz_replies: fuzz/fuzz_replies.c src/workers/mcconn.c $(TRANSPORT_SRC) \
  src/core/log.c $(FUZZ_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_replies.c src/workers/mcconn.c $(TRANSPORT_SRC) \
	  src/core/log.c -o $@ -lssl -lcrypto

# ---- issue 11: version, sd_notify, install, the Debian package --------------
# Appended block.
#
# The version, from one place. VERSION holds the release (0.1.0). In a git
# checkout of this tree the commit is added the way `git describe --tags
# --always --dirty` would say it: a v<release> tag gives
# <release>+<commits since>.g<hash>, no tag gives <VERSION>+g<hash>, and
# uncommitted changes add .dirty; spelled so that it is also a valid Debian
# version. Outside a checkout (a tarball, the copy `make deb` builds from):
# the VERSION file. `git describe --dirty` itself is not run: it refreshes
# and rewrites .git/index, racing other git commands in the same tree.
VERSION := $(shell v=$$(cat VERSION 2>/dev/null || echo 0.0.0); \
  if [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
    d=$$(git describe --tags --match 'v[0-9]*' HEAD 2>/dev/null | \
         sed 's/^v//; s/-\([0-9]*\)-g/+\1.g/'); \
    [ -n "$$d" ] || d="$$v+g$$(git rev-parse --short HEAD)"; \
    git update-index -q --refresh >/dev/null 2>&1; \
    git diff-index --quiet HEAD -- 2>/dev/null || d="$$d.dirty"; v=$$d; \
  fi; echo "$$v")
CFLAGS_BASE += -DK2MC_VERSION='"$(VERSION)"'
# Objects that print the version are rebuilt when it changes: build/.version
# is rewritten only then.
VERSION_STAMP := build/.version
VERSION_USERS := $(shell grep -l K2MC_VERSION src/*/*.c bench/*.c 2>/dev/null)
$(foreach v,obj asan tsan,$(VERSION_USERS:%.c=build/$(v)/%.o)): $(VERSION_STAMP)
$(VERSION_STAMP): k2mc-version-check
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = '$(VERSION)' ] || echo '$(VERSION)' > $@
.PHONY: k2mc-version-check version
k2mc-version-check: ;
version:
	@echo '$(VERSION)'
# the package list, for tests/package_check.sh (README must show it)
.PHONY: deps-list rdkafka-mode
deps-list:
	@echo $(DEB_PKGS)
rdkafka-mode:
	@echo $(RDKAFKA)

# sd_notify (src/core/notify.c, libsystemd): READY=1 after the first
# assignment, STATUS= with the stats line, STOPPING=1 when the drain starts.
# Only main calls it, so only the k2mc binaries link it; its unit suite links
# the module, the log and the harness (for its TSan/Criterion arena fix)
# alone: plain, ASan+UBSan, TSan like the others.
NOTIFY_SRC := src/core/notify.c
K2MC_SRCS  += $(NOTIFY_SRC)
LIBS       += -lsystemd
TLIBS      += -lsystemd
build/k2mc: build/obj/$(NOTIFY_SRC:.c=.o)
build/asan/k2mc: build/asan/$(NOTIFY_SRC:.c=.o)
build/tsan/k2mc: build/tsan/$(NOTIFY_SRC:.c=.o)
NOTIFY_UNIT := notify
UNIT_BINS   += build/tests/test_notify
ASAN_BINS   += build/tests/asan/test_notify
TSAN_BINS   += build/tests/tsan/test_notify
unit: build/tests/test_notify build/tests/asan/test_notify build/tests/tsan/test_notify
build/tests/test_notify: tests/test_notify.c $(HARNESS) build/obj/$(NOTIFY_SRC:.c=.o) \
                         build/obj/src/core/log.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $^ -o $@ $(TLIBS)
build/tests/asan/test_notify: tests/test_notify.c $(HARNESS) build/asan/$(NOTIFY_SRC:.c=.o) \
                              build/asan/src/core/log.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=address,undefined -fno-omit-frame-pointer $^ -o $@ $(TLIBS)
build/tests/tsan/test_notify: tests/test_notify.c $(HARNESS) build/tsan/$(NOTIFY_SRC:.c=.o) \
                              build/tsan/src/core/log.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -fsanitize=thread $^ -o $@ $(TLIBS)

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
.PHONY: install uninstall pkg-deps deb package-test
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
pkg-deps: deps
	@contrib/apt-deps.sh $(PKG_TOOLS)
deb: pkg-deps $(RDK_STAMP)
	@rm -rf build/deb build/k2mc_*.deb build/k2mc-dbgsym_*.deb && mkdir -p $(DEB_SRC)
	@if [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
	  git ls-files -co --exclude-standard | while IFS= read -r f; do [ ! -e "$$f" ] || \
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
	@ls -1 build/*_$(VERSION)_*.deb

# make package-test (.ci/run): the .deb through lintian (errors fail), into a
# scratch root (files, Depends, k2mc --version and --help), its unit through
# systemd-analyze verify and security; then make install / uninstall into a
# DESTDIR. See tests/package_check.sh.
package-test: deb
	tests/package_check.sh $(DEB_FILE)

# ---- issue 9: key placement (--distribution) and the readers' read-back -----
# Appended block. src/workers/placement.c (key -> server, the way each
# reader family's client places it) joins every variant of k2mc and every
# suite that links the writer. It hashes with libhashkit (libmemcached's
# hashing library: libhashkit-dev comes with libmemcached-dev) and OpenSSL's
# libcrypto (SHA-1 for Dalli's ring; the transport block above links it).
# test_placement: unit suite (plain, ASan+UBSan, TSan) with vectors from the
# real clients (tests/interop/gen_vectors.sh). build/placement-bench: the
# cost of placing one key, at 3 and 16 servers (bench.py runs it).
PLACEMENT_SRC := src/workers/placement.c
K2MC_SRCS     += $(PLACEMENT_SRC)
LIBS          += -lhashkit
TLIBS         += -lhashkit
build/k2mc: build/obj/$(PLACEMENT_SRC:.c=.o)
build/asan/k2mc: build/asan/$(PLACEMENT_SRC:.c=.o)
build/tsan/k2mc: build/tsan/$(PLACEMENT_SRC:.c=.o)
# every suite that links the writer (all but test_notify, which links
# notify.o and log.o alone) now links placement.o too
$(filter-out %/test_notify,$(UNIT_BINS)) $(INTEG_BINS): build/obj/$(PLACEMENT_SRC:.c=.o)
$(filter-out %/test_notify,$(ASAN_BINS)): build/asan/$(PLACEMENT_SRC:.c=.o)
$(filter-out %/test_notify,$(TSAN_BINS)): build/tsan/$(PLACEMENT_SRC:.c=.o)
PLACEMENT_UNIT := placement
UNIT_BINS      += $(PLACEMENT_UNIT:%=build/tests/test_%)
ASAN_BINS      += $(PLACEMENT_UNIT:%=build/tests/asan/test_%)
TSAN_BINS      += $(PLACEMENT_UNIT:%=build/tests/tsan/test_%)
unit: $(PLACEMENT_UNIT:%=build/tests/test_%) $(PLACEMENT_UNIT:%=build/tests/asan/test_%) \
      $(PLACEMENT_UNIT:%=build/tests/tsan/test_%)
# this block's suite links every module (K2MC_SRCS now), as the others do
$(PLACEMENT_UNIT:%=build/tests/test_%): $(K2MC_SRCS:%.c=build/obj/%.o)
$(PLACEMENT_UNIT:%=build/tests/asan/test_%): $(K2MC_SRCS:%.c=build/asan/%.o)
$(PLACEMENT_UNIT:%=build/tests/tsan/test_%): $(K2MC_SRCS:%.c=build/tsan/%.o)
build/placement-bench: build/obj/bench/placement_bench.o build/obj/$(PLACEMENT_SRC:.c=.o) \
                       build/obj/src/core/config.o build/obj/src/core/log.o
	$(CC) $^ -o $@ $(LIBS)
bench bench-quick: build/placement-bench

# make interop (.ci/run, after make test): every --distribution proven by its
# readers. tests/interop/run.py starts three memcached servers, has k2mc
# write a topic of build/k2mc-mock under each distribution, and reads every
# key back with the real client library configured as that reader is
# (pylibmc, PHP memcached, pymemcache, gomemcache, Dalli, spymemcached); also
# weighted servers, and --mc-eject with a server down. The clients are
# installed here; one that cannot be installed fails the target.
INTEROP_PKGS  := python3-pylibmc php-cli php-memcached python3-pymemcache ruby ruby-dalli \
                 golang-go golang-github-bradfitz-gomemcache-dev libspymemcached-java \
                 default-jdk-headless
INTEROP_STAMP := build/.deps-interop
$(INTEROP_STAMP): Makefile
	@mkdir -p build
	@[ "$(K2MC_DEPS)" = none ] || contrib/apt-deps.sh $(INTEROP_PKGS)
	@touch $@
.PHONY: interop
interop: deps $(INTEROP_STAMP) build/k2mc build/k2mc-mock
	K2MC_BIN=build/k2mc K2MC_MOCK=build/k2mc-mock /usr/bin/python3 tests/interop/run.py

# ---- issue 13: metrics, the Grafana dashboard, JSON logs ---------------------
# Appended block. test_log: unit suite for the logger (--log-format text and
# json, escaping), plain, ASan+UBSan and TSan like the others. test_logs
# (integration): k2mc's stderr in both formats from real runs. test_metrics
# (already an integration suite) also parses /metrics with Prometheus' own
# parser (python3-prometheus-client), checks the counter table in the stats
# line, --stats-json and /metrics, and contrib/grafana/k2mc.json's queries
# against a real scrape. The python checks run /usr/bin/python3 (Debian's,
# where apt puts the parser). make dashboard-png: contrib/grafana/plot.sh
# draws docs/dashboard.png from a real run's --stats-json with gnuplot.
ISSUE13_PKGS  := python3-prometheus-client gnuplot-nox
ISSUE13_STAMP := build/.deps-issue13
# only what runs the checks needs them (the build does not): not in DEB_PKGS
$(ISSUE13_STAMP): $(DEPS_APT) Makefile
	@mkdir -p build
	@[ "$(K2MC_DEPS)" = none ] || contrib/apt-deps.sh $(ISSUE13_PKGS)
	@touch $@
unit integration: $(ISSUE13_STAMP)
ISSUE13_UNIT  := log
ISSUE13_INTEG := logs
UNIT_BINS     += $(ISSUE13_UNIT:%=build/tests/test_%)
ASAN_BINS     += $(ISSUE13_UNIT:%=build/tests/asan/test_%)
TSAN_BINS     += $(ISSUE13_UNIT:%=build/tests/tsan/test_%)
unit: $(ISSUE13_UNIT:%=build/tests/test_%) $(ISSUE13_UNIT:%=build/tests/asan/test_%) \
      $(ISSUE13_UNIT:%=build/tests/tsan/test_%)
INTEG_TESTS   += $(ISSUE13_INTEG)
INTEG_BINS    += $(ISSUE13_INTEG:%=build/tests/test_%)
integration: $(ISSUE13_INTEG:%=build/tests/test_%)
.PHONY: dashboard-png
dashboard-png: all $(ISSUE13_STAMP)
	contrib/grafana/plot.sh docs/dashboard.png

# ---- issue 10: what lands in Memcached: templates, TTL, flags, tombstones ----
# Appended block. src/workers/mapping.c (record -> key, value, flags, expiry,
# operation; it absorbed keymap.c) joins K2MC_SRCS, which the link rules'
# secondary expansion carries into k2mc and every suite. test_mapping: unit
# suite (plain, ASan+UBSan, TSan). test_mapping_e2e (integration): k2mc
# against memcached and k2mc-mock with JSON-keyed records, per-record TTL and
# flags headers, --ttl-from-timestamp over past records, every new invalid
# reason under each policy, --on-tombstone ignore and invalidate, read back
# with meta "mg". make fuzz also fuzzes templates and JSON values
# (fuzz_mapping). build/json-bench (make bench): the JSON extractor against
# jansson and json-c, and the templates' cost per record; those two libraries
# are bench dependencies only, k2mc does not link them.
MAPPING_SRC := src/workers/mapping.c
K2MC_SRCS   += $(MAPPING_SRC)
UNIT_BINS   += build/tests/test_mapping
ASAN_BINS   += build/tests/asan/test_mapping
TSAN_BINS   += build/tests/tsan/test_mapping
unit: build/tests/test_mapping build/tests/asan/test_mapping build/tests/tsan/test_mapping
INTEG_TESTS += mapping_e2e
INTEG_BINS  += build/tests/test_mapping_e2e
integration: build/tests/test_mapping_e2e
FUZZ_BINS   += build/fuzz/fuzz_mapping
fuzz: build/fuzz/fuzz_mapping
build/fuzz/fuzz_mapping: fuzz/fuzz_mapping.c $(MAPPING_SRC) $(FUZZ_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) fuzz/fuzz_mapping.c $(MAPPING_SRC) -o $@ $(RDK_LIBS) -lxxhash
JSONBENCH_PKGS  := libjansson-dev libjson-c-dev
JSONBENCH_STAMP := build/.deps-jsonbench
$(JSONBENCH_STAMP): $(DEPS_APT) Makefile
	@mkdir -p build
	@[ "$(K2MC_DEPS)" = none ] || contrib/apt-deps.sh $(JSONBENCH_PKGS)
	@touch $@
JSONBENCH_OBJS  := build/obj/bench/json_bench.o build/obj/bench/json_bench_libs.o \
                   build/obj/bench/json_bench_jsonc.o
$(JSONBENCH_OBJS): $(JSONBENCH_STAMP)
build/json-bench: $(JSONBENCH_OBJS) build/obj/$(MAPPING_SRC:.c=.o)
	$(CC) $^ -o $@ -ljansson -ljson-c $(RDK_LIBS) -lxxhash
bench bench-quick: build/json-bench

# ---- issue 12: refill a memcached server that lost its contents ----
# Appended block. src/workers/refill.c (loss detection by stats and
# sentinels, the two-pass refill with the no-older-value argument) joins
# K2MC_SRCS; test_refill (integration): 3 memcached servers, restart and
# flush_all, the invariant under load, --refill-rate.
REFILL_SRC  := src/workers/refill.c
K2MC_SRCS   += $(REFILL_SRC)
INTEG_TESTS += refill
INTEG_BINS  += build/tests/test_refill
integration: build/tests/test_refill
# its TLS case starts memcached -Z with certificates made by tests/servers.c
build/tests/test_refill: build/obj/$(FAKE_MC:.c=.o) build/obj/$(SERVERS9:.c=.o)

# ---- issue 14: the allocator ------------------------------------------------
# Appended block. librdkafka's fetch thread allocates one op per message and
# k2mc's writers free them, so nearly every free crosses threads; glibc's
# arenas take a lock and a trip through the bins for each. The plain build
# links K2MC_ALLOC instead: jemalloc by default (k2mc's CPU per record at 64
# partitions, median of 3 in turns: glibc 0.93 us, mimalloc 0.83, jemalloc
# 0.71; bench.py's allocators section and perf/FINDINGS.md); `make
# K2MC_ALLOC=mimalloc` or `K2MC_ALLOC=glibc` for the others. Only
# build/k2mc: the ASan and TSan builds keep the sanitizers' own
# allocators, the tests and tools glibc's.
# The library is a prerequisite (-lNAME, which make finds on its library
# path), so it lands in $^ ahead of LIBS and of libc: its malloc and free
# are the ones librdkafka's calls resolve to. Its -dev package joins
# DEB_PKGS (README's package line and debian/control's Build-Depends list
# it too). build/k2mc-glibc: the same objects with glibc's malloc, for the
# bench's comparison (make bench builds it).
K2MC_ALLOC ?= jemalloc
ALLOC_PKG_mimalloc := libmimalloc-dev
ALLOC_PKG_jemalloc := libjemalloc-dev
ifneq ($(ALLOC_PKG_$(K2MC_ALLOC)),)
DEB_PKGS += $(ALLOC_PKG_$(K2MC_ALLOC))
build/k2mc: -l$(K2MC_ALLOC)
else ifneq ($(K2MC_ALLOC),glibc)
$(error K2MC_ALLOC=$(K2MC_ALLOC): expected mimalloc, jemalloc or glibc)
endif
build/k2mc-glibc: $$(OBJS) build/obj/$(MAIN_SRC:.c=.o)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $^ -o $@ $(LIBS)
bench bench-quick: build/k2mc-glibc build/k2mc-verify
# test_coalesce (integration): a hot-key topic reaches memcached as fewer
# than 0.5 writes per record with the final state exact and everything
# committed; refused values are still dead-lettered (writer.c coalescing).
COALESCE_INTEG := coalesce
INTEG_TESTS    += $(COALESCE_INTEG)
INTEG_BINS     += $(COALESCE_INTEG:%=build/tests/test_%)
integration: $(COALESCE_INTEG:%=build/tests/test_%)

# ---- issue 20: librdkafka from Debian's source packages ----------------------
# make rdkafka-fallback-test (.ci/run): a fresh clone of HEAD built with a pin
# Debian does not serve must say so, name what Debian serves, and link the
# fallback of contrib/librdkafka.pin (tests/rdkafka_fallback.sh).
.PHONY: rdkafka-fallback-test
rdkafka-fallback-test:
	tests/rdkafka_fallback.sh

# ---- real Kafka broker (issue 21) ----
# Appended block. `make kafka`: the Apache Kafka broker's jars (the
# kafka_2.13 artifact and its runtime dependencies, named by
# tests/kafka/pom.xml) from Maven Central into build/kafka/VERSION, for
# KAFKA_VERSION (the 4.x line) and KAFKA_OLD_VERSION (3.9.x). Maven resolves
# a relative -DoutputDirectory against the pom's folder, hence CURDIR; later
# runs read ~/.m2. java (Debian's openjdk-17-jre-headless) and mvn (maven)
# are installed through contrib/apt-deps.sh only where missing; kcat is the
# launcher's readiness probe. Nothing is downloaded any other way.
# tests/kafka/kafka-broker starts a KRaft broker from those jars (see its
# head). `make test-kafka`: k2mc against the real broker
# (tests/test_kafka_real.c, K2MC_KAFKA=real), on each version in turn.
# `make test` needs none of this.
KAFKA_VERSION     ?= 4.1.1
KAFKA_OLD_VERSION ?= 3.9.1
KAFKA_VERSIONS    := $(KAFKA_VERSION) $(KAFKA_OLD_VERSION)
KAFKA_DEPS_STAMP  := build/.deps-kafka
.PHONY: kafka test-kafka
$(KAFKA_DEPS_STAMP): $(DEPS_APT) Makefile
	@mkdir -p build
	@if [ "$(K2MC_DEPS)" != none ]; then \
	  command -v java >/dev/null || contrib/apt-deps.sh openjdk-17-jre-headless || exit 1; \
	  command -v mvn >/dev/null || contrib/apt-deps.sh maven || exit 1; \
	  contrib/apt-deps.sh kcat openssl || exit 1; fi
	@touch $@
# kafka.line (the major version) picks the logging jars in the pom
build/kafka/%/.stamp: tests/kafka/pom.xml $(KAFKA_DEPS_STAMP)
	@rm -rf build/kafka/$* && mkdir -p build/kafka/$*
	@echo "mvn: org.apache.kafka:kafka_2.13:$* -> build/kafka/$*"
	nice mvn -q -B -Dstyle.color=never -f tests/kafka/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(CURDIR)/build/kafka/$* -DincludeScope=runtime \
	  -Dkafka.version=$* -Dkafka.line=$(firstword $(subst ., ,$*))
	@touch $@
kafka: $(KAFKA_VERSIONS:%=build/kafka/%/.stamp)
# The suite: tests/test_kafka_real.c with the harness and tests/kafka_real.c
# (the broker through its launcher, topics through the admin API, the
# K2MC_KAFKA backend switch). Not in INTEG_TESTS: `make test` runs without
# Java. Criterion runs one test at a time: a broker is a JVM on two cores.
KAFKA_REAL_SRC := tests/kafka_real.c
build/tests/test_kafka_real: tests/test_kafka_real.c $(HARNESS) $(KAFKA_REAL_SRC) tests/kafka_real.h \
                             tests/harness.h $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -Itests $(filter %.c,$^) -o $@ $(TLIBS)
# test_kafka_group: SASL/SCRAM, KIP-848, broker failover, static membership,
# Memcached frozen past max.poll, topics that change (tests/mc_reader.c
# watches the cache during hand-offs).
build/tests/test_kafka_group: tests/test_kafka_group.c tests/mc_reader.c tests/mc_reader.h \
                              $(HARNESS) $(KAFKA_REAL_SRC) tests/kafka_real.h tests/harness.h \
                              $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -Itests $(filter %.c,$^) -o $@ $(TLIBS)
# Every suite runs on every version even when one fails; the failures are
# listed at the end and make fails. The integration suites that have a
# meaning on a real broker (tests/world.h: one broker per suite process)
# also run, on $(KAFKA_VERSION) only. A test that needs the mock cluster
# is skipped there with its reason; the per-suite line counts it as
# skipped, apart from the passes.
KAFKA_SUITES := test_kafka_real test_kafka_group
KAFKA_WORLD_SUITES := test_pipeline test_faults test_fencing test_coalesce test_mapping_e2e \
                      test_refill test_policies test_metrics
test-kafka: kafka build/k2mc build/k2mc-mock $(KAFKA_SUITES:%=build/tests/%) \
            $(KAFKA_WORLD_SUITES:%=build/tests/%)
	@failed=""; for v in $(KAFKA_VERSIONS); do t0=$$(date +%s); \
	  suites="$(KAFKA_SUITES)"; [ $$v = $(KAFKA_VERSION) ] && suites="$$suites $(KAFKA_WORLD_SUITES)"; \
	  for s in $$suites; do echo "== $$s on Kafka $$v"; t1=$$(date +%s); log=build/$$s-kafka-$$v.log; \
	    K2MC_KAFKA=real K2MC_KAFKA_VERSION=$$v K2MC_BIN=build/k2mc K2MC_MOCK=build/k2mc-mock \
	      build/tests/$$s --jobs 1 --verbose=1 > $$log 2>&1 || failed="$$failed $$s@$$v"; cat $$log; \
	    echo "== $$s on Kafka $$v: $$(grep -c '\[PASS\]' $$log) passed, $$(grep -c '\[SKIP\]' $$log)" \
	      "skipped, $$(grep -c '\[FAIL\]' $$log) failed, $$(( $$(date +%s) - t1 )) s"; done; \
	  echo "== Kafka $$v: $$(( $$(date +%s) - t0 )) s"; done; \
	if [ -n "$$failed" ]; then echo "== test-kafka failed:$$failed"; exit 1; fi

# ---- issue 23: one decision for the live path and refill ----
# src/workers/policy.c: --on-invalid applied to a mapped record (write,
# delete the key in its place, skip, dead-letter, stop), shared by writer.c
# and refill.c so that refill stores only what the live path would.
POLICY_SRC := src/workers/policy.c
K2MC_SRCS  += $(POLICY_SRC)

# ---- issue 21: records lost to retention -------------------------------------
# Appended block. test_retention (integration): k2mc stopped while the mock's
# retention (5 MiB a partition) deletes records past its commit; the restart
# counts and logs the loss, writes every survivor whatever -o says, and -o end
# still starts a group with no committed offset at the end; eager and
# cooperative assignment.
RETENTION_INTEG := retention
INTEG_TESTS     += $(RETENTION_INTEG)
INTEG_BINS      += $(RETENTION_INTEG:%=build/tests/test_%)
integration: $(RETENTION_INTEG:%=build/tests/test_%)

# ---- issue 23, item 5: --check-config against the start ---------------------
# test_config runs build/k2mc (K2MC_BIN overrides) with and without
# --check-config and expects the same stop: the unit suites need it built.
unit: build/k2mc

# ---- issue 23, item 10: the thread limit ---------------------------------------
# src/core/threads.c (how many more threads the kernel's limits allow: the
# user's RLIMIT_NPROC, kernel.threads-max, the cgroup's pids.max) joins
# K2MC_SRCS, which the link rules carry into k2mc and every suite; group.c
# refuses an assignment whose consumer threads would not fit, before making
# any. test_faults runs k2mc under prlimit --nproc and setpriv (util-linux).
THREADS_SRC := src/core/threads.c
K2MC_SRCS   += $(THREADS_SRC)
