# Data-parallel parity under MPI (tests/dist): the emulated CUDA backend's multi-rank path (NCCL
# emulated over MPI) against the CPU backend's, and that against one rank. `make test-dist-emu`.
DIST_NP ?= 2
$(BUILD)/tests/dist/dist_parity: $(BUILD)/tests/dist/dist_parity.o $(BUILD)/emu/backend_open.o $(BUILD)/libsaeforge.a $(BUILD)/libsaeforge_emu.a
	$(CXX) $(LDFLAGS) $(filter %.o,$^) $(filter %.a,$^) -o $@ $(LDLIBS)

.PHONY: test-dist-emu
test-dist-emu: $(BUILD)/tests/dist/dist_parity
	@sh tests/dist/run.sh $(BUILD)/tests/dist/dist_parity $(DIST_NP)
