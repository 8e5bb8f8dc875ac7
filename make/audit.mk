# Audit targets, included by the main Makefile (`-include make/*.mk`). docs/metrics.md section 5 explains them.
#
#   make audit-ipc1    DD-Ranking audit of the DC CIFAR-10 IPC1 set under ddranking-dc-cifar10@v1 (CI-sized:
#                      set, random, herding, k-center arms x 5 seeds; k-center = herding at IPC 1, so cached)
#   make audit-ipc10   the same for the IPC10 set (heavier: run it where time allows)
# Both resume from the per-seed run cache ($RD3KIT_HOME/runs). PY, RD3KIT and DATA come from the main Makefile.
# ENGINE=compiled runs every arm through the compiled engine (docs/speed.md); its seeds are cached apart.

AUDIT_PROTOCOL ?= ddranking-dc-cifar10@v1
ENGINE ?= per-seed
AUDIT_DIR ?= results
DC_SETS := $(DATA)/distilled/dc
AUDIT_SPLITS = --train $(DATA)/cifar10/train.npz --test $(DATA)/cifar10/test.npz

.PHONY: audit-ipc1 audit-ipc10

audit-ipc1 audit-ipc10: audit-ipc%:
	@test -f $(DC_SETS)/res_DC_CIFAR10_ConvNet_$*ipc.pt -a -f $(DATA)/cifar10/train.npz || \
	  { echo "audit-ipc$*: needs $(DC_SETS)/res_DC_CIFAR10_ConvNet_$*ipc.pt and $(DATA)/cifar10/*.npz (set DATA=...)"; exit 3; }
	mkdir -p $(AUDIT_DIR)
	$(RD3KIT) audit $(DC_SETS)/res_DC_CIFAR10_ConvNet_$*ipc.pt --select -1 --space normalized \
	  --protocol $(AUDIT_PROTOCOL) $(AUDIT_SPLITS) --engine $(ENGINE) --out $(AUDIT_DIR)/audit-dc-cifar10-ipc$*.json
