# Benchmark harness (included by the Makefile; never part of `make test`).
#   make bench              build, run the whole-step grid + data + kernel benches on the CPU backend
#   make bench QUICK=1      (or make bench-quick) the subset that finishes in a few minutes
#   make bench-cuda         the same against the CUDA backend (needs nvcc and a GPU)
#   make bench-report       table + SVG plot of the newest results file
#   make bench-build        only build the CPU benchmark programs
# Results: bench/results/<machine>-<date>.jsonl (one JSON object per line).

BENCH_COMMON_SRC := bench/bench_util.c bench/kcommon.c
BENCH_KERN_SRC   := $(wildcard bench/kern_*.c)
# A kernel bench that uses CUDA without an SF_WITH_CUDA guard is GPU-only: CUDA variant only.
BENCH_KERN_GPU_ONLY := $(shell grep -L 'SF_WITH_CUDA' $(BENCH_KERN_SRC) /dev/null 2>/dev/null | \
                         xargs grep -l 'cuda_compat.h\|cuda_runtime.h' /dev/null 2>/dev/null)
BENCH_KERN_CPU   := $(filter-out $(BENCH_KERN_GPU_ONLY),$(BENCH_KERN_SRC))
BENCH_PROGS      := step_bench data_bench $(BENCH_KERN_CPU:bench/%.c=%)
BENCH_BIN        := $(BENCH_PROGS:%=$(BUILD)/bench/%)
BENCH_COMMON_OBJ := $(BENCH_COMMON_SRC:%.c=$(BUILD)/%.o)
BENCH_CPU_LINK   := $(BENCH_COMMON_OBJ) $(BUILD)/cpu/backend_open.o $(BUILD)/libsaeforge.a

# CPU programs: objects come from the Makefile's $(BUILD)/%.o rule.
$(BENCH_BIN): $(BUILD)/bench/%: $(BUILD)/bench/%.o $(BENCH_CPU_LINK)
	$(CC) $(LDFLAGS) $(filter %.o %.a,$^) -o $@ $(LDLIBS)

# CUDA programs: the same sources with SF_WITH_CUDA, linked like $(BUILD)/cuda/saeforge.
BENCH_CUDA_PROGS  := step_bench $(BENCH_KERN_SRC:bench/%.c=%)
BENCH_CUDA_BIN    := $(BENCH_CUDA_PROGS:%=$(BUILD)/cuda/bench/%)
BENCH_CUDA_COMMON := $(BENCH_COMMON_SRC:%.c=$(BUILD)/cuda/%.o)
BENCH_CUDA_LINK   := $(BENCH_CUDA_COMMON) $(BUILD)/cuda/backend_open.o $(BUILD)/libsaeforge_cuda.a $(BUILD)/libsaeforge.a
$(BUILD)/cuda/bench/%.o: bench/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSF_WITH_CUDA -I$(CUDA_DIR)/include -c $< -o $@
$(BENCH_CUDA_BIN): $(BUILD)/cuda/bench/%: $(BUILD)/cuda/bench/%.o $(BENCH_CUDA_LINK)
	$(CXX) $(LDFLAGS) $(filter %.o %.a,$^) -o $@ $(CUDA_LIBS) $(LDLIBS)

BENCH_MODE := $(if $(filter-out 0,$(QUICK)),--quick,)

.PHONY: bench-build bench-quick bench-cuda bench-cuda-build bench-report
bench-build: $(BENCH_BIN)
bench: $(BENCH_BIN)
	@sh bench/run.sh --build $(BUILD) --backend cpu $(BENCH_MODE)
bench-quick:
	@$(MAKE) --no-print-directory bench QUICK=1
bench-cuda-build: $(BENCH_CUDA_BIN)
bench-cuda: $(BENCH_CUDA_BIN)
	@sh bench/run.sh --build $(BUILD) --backend cuda $(BENCH_MODE)
bench-report:
	@python3 bench/report.py --svg
