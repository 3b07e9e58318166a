# k2mc build. `make` builds build/k2mc and the tools; `make test` builds the
# ASan and TSan variants too and runs the unit and integration suites.
# Missing Debian packages are installed on first use (see `deps`).

CC       ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
               -Wmissing-prototypes -Wformat=2 -Werror -Isrc -pthread
CFLAGS   ?= -O2
LIBS     := -lrdkafka -lmemcached -lurcu -lurcu-common -lxxhash -lpthread
TLIBS    := $(LIBS) -lcriterion

DEB_PKGS := librdkafka-dev libmemcached-dev liburcu-dev libcriterion-dev libxxhash-dev \
            memcached libmemcached-tools kcat pkg-config
DEPS_STAMP := build/.deps

K2MC_SRCS := src/core/config.c src/core/stats.c src/core/watermark.c src/core/committer.c \
             src/core/group.c src/core/log.c \
             src/workers/consumer.c src/workers/writer.c src/workers/keymap.c src/workers/mcconn.c \
             src/ring/ring.c src/ring/park.c
MAIN_SRC  := src/core/k2mc.c

.PHONY: all deps test unit integration asan tsan demo bench bench-quick lint clean
all: build/k2mc build/k2mc-mock

# Install what a fresh Debian machine lacks; a stamp keeps later builds quiet.
deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@mkdir -p build
	@missing=""; for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
	  grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@touch $@

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

OBJS   = $(K2MC_SRCS:%.c=build/obj/%.o)
AOBJS  = $(K2MC_SRCS:%.c=build/asan/%.o)
TOBJS  = $(K2MC_SRCS:%.c=build/tsan/%.o)

build/k2mc: $(OBJS) build/obj/$(MAIN_SRC:.c=.o)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $^ -o $@ $(LIBS)
build/asan/k2mc: $(AOBJS) build/asan/$(MAIN_SRC:.c=.o)
	$(CC) -fsanitize=address,undefined $^ -o $@ $(LIBS)
build/tsan/k2mc: $(TOBJS) build/tsan/$(MAIN_SRC:.c=.o)
	$(CC) -fsanitize=thread $^ -o $@ $(LIBS)

build/k2mc-mock: build/obj/bench/k2mc_mock.o
	$(CC) $^ -o $@ $(LIBS)

-include $(shell find build -name '*.d' 2>/dev/null)
