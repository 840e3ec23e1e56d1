"""Log output: plain text or one JSON object per line, and the optional query log.

Why it exists: feddns logs one line per event worth knowing (a cluster's state
changing, a re-list, the bus connecting, a rejected message, a reload), never
one per query unless ``observe.query_log`` asks for it while debugging. Log
collectors read JSON better than text, so ``observe.log_format: json`` turns
each record into ``{"time", "level", "logger", "message", ...}``. Only the
handler feddns installs is ever reformatted, so an embedding program's (or
pytest's) logging is left alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Literal

from feddns import wire
from feddns.observe.counting import qtype_label

if TYPE_CHECKING:
    from feddns.dns.server import Handles

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

QUERY_LOGGER = "feddns.query"
"""The logger of per-query lines (``observe.query_log``)."""

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}

_installed: logging.Handler | None = None



class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single line of JSON."""
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter for ``observe.log_format``."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: int, fmt: LogFormat = "text") -> None:
    """Send feddns's logs to stderr at ``level`` in ``fmt`` (the ``serve`` command)."""
    global _installed
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    _installed = handler


def set_format(fmt: LogFormat) -> bool:
    """Switch the installed handler to ``fmt`` (a reload); False when none is installed."""
    if _installed is None:
        return False
    _installed.setFormatter(formatter(fmt))
    return True


def question_of(data: bytes) -> tuple[str, int] | None:
    """The question name (text, lowercase) and type of a query, if it is well formed."""
    if len(data) < 17:
        return None
    labels: list[str] = []
    pos = 12
    while pos < len(data):
        n = data[pos]
        if n == 0:
            if pos + 3 > len(data) - 1:
                return None
            qtype = (data[pos + 1] << 8) | data[pos + 2]
            return ".".join(labels).lower() + ".", qtype
        if n > wire.MAX_LABEL or pos + 1 + n > len(data):
            return None
        labels.append(data[pos + 1 : pos + 1 + n].decode("ascii", "backslashreplace"))
        pos += n + 1
    return None


RCODE_TEXT = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
              5: "REFUSED"}


class LoggingHandler:
    """A query handler that logs every query it answers (or drops), then the answer.

    The transports call it exactly as they call the handler (:class:`Handles`); the
    front memo is not given to the UDP listener meanwhile, so no query escapes it.
    """

    def __init__(self, handler: Handles) -> None:
        self.handler = handler
        self.log = logging.getLogger(QUERY_LOGGER)

    def handle_udp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer and log one datagram."""
        return self._logged(data, self.handler.handle_udp(data, addr), "udp", addr)

    def handle_tcp(self, data: bytes, addr: tuple[str, int] | None = None) -> bytes | None:
        """Answer and log one TCP message."""
        return self._logged(data, self.handler.handle_tcp(data, addr), "tcp", addr)

    def _logged(self, data: bytes, resp: bytes | None, transport: str,
                addr: tuple[str, int] | None) -> bytes | None:
        question = question_of(data)
        name, qtype = question if question is not None else ("-", 0)
        rcode = "dropped" if resp is None or len(resp) < 4 else RCODE_TEXT.get(
            resp[3] & 0xF, str(resp[3] & 0xF))
        client = f"{addr[0]}#{addr[1]}" if addr is not None else "-"
        type_text = qtype_label(qtype)
        if type_text == "other":
            type_text = f"TYPE{qtype}"
        self.log.info("query %s %s %s %s %s", client, transport, name, type_text, rcode,
                      extra={"client": client, "transport": transport, "qname": name,
                             "qtype": type_text, "rcode": rcode})
        return resp
