# edgefl developer and packaging entry points. `make demo` and `make test` work
# on a fresh Debian 12: they create .venv themselves.

PYTHON ?= python3
comma := ,
VENV ?= .venv
EXTRAS ?= dev,torch,tensorflow,litert,report,export,simulation
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgefl-$(subst $(comma),-,$(EXTRAS))

PYTEST_ARGS ?=

.PHONY: demo test test-tools test-fast lint test-faults test-cpus venv clean default-config deb deb-lock lint-deb check-deb litert-models \
	bench-venv bench-rounds

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap-venv
	PYTHON=$(PYTHON) scripts/bootstrap-venv $(VENV) $(EXTRAS)
	touch $@

# `make demo`: its own venv with edgefl and one backend only (BACKEND=litert, the lightest that
# trains the demo task; BACKEND=torch or tensorflow for those, torch as its CPU-only build),
# pip's progress shown. `make test` still builds .venv with everything it tests.
BACKEND ?= litert
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.edgefl-demo-$(BACKEND)
DEMO_ARGS ?=

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/edgefl demo $(DEMO_ARGS)

$(DEMO_STAMP): pyproject.toml scripts/bootstrap-venv
	rm -f $(DEMO_VENV)/.edgefl-demo-*
	PROGRESS=1 TORCH_CPU_ONLY=1 PYTHON=$(PYTHON) scripts/bootstrap-venv $(DEMO_VENV) $(BACKEND)
	touch $@

# `make bench-rounds`: bench/bench_rounds.py, rounds side by side (edgefl with Flower's stock
# executor, with the warm client, and plain Flower; per backend), exit 1 when a target of issue 12
# is missed. It runs under .venv-bench, the boards' packages (bench/board-requirements.txt: torch's
# CPU-only build, as on a board, not PyPI's CUDA one), built once. BENCH_ARGS passes arguments,
# e.g. BENCH_ARGS='--task digits --rounds 2 --backends litert' for a quick look.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.edgefl-bench
BENCH_ARGS ?=
# Where torch==2.13.0+cpu comes from when pip does not already find it (a pip --find-links page).
TORCH_CPU_FIND_LINKS ?= https://download.pytorch.org/whl/cpu/torch/

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): pyproject.toml bench/board-requirements.txt
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "make bench-venv: needs Python >= 3.11 with venv (apt-get install python3-venv)" >&2; exit 69; }
	rm -f $(BENCH_STAMP)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --retries 1 \
		--find-links $(TORCH_CPU_FIND_LINKS) -r bench/board-requirements.txt -e .
	touch $@

bench-rounds: $(BENCH_STAMP)
	PYTHONPATH=$(CURDIR) $(BENCH_VENV)/bin/python bench/bench_rounds.py $(BENCH_ARGS)

# All checks: lint (ruff and mypy), then the pytest suite, LiteRT's numerics on the other CPU kinds,
# the fault scenarios, then (as root, which systemd-nspawn needs) the system test of the .debs under a
# real systemd. `make test-fast` is the pytest suite alone.
test: venv test-tools
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-fast
	@$(MAKE) --no-print-directory test-cpus
	@$(MAKE) --no-print-directory test-faults
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-system; \
	else echo "make test: test-system skipped: it needs root (systemd-nspawn); run sudo make test-system" >&2; fi

# Debian's chromium (the report's browser test) as root where apt-get is, and promtool (package
# prometheus) unpacked from its .deb into build/tools: installing the package would start a Prometheus
# server on this machine. The tests that need them skip, naming the package, without them.
PROMTOOL_DIR := build/tools/prometheus
test-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
		  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
		       apt-get install -y -q --no-install-recommends chromium >/dev/null; }; } \
		|| echo "make test: chromium not installed; the report's browser test will skip" >&2; fi
	@if ! command -v promtool >/dev/null && [ ! -x $(PROMTOOL_DIR)/usr/bin/promtool ] && command -v apt-get >/dev/null; then \
		mkdir -p $(PROMTOOL_DIR) && cd $(PROMTOOL_DIR) && rm -f prometheus_*.deb && \
		{ apt-get download -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
		  apt-get download -q prometheus >/dev/null; }; } && dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb \
		|| echo "make test: promtool not unpacked; the Prometheus textfile test will skip" >&2; fi

test-fast: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff, then mypy, as pyproject.toml configures them ([tool.ruff], [tool.mypy]: strict on edgefld/).
lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

# LiteRT's training numerics on every kind of CPU the product runs on (tests/backends/cpu_kinds.py:
# x86-64 without AVX-512 and the boards' aarch64 cores under qemu-user); prints a table (also
# build/cpu-kinds-table.md). Needs root; skipped without it.
test-cpus: venv
	$(PY) -m pytest -v -s -m cpus tests/backends/test_litert_cpu_kinds.py $(PYTEST_ARGS)

# Fault scenarios (tests/faults): real daemons killed, partitioned, out of disk, fed corrupt
# state; prints a table (also build/faults-table.md). The partition and full-disk scenarios
# need root (network namespaces, tmpfs mounts) and are skipped without it.
test-faults: venv
	$(PY) -m pytest -v -s -m faults tests/faults $(PYTEST_ARGS)

# Regenerate the shipped etc/edgefl.toml from the schema (a test checks they match).
default-config: venv
	$(VENV)/bin/edgefl default-config > etc/edgefl.toml

# Rebuild the LiteRT training models (edgefld/backends/litert_models/*.tflite + manifest.json)
# with TensorFlow (tools/litert_build.py: a build tool, not shipped); boards only read them.
# A test checks the shipped files match a rebuild.
LITERT_BUILD_VENV ?= $(VENV)
litert-models:
	@$(LITERT_BUILD_VENV)/bin/python -c "import tensorflow" 2>/dev/null || { echo "make litert-models: needs TensorFlow in $(LITERT_BUILD_VENV) (make venv EXTRAS=dev,tensorflow, or LITERT_BUILD_VENV=...)" >&2; exit 69; }
	PYTHONPATH=$(CURDIR) $(LITERT_BUILD_VENV)/bin/python tools/litert_build.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(BENCH_VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache

# ---- Debian packages (packaging/README.md) ----------------------------------
# make deb [ARCH=arm64] [DEB_REVISION=1]: dist/edgefl_<ver>_<arch>.deb and
# dist/edgefl-backend-{torch,litert}_<ver>_<arch>.deb, built on this host for any ARCH.
ARCH ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_REVISION ?=
PKGTOOLS := build/pkgtools
DEB_VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' edgefld/__init__.py)$(if $(DEB_REVISION),-$(DEB_REVISION))
BACKEND_PACKAGES := edgefl-backend-torch edgefl-backend-litert
DEBS = dist/edgefl_$(DEB_VERSION)_$(ARCH).deb $(foreach p,$(BACKEND_PACKAGES),dist/$(p)_$(DEB_VERSION)_$(ARCH).deb)

$(PKGTOOLS)/.stamp: packaging/build-requirements.txt
	rm -rf $(PKGTOOLS)
	$(PYTHON) -m venv $(PKGTOOLS) || { echo "make deb: needs Python >= 3.11 with venv (apt-get install python3-venv)" >&2; exit 69; }
	$(PKGTOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r packaging/build-requirements.txt
	touch $@

deb: $(PKGTOOLS)/.stamp
	DEB_REVISION=$(DEB_REVISION) $(PKGTOOLS)/bin/python packaging/build_deb.py build --arch $(ARCH)
	$(PKGTOOLS)/bin/python packaging/summarize.py $(DEBS)

# Re-resolve packaging/locks/$(ARCH).json (needs PyPI): after a dependency or backend pin changes.
deb-lock: $(PKGTOOLS)/.stamp
	$(PKGTOOLS)/bin/python packaging/build_deb.py lock --arch $(ARCH)

# lintian (apt-get install lintian) on the built packages: fails on any error. Warnings
# are shown too (there are none); LINTIAN_ARGS=--display-info adds the informational tags.
LINTIAN_ARGS ?=
lint-deb:
	@for deb in $(DEBS); do [ -f $$deb ] || { echo "lint-deb: $$deb missing: run make deb ARCH=$(ARCH)" >&2; exit 1; }; done
	lintian --fail-on error $(LINTIAN_ARGS) $(DEBS)

# Structural checks of the built packages (architecture, ELF machines, wheel tags, scripts).
check-deb:
	$(PYTHON) packaging/check_deb.py $(DEBS)

# ---- System test (tests/system/deb_in_nspawn.py) ---------------------------------------
# The .debs under a real systemd: a Debian 12 rootfs booted with systemd-nspawn (cached under
# ${EDGEFL_CACHE:-/var/cache/edgefl-test}); install, units, kill/watchdog/reboot, upgrade,
# purge. Needs root; logs in build/system-test/.
.PHONY: test-system
test-system:
	@[ "$$(id -u)" = 0 ] || { echo "make test-system: needs root (systemd-nspawn, overlay mounts)" >&2; exit 77; }
	$(MAKE) deb
	$(PYTHON) tests/system/deb_in_nspawn.py --arch $(ARCH) --debs $(DEBS)
