# SEER Label: `make serve` (set up, build sample data, run the server) and `make test` (set up, lint, test);
# `make test-fast`: the unit tests without servers or slow tests, the inner loop.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
# test workers for `make test` (pytest-xdist; each takes whole test modules, the long ones first)
TEST_WORKERS ?= 2

.PHONY: setup system-deps serve sample-data test test-fast lint docs bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages, best effort (root or passwordless sudo): Colin27 + AAL from mricron-data (sample data);
# postgresql, whose server the tests start on 127.0.0.1 in a temporary folder (and stop) for the shared-state tests;
# orthanc with its DICOMweb (and GDCM) plugins, which the PACS tests start the same way; chromium for the OHIF test;
# nginx-light, which the deployment test runs in front of two servers (deploy/nginx-seer-label.conf).
system-deps:
	@missing=""; \
	[ -f /usr/share/mricron/templates/aal.nii.gz ] || missing="$$missing mricron-data"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v Orthanc >/dev/null 2>&1 || missing="$$missing orthanc"; \
	[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing="$$missing orthanc-dicomweb orthanc-gdcm"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  $$SUDO apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
	  ($$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1) || \
	  echo "note: could not install$$missing; run: sudo apt-get install$$missing"; \
	fi

setup: $(STAMP) system-deps

sample-data: setup
	$(PY) main.py sample-data

serve: setup
	HF_HUB_OFFLINE=1 $(PY) main.py serve --port $(PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# OMP_NUM_THREADS=1: one OpenMP thread per process, so two workers' torch and NumPy do not oversubscribe the cores
# (SimpleITK's registration threads are not OpenMP and keep every core)
test: setup
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# no servers (MONAI Label, Orthanc, PostgreSQL, Chromium) and no test marked slow; fixtures still build the sample data
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not server and not slow"

# the settings table of docs/configuration.md, from seer.settings.KEYS
docs: $(STAMP)
	$(PY) docs/gen_configuration.py

bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
