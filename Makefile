# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SFCOMP := $(VENV)/bin/sfcomp
DEMO_POOL ?= data/demo
DEMO_WORK ?= work/demo
DEMO_SIZE ?= 60000
ROUNDS ?= 3
STEPS ?=
# what make demo passes beyond the library's defaults (named in its first line)
comma := ,
DEMO_OVERRIDES = $(if $(STEPS), --steps $(STEPS))$(if $(filter-out 3,$(ROUNDS)), --rounds $(ROUNDS))
POOL ?= $(DEMO_POOL)
EVAL ?= $(DEMO_POOL)/eval
# the sweep that sets `sfcomp run`'s defaults: two 20k pools with other noise mixes than the demo pool's
SWEEP_DIR ?= data/sweep
SWEEP_POOLS ?= $(SWEEP_DIR)/misaligned60 $(SWEEP_DIR)/memorizable50
APT_PACKAGES ?= dataset-fashion-mnist wordnet-base tuxpaint-stamps-default
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install demo test lint bench sweep bench-formats clean

install: $(VENV)/.installed

# torch/torchvision first, pinned to the releases on this machine's disk (pip's constraint file caps them).
$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	@# DataComp's eval metrics: clip_benchmark 1.4.0 as DataComp pins it; its metadata pins torch<2, so no deps
	$(PY) -m pip install -q --no-deps clip_benchmark==1.4.0
	@# Debian data packages: Fashion-MNIST (the demo pool's images), WordNet 3.0 (text_based baseline) and Tux Paint stamps (the RGB pool, and its test on the real package)
	@if command -v dpkg >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    (apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing) || \
	    echo "warning: could not install Debian packages: $$missing (make-pool / text_based will say what is missing)"; \
	  fi; fi
	touch $@

demo: install
	@test -f $(DEMO_POOL)/.complete || $(SFCOMP) make-pool --source fashion-mnist --out $(DEMO_POOL) --size $(DEMO_SIZE)
	@echo "make demo: sfcomp run with the library's defaults$(if $(strip $(DEMO_OVERRIDES)),$(comma) overriding$(DEMO_OVERRIDES))"
	$(SFCOMP) run --pool $(DEMO_POOL) --workdir $(DEMO_WORK) --rounds $(ROUNDS)$(if $(STEPS), --steps $(STEPS))
	$(SFCOMP) export-subset --scores $(DEMO_WORK)/final_scores.npy --top-frac 0.3 --random-frac 0.0 -o $(DEMO_WORK)/sfcomp_top30.npy
	$(SFCOMP) validate-subset $(DEMO_WORK)/sfcomp_top30.npy --pool $(DEMO_POOL)

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/experiments/run_all.py --pool $(POOL) --eval $(EVAL)

sweep: install
	@test -f $(SWEEP_DIR)/misaligned60/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/misaligned60 --size 20000 \
	  --noise 0.6 --noise-mix misaligned --seed 1 --direct
	@test -f $(SWEEP_DIR)/memorizable50/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/memorizable50 --size 20000 \
	  --noise 0.5 --noise-mix memorizable --seed 2 --direct
	$(PY) bench/experiments/sweep_mix.py $(foreach p,$(SWEEP_POOLS),--pool $(p))

# issue 12's step sweep: fixed 50/100/200/400 steps a model against `--stop heldout`, on the demo pool, the two
# sweep pools, a 70%-noise pool whose noise is mostly misaligned captions, and a pool twice the demo's size
# (Fashion-MNIST has 70k images: the rest are perturbed reposts), each arm with loop seeds 0, 1 and 2. Slow on a
# CPU (5 arms x 3 seeds x 3 rounds a pool: roughly 20-30 hours on 2 cores); docs/bench/sweep_steps.md has what ran.
STEP_POOLS ?= $(DEMO_POOL) $(SWEEP_POOLS) $(SWEEP_DIR)/misaligned70 $(SWEEP_DIR)/demo2x
.PHONY: sweep-steps
sweep-steps: install
	@test -f $(DEMO_POOL)/.complete || $(SFCOMP) make-pool --source fashion-mnist --out $(DEMO_POOL) --size $(DEMO_SIZE)
	@test -f $(SWEEP_DIR)/misaligned60/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/misaligned60 --size 20000 \
	  --noise 0.6 --noise-mix misaligned --seed 1 --direct
	@test -f $(SWEEP_DIR)/memorizable50/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/memorizable50 --size 20000 \
	  --noise 0.5 --noise-mix memorizable --seed 2 --direct
	@test -f $(SWEEP_DIR)/misaligned70/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/misaligned70 --size 20000 \
	  --noise 0.7 --noise-mix default --seed 3 --direct
	@test -f $(SWEEP_DIR)/demo2x/.complete || $(SFCOMP) make-pool --out $(SWEEP_DIR)/demo2x --size 120000 --seed 4 --direct
	$(PY) bench/experiments/sweep_steps.py $(foreach p,$(STEP_POOLS),--pool $(p))

# The RGB pool with human-written captions: Tux Paint's stamps (Debian tuxpaint-stamps-default, installed by
# make-pool when missing and run as root), shards at 128 px: the stamps' median side is 150 px, so 128 keeps
# their real detail and enlarges 41% of them (224 would enlarge 69%); every stamp not held out (636 samples).
RGB_POOL ?= data/tuxpaint
RGB_IMAGE_SIZE ?= 128
.PHONY: rgb-pool
rgb-pool: install
	@test -f $(RGB_POOL)/.complete || $(SFCOMP) make-pool --source tuxpaint --out $(RGB_POOL) \
	  --image-size $(RGB_IMAGE_SIZE)

bench-formats: install
	$(PY) bench/perf/bench_uids.py
	$(PY) bench/perf/bench_validate.py

clean:
	rm -rf $(VENV) work .pytest_cache

# ---- GPU check (scripts/gpu_check.py; docs/BENCHMARKS.md "GPU check") -------------------------------------
# Here: `make gpu-wheels`; on the GPU machine (device tool, carry [".gpu-wheels"]): `make gpu-check`.
# The wheels the GPU machine's Python (3.12, torch 2.11) lacks, pinned to this venv's versions, no dependencies
# resolved (each is named); wandb (20 MB, ~10 more dependencies) is left out: img2dataset only imports it.
GPU_WHEELS_DIR ?= .gpu-wheels
GPU_WHEELS ?= open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==0.2.86 braceexpand==0.1.7 \
  img2dataset==1.47.0 albumentations==1.4.24 albucore==0.0.23 stringzilla==5.3.2 simsimd==6.5.16 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  exifread-nocycle==3.0.1 fire==0.7.1 termcolor==3.3.0
GPU_CHECK_PY ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: gpu-wheels gpu-check
gpu-wheels:
	$(GPU_CHECK_PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d $(GPU_WHEELS_DIR) $(GPU_WHEELS)
	@# the pool's source files travel too (the GPU machine has no Debian package and no network)
	mkdir -p $(GPU_WHEELS_DIR)/fashion-mnist && cp $(FASHION_MNIST_DIR)/*.gz $(GPU_WHEELS_DIR)/fashion-mnist/
	@echo "$(GPU_WHEELS_DIR): wheels $$(du -ch $(GPU_WHEELS_DIR)/*.whl | tail -1 | cut -f1), in all $$(du -sh $(GPU_WHEELS_DIR) | cut -f1)"

gpu-check:
	$(GPU_CHECK_PY) scripts/gpu_check.py
