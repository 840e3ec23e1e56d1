"""Command-line entry points: ``serve``, ``check-config``, ``status``, ``keygen`` and more.

Why it exists: operators meet feddns here first, so every failure a user can
cause (a bad file, a busy port) ends in a one-paragraph explanation and a
non-zero exit code, never a traceback; the server never starts on an invalid
config, and a reload (SIGHUP) with an invalid one keeps the running config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from feddns import STARTED, __version__
from feddns.config import Settings, load_settings, parse_host_port
from feddns.errors import ConfigError
from feddns.observe import logs

log = logging.getLogger("feddns")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def default_config() -> Path:
    """``config/demo.yaml`` of the checkout (or the current folder) feddns runs from."""
    here = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"
    return here if here.exists() else Path("config/demo.yaml")


def _listen_arg(value: str) -> str:
    try:
        parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def _server_arg(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from exc
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be above 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render the CLI reference)."""
    parser = argparse.ArgumentParser(
        prog="feddns",
        description=(
            "Authoritative cross-cluster service-discovery DNS server: answers "
            "<svc>.<ns>.svc.clusterset.local for services of every member cluster."
        ),
    )
    parser.add_argument("--version", action="version", version=f"feddns {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the DNS server in the foreground")
    serve.add_argument(
        "-c", "--config", type=Path, default=None,
        help="config file (default: config/demo.yaml, the embedded demo)",
    )
    serve.add_argument(
        "--listen", action="append", type=_listen_arg, metavar="HOST:PORT",
        help="serve on this address instead of the config's dns.listen (repeatable)",
    )
    serve.add_argument(
        "--observe-listen", type=_listen_arg, metavar="HOST:PORT", default=None,
        help="serve /metrics, /healthz, /readyz and /debug here instead of the config's"
             " observe.listen",
    )
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])

    check = sub.add_parser(
        "check-config", help="validate a config file and every file it names",
        description="Validates the config and the files it names (static data files,"
                    " kubeconfigs and the token, certificate and CA files they name, the bus's"
                    " key, password and TLS files, the observe token file) and prints every"
                    " problem at once. `serve`"
                    " and a reload run the same checks and refuse what fails them.")
    check.add_argument("config", type=Path, help="the config file to check")
    check.add_argument("--schema-only", action="store_true",
                       help="check the config file alone, not the files it names (for"
                            " validating a config away from where it runs)")

    status = sub.add_parser(
        "status", help="show a running instance's clusters and bus; exit 0 if all fresh",
        description="Reads a running feddns's /debug view. Exit status: 0 every cluster"
                    " fresh (and the bus connected), 1 degraded, 2 unreachable.",
    )
    status.add_argument("--url", default=None,
                        help="the instance's observe.listen URL (default: from -c, else"
                             " http://127.0.0.1:9154)")
    status.add_argument("-c", "--config", type=Path, default=None,
                        help="take the URL from this config's observe.listen")
    status.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    status.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                        help="the bearer token /debug requires off loopback (default: the"
                             " config's observe.token_file with -c)")

    core = sub.add_parser(
        "corefile", help="print the CoreDNS server block that forwards the origins to feddns",
        description="Prints a Corefile server block for the cluster DNS (CoreDNS) or, with"
                    " --nodelocal, for NodeLocal DNSCache; see docs/operations.md.",
    )
    core.add_argument("--server", action="append", required=True, metavar="ADDR[:PORT]",
                      help="a feddns address to forward to (repeatable, at most 15)")
    core.add_argument("--origin", action="append", default=None, metavar="ZONE",
                      help="a zone to forward (repeatable; default: the config's origins,"
                           " else clusterset.local)")
    core.add_argument("-c", "--config", type=Path, default=None,
                      help="take the origins and the record TTL from this config")
    core.add_argument("--nodelocal", action="store_true",
                      help="the NodeLocal DNSCache variant (bind, force_tcp)")
    core.add_argument("--bind", action="append", default=None, metavar="ADDR",
                      help="with --nodelocal: addresses to bind (default 169.254.20.10; add"
                           " the kube-dns service IP in iptables mode)")

    keygen = sub.add_parser(
        "keygen", help="write an Ed25519 key pair that signs one cluster's bus messages",
        description="Writes CLUSTER.key (the private key, mode 0600: for the instances that"
                    " source CLUSTER only, e.g. a Secret, named in bus.private_keys) and"
                    " CLUSTER.pub (the public key: for every instance that accepts CLUSTER,"
                    " e.g. a ConfigMap mounted as bus.public_keys_dir). Never overwrites a"
                    " file. For a key roll, write the new pair with --label.")
    keygen.add_argument("cluster", help="the cluster id the key signs for (clusters[].name)")
    keygen.add_argument("--out-dir", type=Path, default=Path("."), metavar="DIR",
                        help="where to write the two files (default: the current folder;"
                             " created with mode 0700 if missing)")
    keygen.add_argument("--label", default=None,
                        help="name the pair CLUSTER_LABEL.key/.pub (a second key while"
                             " rolling, e.g. --label 2027-06)")

    soak = sub.add_parser(
        "soak", help="verify a running instance's answers against its /debug view, in rounds",
        description="Resolves every service and headless endpoint name of a running feddns"
                    " over UDP and TCP in rounds, checks each answer against the service's"
                    " plan from /debug, and tracks latency, memory, file descriptors and"
                    " tasks. Exit status: 0 clean, 1 a mismatch or too much growth, 2 the"
                    " target could not be read.",
    )
    soak.add_argument("--server", type=_server_arg, default=("127.0.0.1", 53),
                      metavar="HOST:PORT", help="the instance's DNS address (default"
                                                " 127.0.0.1:53; IPv6 as [ADDR]:PORT)")
    soak.add_argument("--url", default="http://127.0.0.1:9154",
                      help="the instance's observe.listen URL (default http://127.0.0.1:9154)")
    soak.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                      help="the bearer token of observe.token_file (needed off loopback)")
    soak.add_argument("--duration", type=_positive, default=None, metavar="S",
                      help="seconds to run (default: until interrupted)")
    soak.add_argument("--churn", type=Path, default=None, metavar="FILE",
                      help="a static data file of the instance to change between rounds")
    soak.add_argument("--interval", type=_positive, default=1.0, metavar="S",
                      help="seconds between rounds (after a change with --churn)"
                           " (default 1)")
    soak.add_argument("--origin", default="clusterset.local.",
                      help="the origin to ask names under (default clusterset.local.)")
    soak.add_argument("--timeout", type=_positive, default=2.0, metavar="S",
                      help="seconds to wait for one answer (default 2)")
    soak.add_argument("--max-rss-growth", type=float, default=5.0, metavar="PERCENT",
                      help="fail when resident memory grew more than this (default 5)")
    soak.add_argument("--max-p99-drift", type=float, default=20.0, metavar="PERCENT",
                      help="fail when p99 latency grew more than this (default 20)")
    return parser


def status(args: argparse.Namespace) -> int:
    """``feddns status``: report on a running instance."""
    from feddns.observe.status import DEFAULT_URL, EXIT_UNREACHABLE, run_status, url_from_listen

    url = args.url
    token_file = args.token_file
    if args.config is not None:
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            return EXIT_UNREACHABLE
        token_file = token_file or settings.observe.token_file
        if url is None and settings.observe.listen is None:
            print(f"{args.config}: observe.listen is off; nothing to ask", file=sys.stderr)
            return EXIT_UNREACHABLE
        if url is None and settings.observe.listen is not None:
            url = url_from_listen(settings.observe.listen)
    return run_status(url or DEFAULT_URL, sys.stdout, sys.stderr, timeout=args.timeout,
                      token_file=token_file)


def corefile(args: argparse.Namespace) -> int:
    """``feddns corefile``: print the CoreDNS stanza."""
    from feddns.observe.corefile import NODELOCAL_ADDRESS, render_corefile

    origins = args.origin
    cache_ttl = 5
    if args.config is not None:
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            return EXIT_CONFIG
        origins = origins or [o.name for o in settings.origins]
        cache_ttl = settings.dns.record_ttl
    try:
        text = render_corefile(args.server, origins or ["clusterset.local."],
                               nodelocal=args.nodelocal,
                               bind=args.bind or [NODELOCAL_ADDRESS], cache_ttl=cache_ttl)
    except ValueError as exc:
        print(f"feddns corefile: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(text)
    return EXIT_OK


def check_config(path: Path, *, schema_only: bool = False) -> int:
    """Validate a config and the files it names; print every problem."""
    from feddns.checking import load_checked

    try:
        settings = load_checked(path, schema_only=schema_only)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: OK ({len(settings.clusters)} cluster(s), "
          f"origins {', '.join(o.name for o in settings.origins)}"
          f"{'; files not checked' if schema_only else ''})")
    return EXIT_OK


def keygen(args: argparse.Namespace) -> int:
    """``feddns keygen``: write a key pair for one cluster (never overwriting a file)."""
    from feddns.sources.mqtt.signatures import KeyFileError, write_key_pair

    try:
        private, public, key_id = write_key_pair(args.out_dir, args.cluster, label=args.label)
    except KeyFileError as exc:
        print(f"feddns keygen: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {private} (private, mode 0600: only on the instances that source"
          f" {args.cluster}, listed in their bus.private_keys)\n"
          f"wrote {public} (public: on every instance that accepts {args.cluster}, in"
          f" bus.public_keys or bus.public_keys_dir)\n"
          f"key id {key_id}")
    return EXIT_OK


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings, listen: list[str] | None, config_path: Path | None = None, *,
          observe_listen: str | None = None) -> int:
    """Run until SIGINT/SIGTERM, reloading ``config_path`` on SIGHUP; return the exit code."""
    from feddns.app import App

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        app = App(settings, listen=listen, config_path=config_path,
                  observe_listen=observe_listen, started=STARTED)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, app.request_reload)
        try:
            await app.run(stop)
        except OSError as exc:
            log.error("cannot listen: %s (is the port in use, or privileged?)", exc)
            return EXIT_RUNTIME
        return EXIT_OK

    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``feddns`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "check-config":
        return check_config(args.config, schema_only=args.schema_only)
    if args.command == "status":
        return status(args)
    if args.command == "corefile":
        return corefile(args)
    if args.command == "keygen":
        return keygen(args)
    if args.command == "soak":
        from feddns.soak import run as run_soak

        return run_soak(args)
    logs.configure(getattr(logging, args.log_level.upper()))
    path = args.config or default_config()
    from feddns.checking import load_checked

    try:
        settings = load_checked(path)  # what check-config accepts, nothing less
    except ConfigError as exc:
        log.error("refusing to start: the config is invalid\n%s", exc.render())
        return EXIT_CONFIG
    logs.set_format(settings.observe.log_format)
    return serve(settings, args.listen, path, observe_listen=args.observe_listen)


if __name__ == "__main__":
    sys.exit(main())
