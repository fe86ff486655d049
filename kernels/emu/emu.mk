# Emulator extras: the emulator's own test kernels (tests/emu_kernels/*.cu, compiled by the
# generic $(BUILD)/emu/%.o rule) linked into build/tests/test_emu and test_emu_stream together
# with the emulator's objects only, so they do not depend on the rest of the library.
# `make SF_EMU_UCONTEXT=1 ...` switches fibers to the portable ucontext implementation.
ifdef SF_EMU_UCONTEXT
EMU_FLAGS += -DSF_EMU_UCONTEXT
endif

EMU_TEST_KERNEL_OBJ := $(patsubst %.cu,$(BUILD)/emu/%.o,$(wildcard tests/emu_kernels/*.cu))
EMU_RUNTIME_OBJ     := $(patsubst %,$(BUILD)/%.o,$(EMU_SRC))

$(BUILD)/tests/test_emu: $(BUILD)/tests/test_emu.o $(EMU_TEST_KERNEL_OBJ) $(EMU_RUNTIME_OBJ)
	$(CXX) $(LDFLAGS) $(filter %.o %.a,$^) -o $@ $(CRIT_LIBS) $(LDLIBS)
$(BUILD)/tests/test_emu_stream: $(BUILD)/tests/test_emu_stream.o $(EMU_TEST_KERNEL_OBJ) $(EMU_RUNTIME_OBJ)
	$(CXX) $(LDFLAGS) $(filter %.o %.a,$^) -o $@ $(CRIT_LIBS) $(LDLIBS)

.PHONY: test-emu
test-emu: $(BUILD)/tests/test_emu $(BUILD)/tests/test_emu_stream
	@sh tests/run_all.sh $(BUILD) $(BUILD)/tests/test_emu $(BUILD)/tests/test_emu_stream

# ThreadSanitizer check of the emulator (Criterion itself cannot run under TSan, so this is a
# plain program): well-formed kernels must give no report, the racy kernel must give one.
EMU_TSAN_BUILD ?= build-tsan
$(BUILD)/tests/emu_race_check: $(BUILD)/tests/emu_kernels/race_check.o $(EMU_TEST_KERNEL_OBJ) $(EMU_RUNTIME_OBJ)
	$(CXX) $(LDFLAGS) $(filter %.o,$^) -o $@ $(LDLIBS)

.PHONY: emu-race-check emu-race-check-run
emu-race-check:
	$(MAKE) BUILD=$(EMU_TSAN_BUILD) OPT=-O1 SANITIZE="-fsanitize=thread" SF_SANITIZER=tsan emu-race-check-run
emu-race-check-run: $(BUILD)/tests/emu_race_check
	@TSAN_OPTIONS="halt_on_error=0 exitcode=66" $(BUILD)/tests/emu_race_check clean >$(BUILD)/tests/emu_race_clean.log 2>&1 \
	  || { cat $(BUILD)/tests/emu_race_clean.log; echo "emu-race-check: FAILED: well-formed kernels reported"; exit 1; }
	@if TSAN_OPTIONS="halt_on_error=0 exitcode=66" $(BUILD)/tests/emu_race_check racy >$(BUILD)/tests/emu_race_racy.log 2>&1; then \
	  cat $(BUILD)/tests/emu_race_racy.log; echo "emu-race-check: FAILED: racy kernel not reported (is this a -fsanitize=thread build?)"; exit 1; fi
	@grep -q "ThreadSanitizer: data race" $(BUILD)/tests/emu_race_racy.log && grep -q "emu_test_kernels.cu" $(BUILD)/tests/emu_race_racy.log \
	  || { cat $(BUILD)/tests/emu_race_racy.log; echo "emu-race-check: FAILED: no data race located in the kernel"; exit 1; }
	@echo "emu-race-check: ok (clean kernels: no report; racy kernel: data race reported)"
