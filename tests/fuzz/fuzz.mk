# Fuzz harnesses (included by the Makefile). libFuzzer needs clang; `make test` does not:
# tests/test_fuzz_corpus.c replays the kept corpora through the same harness code under gcc.
#   make fuzz                        install clang + libFuzzer if missing, run every harness
#                                    FUZZ_SECONDS (default 60) each, one after another
#   make fuzz FUZZ_TARGETS=config    only some harnesses (config safetensors ckpt shard)
#   make fuzz-build                  only build the libFuzzer binaries ($(BUILD)/fuzz/fuzz_<h>)
#   make fuzz FUZZ_FLAGS=-jobs=2     extra libFuzzer options
# A crash or round-trip mismatch stops the run and leaves the input in $(BUILD)/fuzz/artifacts/<h>/;
# keep it (after the fix) in tests/fuzz/corpus/<h>/ so `make test` replays it from then on.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config safetensors ckpt shard
# The harnesses write (and fsync) their inputs: on tmpfs that costs nothing.
FUZZ_TMPDIR  ?= $(if $(wildcard /dev/shm),/dev/shm,/tmp)
# Harnesses that keep going after a finding (libFuzzer fork mode): libhdf5 1.10 itself crashes,
# hangs and leaks on damaged files (tests/fuzz/known_libhdf5/README.md), so a shard finding is
# listed for triage instead of failing the run. Everything else stops at its first finding.
FUZZ_KEEP_GOING ?= shard
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_LIB_SRC := host/config.c host/fsutil.c host/sf_err.c host/safetensors.c host/ckpt.c host/crc32c.c \
                data/shard.c kernels/sae_alloc.c
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -MMD -MP -Wall -Wextra \
                -Wno-unused-parameter -Wno-unknown-pragmas -DSF_LIBFUZZER -I. $(PKG_CFLAGS)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/%.o) $(FUZZ_DIR)/tests/fuzz/fuzz_common.o
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_STAMP   := $(FUZZ_DIR)/.clang-ok
# The harness objects the corpus suite links (compiled by gcc with the test flags).
FUZZ_GCC_OBJ := $(patsubst %,$(BUILD)/tests/fuzz/%.o,fuzz_common fuzz_config fuzz_safetensors fuzz_ckpt fuzz_shard)

.PHONY: fuzz fuzz-build fuzz-deps
fuzz-deps: $(FUZZ_STAMP)
$(FUZZ_STAMP):
	@sh tests/fuzz/deps.sh $(FUZZ_CC)
	@mkdir -p $(dir $@) && touch $@

$(FUZZ_DIR)/%.o: %.c | $(FUZZ_STAMP) $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $^ -o $@ $(PKG_LIBS) -lpthread -lm

fuzz-build: $(FUZZ_BIN)

# Each harness starts from a copy of its kept corpus (new inputs libFuzzer finds stay in the copy).
# malloc_limit above rss_limit: libhdf5 itself allocates what a damaged object header claims
# (4 GiB seen) and then fails cleanly; only resident memory is a defect.
fuzz: $(FUZZ_BIN)
	@set -e; for h in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/work/$$h $(FUZZ_DIR)/artifacts/$$h; \
	  cp -n tests/fuzz/corpus/$$h/* $(FUZZ_DIR)/work/$$h/ 2>/dev/null || true; \
	  echo "== fuzz $$h: $(FUZZ_SECONDS) s"; \
	  dict=; [ -f tests/fuzz/$$h.dict ] && dict=-dict=tests/fuzz/$$h.dict; \
	  keep=; case " $(FUZZ_KEEP_GOING) " in *" $$h "*) \
	    keep="-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1";; esac; \
	  TMPDIR=$(FUZZ_TMPDIR) LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp ASAN_OPTIONS=allocator_may_return_null=1 $(FUZZ_DIR)/fuzz_$$h $$dict -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=20 -rss_limit_mb=3072 \
	    -malloc_limit_mb=8192 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$h/ $$keep $(FUZZ_FLAGS) \
	    $(FUZZ_DIR)/work/$$h 2>$(FUZZ_DIR)/$$h.log || [ -n "$$keep" ] || { tail -n 40 $(FUZZ_DIR)/$$h.log; exit 1; }; \
	  grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE|^#[0-9]+: cov' $(FUZZ_DIR)/$$h.log | tail -n 2 || true; \
	  [ -z "$$keep" ] || echo "   findings to triage (libhdf5's own are known): $$(ls $(FUZZ_DIR)/artifacts/$$h | wc -l) in $(FUZZ_DIR)/artifacts/$$h"; \
	done

$(BUILD)/tests/test_fuzz_corpus: $(FUZZ_GCC_OBJ)
