# Two commands for a fresh machine: `make run` (the embedded default study) and `make test`.
# Everything they need is installed here: the venv, torch (CPU wheel, pinned and installed
# in the same pip command as the rest so pip never pulls a CUDA build), the project.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The report test renders the HTML in headless Chromium (Debian's `chromium` package).
CHROMIUM := $(VENV)/.chromium-stamp
TORCH  := torch==2.13.0

IMAGE   ?= scaling-orch
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install run data-bpe run-bpe test test-fast test-stress test-faults-full lint bench image clean report-screenshot

$(STAMP): pyproject.toml Makefile
	@python3 -m venv --help >/dev/null 2>&1 || (apt-get update && apt-get install -y python3-venv)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH) -e '.[dev,notebook,sinks,data]'
	touch $(STAMP)

install: $(STAMP)

# Installed once per venv; as root, or through sudo where there is one.
$(CHROMIUM): $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=; [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null 2>&1 || SUDO=sudo; \
	  echo "installing chromium (for the report's browser test)"; \
	  $$SUDO apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "make: chromium is not installed and could not be" >&2; exit 1; }
	@touch $@

run: install
	$(VENV)/bin/orch submit plans/local.yaml

# plans/local-bpe.yaml's corpus: this Python's standard library source, tokenized by a
# 4,096-token byte-level BPE trained on it (9M training tokens, 3.3 bytes per token; about
# 35 s on 2 cores). Run again, it finds the shards done and only checks them.
data-bpe: install
	$(VENV)/bin/orch prepare "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" \
	  --out data/stdlib-bpe --train-bpe 4096 --val-frac 0.05

run-bpe: data-bpe
	$(VENV)/bin/orch submit plans/local-bpe.yaml

# Tests that `ray start` a cluster of their own run in a second pytest process, apart from
# the embedded Ray the first process hosts for the other tests. (A job submitted beside an
# embedded Ray used to hang: it held the head's default job-agent port. The cluster test
# now gives every port, and passes beside one; the split keeps the two Rays' load apart.)
test: install $(CHROMIUM)
	$(PY) -m pytest -m "not cluster"
	$(PY) -m pytest -m cluster

# The suite beside two busy processes, STRESS_RUNS times (tests/stress.py; not in CI).
# STRESS_CLONE=1 makes each run CI's own: a clean clone beside this one running .ci/run.
STRESS_RUNS ?= 1
test-stress: install $(CHROMIUM)
	$(PY) tests/stress.py --runs $(STRESS_RUNS) $(if $(STRESS_CLONE),--clean-clone)

test-fast: install $(CHROMIUM)
	$(PY) -m pytest -m "not slow and not cluster"

# The fault suite at full size (docs/reliability.md): 20 driver SIGKILLs instead of 8, and
# 10,000 fuzzed plans, 2,000 argument lists, 1,000 fit tables instead of 400/300/60. About
# 13 minutes on 2 cores (the small size: 7), so `make test` runs the small size.
test-faults-full: install
	FAULTS_FULL=1 $(PY) -m pytest tests/faults -s

lint: install
	$(VENV)/bin/ruff check orchestrator workers storage tests bench

bench: install
	$(PY) -m pip install --quiet $(TORCH) -e '.[dev,notebook,sinks,data,bench]'
	$(PY) bench/run_all.py

# The cluster image (deploy/Dockerfile); needs a Docker engine, which CI here lacks.
image:
	@docker info >/dev/null 2>&1 || { echo "make image: needs a running Docker engine (docker info failed)" >&2; exit 1; }
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t $(IMAGE):$(VERSION)-gpu .
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --build-arg VARIANT=cpu -t $(IMAGE):$(VERSION)-cpu .

# The report of `make run`'s study, and a screenshot of it as a reader sees it (full size
# beside the report; a small copy in docs/).
REPORT_EXP ?= experiments/local
report-screenshot: install $(CHROMIUM)
	$(VENV)/bin/orch report $(REPORT_EXP) -o $(REPORT_EXP)/report.html
	$(PY) -m orchestrator.report.browser $(REPORT_EXP)/report.html $(REPORT_EXP)/report.png \
	  --preview docs/report.png

clean:
	rm -rf $(VENV) experiments .pytest_cache
