# One venv for the whole monorepo; packages are discovered (every folder with a pyproject.toml).
#   make demo        set up if needed, run every package's main entry point on its embedded data, print a summary
#   make test        set up if needed, run every package's default pytest suite (not slow)
#   make gpu-check   on a machine with CUDA: every package's `gpu` tests and benchmarks/gpu_check.py, one line each
#   make demo-<pkg> / test-<pkg> / test-slow / bench / clean
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PACKAGES := $(sort $(patsubst %/pyproject.toml,%,$(filter-out shared/pyproject.toml,$(wildcard */pyproject.toml))))
SUITES := shared $(PACKAGES)
STAMP := $(VENV)/.installed
DEMO_DIR := $(CURDIR)/.demo
GPU_DIR := $(CURDIR)/.gpu-check
GPU_PKG_TIMEOUT ?= 150
# the console command that `make demo` runs for a package: [tool.repro] demo in its pyproject.toml
demo_cmd = $$($(BIN)/python -c "import sys,tomllib; print(tomllib.load(open('$(1)/pyproject.toml','rb'))['tool']['repro']['demo'])")

.PHONY: setup demo test test-slow bench gpu-check clean $(addprefix demo-,$(PACKAGES)) $(addprefix test-,$(SUITES))

setup: $(STAMP)

# Re-runs only when a pyproject.toml or this Makefile changed: a second `make test` installs nothing.
$(STAMP): $(wildcard */pyproject.toml) Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	@# all packages in one resolver call (they pull repro-shared from ./shared), then shared as editable
	$(BIN)/python -m pip install -q $(TORCH_PINS) "numpy<2" \
		"repro-shared[test] @ file://$(CURDIR)/shared" $(foreach p,$(PACKAGES),-e "./$(p)[test]")
	$(BIN)/python -m pip install -q --no-deps -e ./shared
	$(BIN)/python -m pip check
	@touch $(STAMP)

demo: setup
	@rm -rf $(DEMO_DIR); mkdir -p $(DEMO_DIR); failed=""; \
	for p in $(PACKAGES); do \
		cmd="$(call demo_cmd,$$p)"; start=$$SECONDS; \
		echo "== $$p: $$cmd (log: .demo/$$p/demo.log)"; mkdir -p $(DEMO_DIR)/$$p; \
		if (cd $(DEMO_DIR) && $(BIN)/$$cmd hydra.run.dir=$(DEMO_DIR)/$$p) > $(DEMO_DIR)/$$p/demo.log 2>&1; \
		then echo "   done in $$((SECONDS - start)) s"; \
		else echo "   FAILED after $$((SECONDS - start)) s; last lines:"; tail -n 15 $(DEMO_DIR)/$$p/demo.log; failed="$$failed $$p"; fi; \
	done; \
	echo; $(BIN)/repro-summary $(addprefix $(DEMO_DIR)/,$(PACKAGES)); \
	if [ -n "$$failed" ]; then echo "demo failed for:$$failed"; exit 1; fi

$(addprefix demo-,$(PACKAGES)): demo-%: setup
	@cmd="$(call demo_cmd,$*)"; rm -rf $(DEMO_DIR)/$*; mkdir -p $(DEMO_DIR)/$*; echo "== $*: $$cmd"; \
	(cd $(DEMO_DIR) && $(BIN)/$$cmd hydra.run.dir=$(DEMO_DIR)/$*) 2>&1 | tee $(DEMO_DIR)/$*/demo.log; \
	$(BIN)/repro-summary $(DEMO_DIR)/$*

# Tests run with one intra-op thread, as they were measured (2-core CI): the exact-resume tests compare runs
# bit for bit, and a different thread count between a run and its resumed half changes float sums.
test test-slow $(addprefix test-,$(SUITES)): export OMP_NUM_THREADS ?= 1

# Runs every suite even if one fails, then fails if any did (pytest's "no tests collected" is a failure).
test: setup
	@failed=""; total=$$SECONDS; \
	for p in $(SUITES); do \
		echo "== pytest $$p"; start=$$SECONDS; \
		(cd $$p && $(BIN)/python -m pytest tests -m "not slow" -q -p no:cacheprovider) || failed="$$failed $$p"; \
		echo "   $$p: $$((SECONDS - start)) s"; \
	done; \
	echo "all suites: $$((SECONDS - total)) s"; \
	if [ -n "$$failed" ]; then echo "FAILED suites:$$failed"; exit 1; fi; echo "all suites passed"

$(addprefix test-,$(SUITES)): test-%: setup
	cd $* && $(BIN)/python -m pytest tests -m "not slow" -q -p no:cacheprovider

test-slow: setup
	@failed=""; for p in $(SUITES); do \
		echo "== pytest -m slow $$p"; \
		(cd $$p && $(BIN)/python -m pytest tests -m slow -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]) || failed="$$failed $$p"; \
	done; if [ -n "$$failed" ]; then echo "FAILED slow suites:$$failed"; exit 1; fi

bench: setup
	@for f in $(wildcard $(addsuffix /benchmarks/bench_*.py,$(PACKAGES))); do \
		echo "== $$f"; $(BIN)/python $$f || exit 1; \
	done

# One call for a session that is lent a GPU: per package, the `gpu`-marked tests, then its device-check script
# (CUDA paths vs their references, forward and backward, then its GPU benchmarks); logs in .gpu-check/<pkg>.log.
gpu-check: setup
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs CUDA: no GPU is visible here (CI skips the gpu tests)')"
	@rm -rf $(GPU_DIR); mkdir -p $(GPU_DIR); failed=""; total=$$SECONDS; \
	for p in $(SUITES); do \
		start=$$SECONDS; log=$(GPU_DIR)/$$p.log; \
		(cd $$p && timeout $(GPU_PKG_TIMEOUT) $(BIN)/python -m pytest tests -m gpu -q -p no:cacheprovider) > $$log 2>&1; rc=$$?; \
		case $$rc in 0) t=passed;; 5) t=none;; *) t="FAILED(rc=$$rc)"; failed="$$failed $$p";; esac; \
		b=none; \
		if [ -f $$p/benchmarks/gpu_check.py ]; then \
			echo "== $$p/benchmarks/gpu_check.py" >> $$log; \
			if (cd $$p && timeout $(GPU_PKG_TIMEOUT) $(BIN)/python benchmarks/gpu_check.py) >> $$log 2>&1; then b=passed; \
			else b=FAILED; failed="$$failed $$p"; fi; \
		fi; \
		echo "$$p: gpu tests $$t | gpu_check $$b | $$((SECONDS - start)) s | $$(grep -c '^{' $$log) JSON lines (log: .gpu-check/$$p.log)"; \
	done; \
	echo "gpu-check: $$((SECONDS - total)) s"; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(GPU_DIR) outputs multirun
	find . -name __pycache__ -type d -prune -exec rm -rf {} + ; find . -name "*.egg-info" -type d -prune -exec rm -rf {} +
