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


class IdleClose(StrEnum):
    """How the keep-alive timeout closes an idle connection: an orderly FIN (most servers) or a
    bare RST with no FIN (SO_LINGER 0, as some proxies and runtimes do)."""

    FIN = "fin"
    RST = "rst"


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
    idle_close: IdleClose = IdleClose.FIN
    shutdown: ShutdownMode = ShutdownMode(ShutdownKind.GRACEFUL)
    drain_timeout_s: float = 30.0
    # On graceful shutdown an idle keep-alive connection is kept this long so that a client's
    # next request is answered with `Connection: close` instead of racing a server FIN (the
    # keepalive-race of docs/causes.md); 0 closes idle connections at once, as Go's Shutdown does.
    drain_idle_grace_s: float = 1.0
    max_concurrency: int = 0  # requests in service at once (0: unlimited)
    # Faults of a bad revision; 0 turns each off. Times count from listening, per process, so a
    # restarted container goes through them again (a crash loop, repeated liveness kills).
    crash_after_s: float = 0.0  # exit non-zero, without draining, this long after listening
    crash_after_requests: int = 0  # ... or on the request that follows this many served ones
    liveness_fail_after_s: float = 0.0  # /healthz answers 500 from this long after listening
    # Readiness flap: once warm, every `period` the app is unable to serve for the last `down`
    # seconds of it (/ready 503 and requests fail as `flap_mode` says).
    ready_flap_period_s: float = 0.0
    ready_flap_down_s: float = 0.0
    flap_mode: WarmupMode = WarmupMode.HTTP_503
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


_Flag = tuple[str, Callable[[str], Any], object, str]


def _serving_flags(defaults: AppConfig, env: Mapping[str, str]) -> list[_Flag]:
    """How the app listens, serves, shuts down and names itself."""
    pod_version = env.get("POD_VERSION") or defaults.pod_version
    return [
        ("--host", str, defaults.host, "address to bind"),
        ("--port", int, defaults.port, "port to bind"),
        ("--startup-delay", _seconds, 0.0, "seconds before listening"),
        ("--latency", LatencyModel.parse, defaults.latency,
         "fixed:MS|uniform:LO:HI|lognormal:MEDIAN:SIGMA"),
        ("--keepalive-timeout", _seconds, 0.0, "close connections idle this long (0: never)"),
        ("--idle-close", IdleClose, defaults.idle_close, "how idle connections close: fin|rst"),
        ("--shutdown", ShutdownMode.parse, defaults.shutdown,
         "on SIGTERM: immediate|graceful|ignore|delayed:N"),
        ("--drain-timeout", _seconds, defaults.drain_timeout_s,
         "graceful shutdown gives up after this"),
        ("--drain-idle-grace", _seconds, defaults.drain_idle_grace_s,
         "graceful shutdown keeps idle connections this long for one last answer (0: close now)"),
        ("--max-concurrency", _count, defaults.max_concurrency,
         "requests in service at once; more wait their turn (0: unlimited)"),
        ("--pod-name", str, env.get("POD_NAME") or socket.gethostname(), "X-Pod-Name header"),
        ("--pod-version", str, pod_version, "X-Pod-Version header"),
        ("--truth", Path, None, "append lifecycle events to this truth.jsonl"),
        ("--seed", int, None, "seed of the latency draws"),
    ]  # fmt: skip


def _fault_flags(defaults: AppConfig) -> list[_Flag]:
    """What a bad revision can do wrong: warm-ups, lies, crashes, liveness and readiness faults."""
    return [
        ("--warmup", _seconds, 0.0, "seconds after listening during which requests fail"),
        ("--warmup-mode", WarmupMode, defaults.warmup_mode, "how warm-up requests fail: 503|reset"),
        ("--ready-lies", _flag, False, "/ready answers 200 as soon as listening"),
        ("--crash-after", _seconds, 0.0,
         "exit with code 1, no drain, S s after listening (0: never)"),
        ("--crash-after-requests", _count, 0,
         "exit with code 1, no drain, on the request after N served ones (0: never)"),
        ("--liveness-fail-after", _seconds, 0.0, "/healthz answers 500 from S s after listening"),
        ("--ready-flap-period", _seconds, 0.0, "readiness flap cycle in seconds (0: no flap)"),
        ("--ready-flap-down", _seconds, 0.0, "seconds of each flap cycle the app cannot serve"),
        ("--flap-mode", WarmupMode, defaults.flap_mode, "how requests fail while flapped: 503|reset"),
    ]  # fmt: skip


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """Every flag also reads DEMOAPP_<FLAG> from ``env``: Pods get their faults as env vars."""
    parser = argparse.ArgumentParser(
        prog="python -m demoapp",
        description="HTTP/1.1 demo workload with scriptable startup, readiness and shutdown.",
        epilog="Every flag can also be set as DEMOAPP_<FLAG> in the environment.",
    )
    defaults = AppConfig()
    for flag, kind, default, help_text in _serving_flags(defaults, env) + _fault_flags(defaults):
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
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> AppConfig:
    """Flags win over ``DEMOAPP_*`` env, which wins over the defaults."""
    parser = _parser(os.environ if env is None else env)
    ns = parser.parse_args(list(argv))
    if ns.ready_flap_period and not 0 < ns.ready_flap_down < ns.ready_flap_period:
        parser.error("--ready-flap-down must be > 0 and shorter than --ready-flap-period")
    return AppConfig(
        host=ns.host,
        port=ns.port,
        startup_delay_s=ns.startup_delay,
        warmup_s=ns.warmup,
        warmup_mode=ns.warmup_mode,
        ready_lies=ns.ready_lies,
        latency=ns.latency,
        keepalive_timeout_s=ns.keepalive_timeout,
        idle_close=ns.idle_close,
        shutdown=ns.shutdown,
        drain_timeout_s=ns.drain_timeout,
        drain_idle_grace_s=ns.drain_idle_grace,
        max_concurrency=ns.max_concurrency,
        crash_after_s=ns.crash_after,
        crash_after_requests=ns.crash_after_requests,
        liveness_fail_after_s=ns.liveness_fail_after,
        ready_flap_period_s=ns.ready_flap_period,
        ready_flap_down_s=ns.ready_flap_down,
        flap_mode=ns.flap_mode,
        pod_name=ns.pod_name,
        pod_version=ns.pod_version,
        truth=ns.truth,
        seed=ns.seed,
    )
