# saeforge build. `make run` trains the quickstart; `make test` runs every test (CPU + emulated CUDA).
# Sources are found by folder; a folder that needs rules of its own adds a *.mk fragment.

BUILD    ?= build
CC       ?= gcc
CXX      ?= g++
NVCC     ?= /usr/local/cuda/bin/nvcc
CUDA_DIR ?= /usr/local/cuda
PKGS     := hdf5-serial libcyaml openblas ompi-c
SANITIZE ?=
WERROR   ?= -Werror

# Evaluated on first use, not when the Makefile is read: on a fresh machine the packages that
# pkg-config describes are installed by the $(DEPS_STAMP) prerequisite of the same `make run`.
lazy = $(eval $1 := $$(shell $2))$($1)
PKG_CFLAGS = $(call lazy,PKG_CFLAGS,pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(call lazy,PKG_LIBS,pkg-config --libs $(PKGS) 2>/dev/null)
CRIT_LIBS  = $(call lazy,CRIT_LIBS,pkg-config --libs criterion 2>/dev/null || echo -lcriterion)

OPT      ?= -O2
COMMON    = $(OPT) -g -fopenmp -Wall -Wextra $(WERROR) -Wno-unused-parameter $(SANITIZE) -MMD -MP -I. $(PKG_CFLAGS)
CFLAGS    = -std=c11 -D_GNU_SOURCE $(COMMON)
CXXFLAGS  = -std=c++17 -D_GNU_SOURCE $(COMMON)
LDFLAGS  := -fopenmp $(SANITIZE)
LDLIBS    = $(PKG_LIBS) -lpthread -lm

# --- sources ---------------------------------------------------------------
VARIANT_SRC := host/backend_open.c
LIB_SRC     := $(wildcard kernels/*.c) $(wildcard data/*.c) \
               $(filter-out host/main.c $(VARIANT_SRC),$(wildcard host/*.c))
LIB_OBJ     := $(LIB_SRC:%.c=$(BUILD)/%.o)
CU_SRC      := $(wildcard kernels/*.cu)
EMU_SRC     := $(wildcard kernels/emu/*.c) $(wildcard kernels/emu/*.cpp) $(wildcard kernels/emu/*.S)
EMU_OBJ     := $(patsubst %,$(BUILD)/%.o,$(EMU_SRC)) $(CU_SRC:%.cu=$(BUILD)/emu/%.o)
GPU_TEST_SRC := $(wildcard tests/test_cuda*.c)
TEST_SRC    := $(filter-out $(GPU_TEST_SRC),$(wildcard tests/test_*.c))
TEST_BIN    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%) $(GPU_TEST_SRC:tests/%.c=$(BUILD)/tests/emu_%)
TEST_HELPERS := $(wildcard tests/helpers/*.c)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/%.o)

.SECONDARY:
.PHONY: all run test test-unit test-gpu test-asan test-tsan cuda emu deps bench clean
all: $(BUILD)/saeforge

# --- dependencies (Debian) -------------------------------------------------
DEPS_STAMP := $(BUILD)/.deps-ok
deps:
	@sh .ci/deps.sh
$(DEPS_STAMP):
	@sh .ci/deps.sh
	@mkdir -p $(BUILD) && touch $@

# --- CPU library and binary ------------------------------------------------
$(BUILD)/libsaeforge.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/cpu/backend_open.o: $(VARIANT_SRC) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/saeforge: $(BUILD)/host/main.o $(BUILD)/cpu/backend_open.o $(BUILD)/libsaeforge.a
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# --- emulated CUDA: the .cu files compiled by g++ against kernels/emu ------
# Links list the CUDA archive (emulated or real) before libsaeforge.a: its host code calls C
# modules there (kernels/input16.c) that nothing on the CPU side pulls in.
EMU_FLAGS := -DSF_EMU -DSF_WITH_CUDA -Ikernels/emu
$(BUILD)/emu/%.o: %.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(EMU_FLAGS) -x c++ -c $< -o $@
$(BUILD)/kernels/emu/%.c.o: kernels/emu/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EMU_FLAGS) -c $< -o $@
$(BUILD)/kernels/emu/%.cpp.o: kernels/emu/%.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) $(EMU_FLAGS) -c $< -o $@
$(BUILD)/kernels/emu/%.S.o: kernels/emu/%.S | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(SANITIZE) -c $< -o $@
$(BUILD)/emu/backend_open.o: $(VARIANT_SRC) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EMU_FLAGS) -c $< -o $@
$(BUILD)/libsaeforge_emu.a: $(EMU_OBJ)
	@rm -f $@
	ar rcs $@ $^
# The CLI on the emulated CUDA backend (`backend: cuda` runs the .cu kernels on the CPU): slow,
# for measuring that a whole training run on the CUDA code path matches the CPU one.
$(BUILD)/emu/saeforge: $(BUILD)/host/main.o $(BUILD)/emu/backend_open.o $(BUILD)/libsaeforge_emu.a $(BUILD)/libsaeforge.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)
emu: $(BUILD)/emu/saeforge

# --- tests -----------------------------------------------------------------
$(BUILD)/tests/%.o: tests/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EMU_FLAGS) -c $< -o $@
$(BUILD)/tests/emu_%.o: tests/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(EMU_FLAGS) -c $< -o $@
TEST_LINK = $(BUILD)/emu/backend_open.o $(TEST_HELPER_OBJ) $(BUILD)/libsaeforge_emu.a $(BUILD)/libsaeforge.a
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_LINK) $(BUILD)/saeforge
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(filter %.a,$^) -o $@ $(CRIT_LIBS) $(LDLIBS)

# Every suite runs; the summary line counts suites. SF_TEST_FILTER=name runs one suite.
test-unit: $(TEST_BIN) $(BUILD)/saeforge $(BUILD)/emu/saeforge
	@sh tests/run_all.sh $(BUILD) $(TEST_BIN)
test: test-unit

# --- sanitizer builds (emulation under ASan+UBSan, TSan race check) ----------
test-asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" SF_SANITIZER=asan test-unit
# Criterion cannot start under TSan (its arena allocator aborts), so the race check is the
# emulator's plain race-check program (kernels/emu/emu.mk).
test-tsan: emu-race-check

# --- real CUDA -------------------------------------------------------------
CUDA_ARCH  := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVCCFLAGS  := -O3 -std=c++17 $(CUDA_ARCH) -Werror all-warnings -Xcompiler -Wall,-fopenmp -DSF_WITH_CUDA -I. -lineinfo
CUDA_LIBS  := -L$(CUDA_DIR)/lib64 -Wl,-rpath,$(CUDA_DIR)/lib64 -lnccl -lcublasLt -lcublas -lcudart
CUDA_OBJ   := $(CU_SRC:%.cu=$(BUILD)/cuda/%.o)
$(BUILD)/cuda/%.o: %.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/cuda/backend_open.o: $(VARIANT_SRC) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSF_WITH_CUDA -I$(CUDA_DIR)/include -c $< -o $@
$(BUILD)/libsaeforge_cuda.a: $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BUILD)/cuda/saeforge: $(BUILD)/host/main.o $(BUILD)/cuda/backend_open.o $(BUILD)/libsaeforge_cuda.a $(BUILD)/libsaeforge.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(CUDA_LIBS) $(LDLIBS)
cuda: $(BUILD)/cuda/saeforge

GPU_TEST_BIN := $(GPU_TEST_SRC:tests/%.c=$(BUILD)/cuda/tests/%)
$(BUILD)/cuda/tests/%.o: tests/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DSF_WITH_CUDA -I$(CUDA_DIR)/include -c $< -o $@
$(BUILD)/cuda/tests/%: $(BUILD)/cuda/tests/%.o $(BUILD)/cuda/backend_open.o $(TEST_HELPER_OBJ) $(BUILD)/libsaeforge_cuda.a $(BUILD)/libsaeforge.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(CRIT_LIBS) $(CUDA_LIBS) $(LDLIBS)
test-gpu: $(GPU_TEST_BIN) $(BUILD)/cuda/saeforge
	@sh tests/run_gpu.sh $(BUILD) $(GPU_TEST_BIN)

# --- quickstart --------------------------------------------------------------
run: $(BUILD)/saeforge
	@sh configs/quickstart.sh $(BUILD)/saeforge

clean:
	rm -rf build build-asan build-tsan

-include $(wildcard kernels/emu/*.mk bench/*.mk)
-include tests/fuzz/fuzz.mk
-include py/py.mk
-include tests/interop/interop.mk
-include tests/slurm/slurm.mk
-include tests/dist/dist.mk
# venvs under $(BUILD) (test-interop) hold folders named *.d: prune them, keep files only
-include $(shell find $(BUILD) -path '$(BUILD)/venv*' -prune -o -name '*.d' -type f -print 2>/dev/null)

cuda-tests: $(GPU_TEST_BIN)
.PHONY: cuda-tests
