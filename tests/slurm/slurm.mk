# `make test-slurm`: submit/requeue tests against a real one-node Slurm on loopback (tests/slurm/).
# Installs Debian's slurmctld slurmd slurm-client munge when missing (root, as in CI).
.PHONY: test-slurm
test-slurm: $(BUILD)/saeforge
	@sh tests/slurm/run.sh $(BUILD)/saeforge
