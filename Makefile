# beanrouter developer tasks. `make run` and `make test` do all their own setup.
# `make test` installs Debian's beanstalkd (the reference server) when missing and it can.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SRC    := beanrouter tests benchmarks
PYTEST_ARGS ?=
# The branch-coverage gate of the pure layers over tests/unit (`make coverage`; measured 84.7 %).
COVERAGE_MIN ?= 83
DATA   ?= .data
SHARDS ?= 3
PORT   ?= 11300

# The docker-compose cluster (compose/) and its fault tests (tests/cluster/). BACKEND=beanstalkd
# puts Debian's beanstalkd behind the proxy instead of the bundled server.
COMPOSE ?= $(shell docker-compose version >/dev/null 2>&1 && echo docker-compose || echo docker compose)
BACKEND ?= bundled
CLUSTER_FILES := -f compose/docker-compose.yml \
	$(if $(filter beanstalkd,$(BACKEND)),-f compose/docker-compose.beanstalkd.yml)
CLUSTER := $(COMPOSE) -p beanrouter $(CLUSTER_FILES)
CLUSTER_IMAGE ?= beanrouter:local

.PHONY: help venv peers run test unit coverage lint fmt bench clean distclean
.PHONY: cluster-images cluster-up cluster-down cluster-test

help:
	@echo "make run     start the main job: beanrouter cluster (3 shards + proxy) on 127.0.0.1:11300,"
	@echo "             persistent (binlogs under $(DATA)/); SHARDS=N PORT=P to change"
	@echo "make test    run the test suite (fetches the peer client suites into .peers/)"
	@echo "make unit    the pure layers' tests (tests/unit: protocol/, core/ and other pure helpers), seconds"
	@echo "make coverage  tests/unit with branch coverage of protocol/ and core/, failing under $(COVERAGE_MIN) %"
	@echo "make lint    ruff check, ruff format --check, mypy --strict, the layer contract"
	@echo "make fmt     ruff check --fix and ruff format"
	@echo "make bench   run benchmarks/server_vs_beanstalkd.py"
	@echo "make venv    create $(VENV) and install -e .[test,dev] (no-op when up to date)"
	@echo "make peers   fetch the pinned peer test suites into .peers/"
	@echo "make clean   remove caches, build output and .peers/; distclean also removes $(VENV)"
	@echo "make cluster-up      docker-compose cluster: 3 shards + proxy on 127.0.0.1 (BACKEND=beanstalkd)"
	@echo "make cluster-down    stop it and remove its containers and volumes"
	@echo "make cluster-test    build the images (offline) and run the fault tests (tests/cluster)"

venv: $(STAMP)

# Reinstalls only when pyproject.toml changes (or the venv is gone).
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "beanrouter needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) -V 2>&1)" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test,dev]'
	@touch $@

peers: venv
	@$(PY) tests/peers/fetch_peers.py --quiet

run: venv
	@echo "beanrouter cluster: $(SHARDS) shards (binlogs in $(DATA)/) behind 127.0.0.1:$(PORT); ^C stops it"
	$(VENV)/bin/beanrouter cluster -l 127.0.0.1 -p $(PORT) --shards $(SHARDS) -b $(DATA) -V

# The reference beanstalkd is installed first when missing and possible (root or passwordless
# sudo); otherwise the tests that compare with it skip, in one summary line (not under CI).
# pytest exits 5 when it collected no tests: that is a failure, and says so.
# The docker cluster tests (tests/cluster) run when a Docker engine answers (the images are built
# first, offline and cached); without one they skip with the reason, except under CI, where they fail.
test: venv peers
	@$(PY) tests/reference_server.py
	@compose/build-images.sh --if-engine
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

# The pure layers' tests: no servers, no network, no peers.
unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

coverage: venv
	$(PY) -m pytest tests/unit --cov=beanrouter/protocol --cov=beanrouter/core \
		--cov-report=term --cov-fail-under=$(COVERAGE_MIN) $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict $(SRC)
	$(PY) tests/check_layers.py

fmt: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	@test -f benchmarks/server_vs_beanstalkd.py || \
		{ echo "benchmarks/server_vs_beanstalkd.py does not exist yet" >&2; exit 1; }
	$(PY) benchmarks/server_vs_beanstalkd.py

cluster-images: venv
	compose/build-images.sh

# Starts the proxy only when this build has `beanrouter proxy`.
cluster-up: cluster-images
	@if docker run --rm $(CLUSTER_IMAGE) beanrouter proxy --help >/dev/null 2>&1; then \
		$(CLUSTER) up -d --no-build; \
	else \
		echo "note: this build has no 'beanrouter proxy' yet: starting the shards only"; \
		$(CLUSTER) up -d --no-build shard1 shard2 shard3; \
	fi
	@compose/wait-healthy.sh beanrouter
	@echo "shards on 127.0.0.1:11301-11303 (library: see compose/cluster.yaml); proxy on 127.0.0.1:11300;"
	@echo "its console on http://127.0.0.1:9300/ (read-only)"

cluster-down:
	$(COMPOSE) -p beanrouter -f compose/docker-compose.yml -f compose/docker-compose.beanstalkd.yml \
		down -v --remove-orphans

cluster-test: cluster-images
	BEANROUTER_DOCKER=1 BEANROUTER_CLUSTER_REPORT=docs/cluster.md \
		$(PY) -m pytest -m cluster tests/cluster $(PYTEST_ARGS)

clean:
	rm -rf .peers build dist .mypy_cache .ruff_cache .pytest_cache *.egg-info compose/wheels compose/debs
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
