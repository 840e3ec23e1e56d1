"""The benchmarks and the README's make targets still run: a short smoke run of each.

Figures come from `make bench` on a quiet machine (bench/RESULTS.md); here nothing is
timed, so the test cannot flake on a busy CI machine, but a benchmark that rots fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.support import REPO

FIGURE = re.compile(r"^([a-z0-9-]+): (\S+)$", re.MULTILINE)


def run_bench(*args: str, timeout: float = 240) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return dict(FIGURE.findall(proc.stdout))


@pytest.mark.skipif(shutil.which("dnsperf") is None or shutil.which("knotd") is None,
                    reason="dnsperf and knot are installed by make test (scripts/apt-install)")
def test_the_knot_comparison_prints_every_figure() -> None:
    figures = run_bench("bench.perf_vs_knot", "--seconds", "1", "--runs", "1",
                        "--services", "100", "--clusters", "3")
    for name in ("feddns-qps", "knot-qps", "qps-ratio-vs-knot", "feddns-server-us-per-query",
                 "knot-server-us-per-query", "cpu-ratio-vs-knot", "p99-latency-ms-at-half-max",
                 "feddns-lost", "knot-lost"):
        assert name in figures, f"{name} missing from {sorted(figures)}"
    assert float(figures["feddns-qps"]) > 0 and float(figures["knot-qps"]) > 0


@pytest.mark.skipif(shutil.which("dnsperf") is None,
                    reason="dnsperf is installed by make test (scripts/apt-install)")
def test_the_ceiling_benchmark_prints_both_ceilings() -> None:
    figures = run_bench("bench.ceiling", "--seconds", "1", "--runs", "1")
    for name in ("ceiling-qps", "ceiling-reader-qps", "ceiling-server-us-per-query",
                 "ceiling-reader-server-us-per-query"):
        assert float(figures[name]) > 0, f"{name} missing from {sorted(figures)}"


def test_the_warm_start_benchmark_prints_its_figure() -> None:
    figures = run_bench("bench.warm_start", "--runs", "1", "--services", "100")
    assert float(figures["warm-start-seconds"]) > 0


def test_the_scale_benchmark_prints_its_figures() -> None:
    figures = run_bench("bench.scale", "--clusters", "2", "--services", "50",
                        "--endpoints", "2")
    for name in ("full-compile-seconds-1m", "recompile-one-service-ms",
                 "rss-mib-at-1m-endpoints", "scale-rss-bytes-per-endpoint"):
        assert name in figures


def test_the_kubernetes_source_benchmarks_print_their_figures() -> None:
    figures = run_bench("bench.k8s_programming", "--runs", "1", "--changes", "20",
                        "--warmup", "2", "--services", "5", "--endpoints", "3")
    assert float(figures["programming-latency-p99-ms"]) > 0
    figures = run_bench("bench.k8s_relist", "--runs", "1", "--relists", "1", "--services",
                        "10", "--endpoints", "10", "--baseline-seconds", "1",
                        # The client must see the new state after the re-list: on a busy
                        # machine its next queries can come a second later.
                        "--quiet-seconds", "2")
    assert "relist-loop-lag-max-ms" in figures
    figures = run_bench("bench.k8s_memory", "--runs", "1", "--clusters", "2", "--services",
                        "5", "--endpoints", "10", "--settle", "0.5")
    assert "rss-bytes-per-endpoint" in figures


def test_the_failover_benchmark_prints_its_figure() -> None:
    figures = run_bench("bench.failover", "--runs", "1")
    assert float(figures["failover-seconds"]) > 0


def test_the_broker_failover_benchmark_prints_its_figures() -> None:
    figures = run_bench("bench.bus_failover", "--runs", "1", "--timeout", "30")
    assert float(figures["broker-failover-seconds"]) > 0
    assert figures["broker-failover-runs"] == "1"


def test_the_bus_verification_benchmark_prints_both_schemes() -> None:
    figures = run_bench("bench.bus_verify", "--runs", "1", "--services", "50")
    assert float(figures["bus-verify-us-per-message"]) > 0
    assert float(figures["bus-verify-us-per-message-hmac"]) > 0


def test_make_bench_runs_as_the_readme_says() -> None:
    proc = subprocess.run(["make", "-s", "bench", "BENCH_ARGS=--seconds 1 --runs 1"], cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert float(dict(FIGURE.findall(proc.stdout))["demo-qps"]) > 0


def test_make_unit_runs_the_unit_tests() -> None:
    proc = subprocess.run(["make", "-s", "unit"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\d+ passed", proc.stdout)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="chromium and chromium-driver are installed by make test")
def test_the_page_benchmark_prints_its_figures() -> None:
    figures = run_bench("bench.ui", "--runs", "1", "--services", "300")
    assert float(figures["ui-first-paint-ms-300-services"]) > 0
    assert float(figures["ui-update-seconds-after-cluster-loss"]) > 0


@pytest.mark.skipif(shutil.which("dnsperf") is None or shutil.which("chromium") is None,
                    reason="dnsperf and chromium are installed by make test")
def test_the_knot_comparison_with_the_page_open_prints_the_page_cost() -> None:
    figures = run_bench("bench.perf_vs_knot", "--seconds", "1", "--runs", "1",
                        "--services", "100", "--clusters", "3", "--skip-knot", "--with-page")
    assert float(figures["feddns-server-us-per-query-page-open"]) > 0
    assert "page-cost-percent" in figures
@pytest.mark.skipif(shutil.which("unbound-control", path="/usr/sbin:/usr/bin:/sbin") is None,
                    reason="unbound is installed by make test (scripts/apt-install)")
def test_the_weights_through_unbound_benchmark_prints_its_figures() -> None:
    figures = run_bench("bench.weighted_unbound", "--fills", "20", "--runs", "1")
    for name in ("weighted-share-error-percent-through-unbound",
                 "weighted-share-error-points-through-unbound",
                 "ordered-share-error-percent-through-unbound"):
        assert name in figures, f"{name} missing from {sorted(figures)}"


def test_the_capacity_spill_benchmark_prints_its_figures() -> None:
    figures = run_bench("bench.capacity_spill", "--queries", "30", "--runs", "1")
    for name in ("capacity-spill-overload-percent", "capacity-spill-kept-percent",
                 "nearest-tier-overload-percent"):
        assert name in figures, f"{name} missing from {sorted(figures)}"
