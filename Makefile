# feddns task runner. The two commands a new user needs:
#   make demo   - set up and run feddns on the embedded demo (127.0.0.1:5353, UDP+TCP)
#   make test   - set up (Python venv, Debian test tools) and run lint, types and tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the tests use: dig (bind9-dnsutils), mosquitto (the MQTT bus tests),
# unbound and dnsmasq (real resolvers in front of feddns), iproute2 (network namespaces),
# gcc and musl-tools (getaddrinfo built against glibc and against musl, as in Alpine images).
# dnsperf/resperf and knot (the reference server) run the benchmarks; the tests smoke-run them.
# chromium and chromium-driver run the federation page's browser tests (Selenium); prometheus
# (with promtool) checks the alert rules and scrapes a running feddns in a test.
TEST_DEBS  := bind9-dnsutils mosquitto unbound dnsmasq-base iproute2 gcc musl-tools dnsperf knot \
              chromium chromium-driver prometheus
# axe-core, the accessibility checker the browser tests run, from the npm registry.
AXE_CORE   := axe-core@4.14.1
BENCH_DEBS := dnsperf knot

.PHONY: demo test venv system-deps test-assets bench-deps lint type fmt unit bench clean

demo: venv
	$(BIN)/feddns serve

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $@

# Installs missing Debian packages with apt-get (as root, or through sudo).
system-deps:
	@PKGS="$(TEST_DEBS)" ./scripts/apt-install

test-assets:
	@[ -f .cache/axe-core/node_modules/axe-core/axe.min.js ] || npm install --silent --no-audit \
		--no-fund --prefix .cache/axe-core $(AXE_CORE) >/dev/null

bench-deps:
	@PKGS="$(BENCH_DEBS)" ./scripts/apt-install

lint: venv
	$(BIN)/ruff check feddns tests bench
	$(BIN)/lint-imports

type: venv
	$(BIN)/mypy feddns

unit: venv
	$(BIN)/python -m pytest tests/unit -q

test: system-deps test-assets venv lint type
	$(BIN)/python -m pytest -q

fmt: venv
	$(BIN)/ruff check --fix feddns tests bench

# The first throughput figure; the other benchmarks and their commands are listed in
# bench/RESULTS.md. BENCH_ARGS passes options (the test suite uses a one-second run).
bench: bench-deps venv
	$(BIN)/python -m bench.demo_qps $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache
