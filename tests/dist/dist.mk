# Data-parallel checks under MPI (tests/dist), `make test-dist-emu`: the emulated NCCL itself
# (results, refusals, a mismatched call must abort), then the emulated CUDA backend's
# multi-rank path against the CPU backend's and that against one rank.
DIST_NP ?= 2
DIST_LINK = $(BUILD)/emu/backend_open.o $(BUILD)/libsaeforge_emu.a $(BUILD)/libsaeforge.a
$(BUILD)/tests/dist/%: $(BUILD)/tests/dist/%.o $(DIST_LINK)
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(filter %.a,$^) -o $@ $(LDLIBS)

.PHONY: test-dist-emu
test-dist-emu: $(BUILD)/tests/dist/nccl_emu_check $(BUILD)/tests/dist/dist_parity
	@sh tests/dist/run.sh $(DIST_NP) $(BUILD)/tests/dist/nccl_emu_check ok
	@if sh tests/dist/run.sh $(DIST_NP) $(BUILD)/tests/dist/nccl_emu_check mismatch \
	    >$(BUILD)/tests/dist/mismatch.log 2>&1; then \
	  cat $(BUILD)/tests/dist/mismatch.log; echo "test-dist-emu: FAILED: a mismatched all-reduce went through"; exit 1; fi
	@grep -q "the ranks disagree" $(BUILD)/tests/dist/mismatch.log \
	  || { cat $(BUILD)/tests/dist/mismatch.log; echo "test-dist-emu: FAILED: the mismatch was not named"; exit 1; }
	@echo "nccl-emu-check: mismatched call aborted as it must"
	@sh tests/dist/run.sh $(DIST_NP) $(BUILD)/tests/dist/dist_parity
