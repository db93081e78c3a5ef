"""The demo app's knobs: every behaviour a rollout scenario wants to provoke is one flag.

Each flag can also come from the environment as ``DEMOAPP_<FLAG>`` (dashes become
underscores), because a Pod spec sets env more naturally than it rewrites args; a flag given on
the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class WarmupMode(StrEnum):
    HTTP_503 = "503"
    RESET = "reset"


class ShutdownKind(StrEnum):
    IMMEDIATE = "immediate"
    GRACEFUL = "graceful"
    IGNORE = "ignore"
    DELAYED = "delayed"


@dataclass(frozen=True)
class ShutdownMode:
    kind: ShutdownKind
    delay_s: float = 0.0  # only for DELAYED: how long to keep serving before the graceful part

    @classmethod
    def parse(cls, text: str) -> ShutdownMode:
        name, _, arg = text.partition(":")
        kind = ShutdownKind(name)
        if kind is ShutdownKind.DELAYED:
            if not arg:
                raise ValueError("delayed shutdown needs seconds, e.g. delayed:5")
            return cls(kind, _non_negative(float(arg), text))
        if arg:
            raise ValueError(f"shutdown mode {name!r} takes no argument")
        return cls(kind)


@dataclass(frozen=True)
class LatencyModel:
    """Service time of one request, in milliseconds.

    ``fixed:MS``, ``uniform:LOW:HIGH`` or ``lognormal:MEDIAN:SIGMA`` (median in ms, as people
    describe latencies, rather than the mean of the underlying normal).
    """

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LatencyModel:
        kind, *raw = text.split(":")
        values = [_non_negative(float(v), text) for v in raw]
        arity = {"fixed": 1, "uniform": 2, "lognormal": 2}
        if kind not in arity or len(values) != arity[kind]:
            raise ValueError(
                f"latency {text!r}: use fixed:MS, uniform:LOW:HIGH or lognormal:MEDIAN:SIGMA"
            )
        if kind == "uniform" and values[0] > values[1]:
            raise ValueError(f"latency {text!r}: LOW must not exceed HIGH")
        return cls(kind, values[0], values[1] if len(values) > 1 else 0.0)

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.a == 0.0

    def draw_s(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            ms = self.a
        elif self.kind == "uniform":
            ms = rng.uniform(self.a, self.b)
        else:
            ms = self.a * math.exp(rng.gauss(0.0, self.b)) if self.a > 0 else 0.0
        return ms / 1000.0


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    startup_delay_s: float = 0.0
    warmup_s: float = 0.0
    warmup_mode: WarmupMode = WarmupMode.HTTP_503
    ready_lies: bool = False
    latency: LatencyModel = LatencyModel()
    keepalive_timeout_s: float = 0.0  # 0: idle connections are never closed by the server
    shutdown: ShutdownMode = ShutdownMode(ShutdownKind.GRACEFUL)
    drain_timeout_s: float = 30.0
    # On graceful shutdown an idle keep-alive connection is kept this long so that a client's
    # next request is answered with `Connection: close` instead of racing a server FIN (the
    # keepalive-race of DESIGN §4); 0 closes idle connections at once, as Go's Shutdown does.
    drain_idle_grace_s: float = 1.0
    max_concurrency: int = 0  # requests in service at once (0: unlimited)
    pod_name: str = ""
    pod_version: str = "v1"
    truth: Path | None = None
    seed: int | None = None


def _non_negative(value: float, text: str) -> float:
    if value < 0 or math.isnan(value):
        raise ValueError(f"{text!r}: values must be >= 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r}: must be >= 0")
    return value


def _seconds(text: str) -> float:
    return _non_negative(float(text), text)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demoapp",
        description="HTTP/1.1 demo workload with scriptable startup, readiness and shutdown.",
        epilog="Every flag can also be set as DEMOAPP_<FLAG> in the environment.",
    )

    def add(flag: str, kind: Callable[[str], Any], default: object, help_text: str) -> None:
        env_name = "DEMOAPP_" + flag.lstrip("-").replace("-", "_").upper()
        raw = env.get(env_name)
        value = default if raw is None else kind(raw)
        help_text = f"{help_text} (env {env_name})"
        if kind is _flag:  # a bare --flag means on
            parser.add_argument(
                flag, type=kind, default=value, help=help_text, nargs="?", const=True
            )
        else:
            parser.add_argument(flag, type=kind, default=value, help=help_text)

    defaults = AppConfig()
    add("--host", str, defaults.host, "address to bind")
    add("--port", int, defaults.port, "port to bind")
    add("--startup-delay", _seconds, 0.0, "seconds before listening")
    add("--warmup", _seconds, 0.0, "seconds after listening during which requests fail")
    add("--warmup-mode", WarmupMode, defaults.warmup_mode, "how warm-up requests fail: 503|reset")
    add("--ready-lies", _flag, False, "/ready answers 200 as soon as listening")
    add(
        "--latency",
        LatencyModel.parse,
        defaults.latency,
        "fixed:MS|uniform:LO:HI|lognormal:MEDIAN:SIGMA",
    )
    add("--keepalive-timeout", _seconds, 0.0, "close connections idle this long (0: never)")
    add(
        "--shutdown",
        ShutdownMode.parse,
        defaults.shutdown,
        "on SIGTERM: immediate|graceful|ignore|delayed:N",
    )
    add(
        "--drain-timeout",
        _seconds,
        defaults.drain_timeout_s,
        "graceful shutdown gives up after this",
    )
    add(
        "--drain-idle-grace",
        _seconds,
        defaults.drain_idle_grace_s,
        "graceful shutdown keeps idle connections this long for one last answer (0: close now)",
    )
    add(
        "--max-concurrency",
        _count,
        defaults.max_concurrency,
        "requests in service at once; more wait their turn (0: unlimited)",
    )
    add("--pod-name", str, env.get("POD_NAME") or socket.gethostname(), "X-Pod-Name header")
    add(
        "--pod-version", str, env.get("POD_VERSION") or defaults.pod_version, "X-Pod-Version header"
    )
    add("--truth", Path, None, "append lifecycle events to this truth.jsonl")
    add("--seed", int, None, "seed of the latency draws")
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> AppConfig:
    """Flags win over ``DEMOAPP_*`` env, which wins over the defaults."""
    ns = _parser(os.environ if env is None else env).parse_args(list(argv))
    return AppConfig(
        host=ns.host,
        port=ns.port,
        startup_delay_s=ns.startup_delay,
        warmup_s=ns.warmup,
        warmup_mode=ns.warmup_mode,
        ready_lies=ns.ready_lies,
        latency=ns.latency,
        keepalive_timeout_s=ns.keepalive_timeout,
        shutdown=ns.shutdown,
        drain_timeout_s=ns.drain_timeout,
        drain_idle_grace_s=ns.drain_idle_grace,
        max_concurrency=ns.max_concurrency,
        pod_name=ns.pod_name,
        pod_version=ns.pod_version,
        truth=ns.truth,
        seed=ns.seed,
    )
