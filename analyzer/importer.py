"""Foreign traces → a run directory (``rolltrace import``, backend ``imported``).

A user who rolled out on their own cluster has a tcpdump capture, kubectl's (or ``rolltrace
watch``'s) watch output and maybe a load tool's request log. ``import_run`` assembles them into
the layout of docs/trace-format.md so that ``validate``, ``analyze`` and ``report`` work on it
unchanged:

1. the watch files become events.jsonl (rolltrace's own lines as they are; kubectl streams
   through ``analyzer.readers.kubectl``, whose times are coarse and marked so in run.json);
2. the Service under test and its LB address come from ``--service``/``--lb`` or the Service
   object in the watch; client traffic to any other address is left out and counted;
3. requests.parquet comes from the request log, joined to the client capture (by client port
   when the tool recorded it, else by time and destination), or, without a log, is rebuilt from
   the packets (``analyzer.readers.packet_requests``). Requests the capture saw but the log lacks (hey's
   CSV, for one, lists no failed request) are added from the packets. Each row's ``joined_by``
   says how it was joined, and run.json ``import.joined_by`` counts them;
4. the phases come from the requests (load) and the Deployment's watch events (rollout).

Every bad input is a ``TraceError`` naming file, line and field; ``keep_going`` turns damaged
lines into run.json ``status_reasons`` (status ``partial``) instead.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyzer.connections import tcp_connections
from analyzer.errors import TraceError
from analyzer.events import iter_jsonl, scan_events
from analyzer.joins import shared_codes
from analyzer.readers.accesslog import HOP_TIMES_KEY, read_access_log
from analyzer.readers.kubectl import (
    EVENT_TIMES_KEY,
    looks_like_kubectl_stream,
    read_kubectl_streams,
)
from analyzer.readers.loadtools import RequestFormat, read_request_log
from analyzer.readers.packet_requests import PREFIX_BYTES, requests_from_packets
from analyzer.readers.pcap import PayloadPrefixes, read_pcap, read_pcap_payloads
from analyzer.readers.requests import write_requests
from analyzer.rundir import Capture, Problem, RunMeta, RunPaths, write_run_meta
from analyzer.schema import SCHEMA_VERSION, RunStatus
from kubewire import RolloutState, desired_replicas, template_fingerprint

Progress = Callable[[str], None]


class JoinedBy(StrEnum):
    """How a request row of an imported run was tied to the client capture (``joined_by``)."""

    LOCAL_PORT = "local-port"  # the log named the client port: exact
    TIME_DESTINATION = "time-destination"  # no port in the log: nearest packet request in time
    PACKETS = "packets"  # no log: rebuilt from the capture
    PACKETS_ONLY = "packets-only"  # in the capture, absent from the log: added from packets
    UNMATCHED = "unmatched"  # in the log, not found in the capture


@dataclass(frozen=True)
class Endpoint:
    """An address clients connect to: the Service's load-balancer address and port."""

    ip: str
    port: int

    @classmethod
    def parse(cls, text: str, source: str = "--lb") -> Endpoint:
        """``ADDRESS:PORT`` (``[v6]:PORT`` for IPv6), or a TraceError naming ``source``."""
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TraceError(source, "argument", f"{text!r} is not ADDRESS:PORT")
        return cls(host, int(port))


@dataclass
class ImportSpec:
    """What ``rolltrace import`` was given."""

    output: Path
    client_pcap: Path
    watches: list[Path]
    node_pcaps: dict[str, Path] = field(default_factory=dict)
    requests: Path | None = None
    requests_format: RequestFormat | None = None
    service: str | None = None  # NAMESPACE/NAME
    lb: Endpoint | None = None
    keep_going: bool = False
    tool_versions: dict[str, str] = field(default_factory=dict)
    access_logs: dict[str, Path] = field(default_factory=dict)  # hop name → its access log


@dataclass
class ImportResult:
    meta: RunMeta
    notes: list[str]  # for people: what was joined, left out, coarse


@dataclass
class _Collected:
    """Problems found on the way, and the notes the report repeats."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)  # run.json "import"
    event_times: dict[str, Any] | None = None  # run.json EVENT_TIMES_KEY: coarse watch times
    hop_times: dict[str, Any] = field(default_factory=dict)  # run.json HOP_TIMES_KEY, by hop


def import_run(spec: ImportSpec, progress: Progress = lambda _: None) -> ImportResult:
    """Assemble ``spec.output`` from foreign traces; returns run.json and the notes. Raises
    ``TraceError`` at the first bad input (its message counts the others), before anything is
    written, unless ``keep_going`` leaves damaged lines out."""
    found = _Collected()
    paths = RunPaths(spec.output)
    progress(f"reading {len(spec.watches)} watch file(s)")
    namespace = spec.service.rpartition("/")[0] or None if spec.service else None
    events = _merge_watches(spec.watches, namespace, found)
    service = _service_under_test(spec, events)
    lb = Endpoint(str(service["external_ip"]), int(service["port"]))
    progress(f"Service {service.get('name') or '(unnamed)'} at {lb.ip}:{lb.port}")
    progress(f"reading {spec.client_pcap}")
    client = _client_traffic(spec.client_pcap, lb, found)
    for node, capture in sorted(spec.node_pcaps.items()):
        progress(f"reading {capture} (node {node})")
        _check_capture(capture, found)
    requests = _requests(spec, client, lb, found, progress)
    _read_hop_logs(spec, found, progress)
    _check_problems(spec, found)
    paths.root.mkdir(parents=True, exist_ok=True)
    captures = _copy_captures(spec, paths)
    _copy_hop_logs(spec, paths)
    _write_events(paths, events)
    write_requests(paths.requests, requests)
    meta = _run_meta(spec, requests, events, service, captures, found)
    write_run_meta(paths.run_json, meta)
    progress(f"wrote {paths.root}: {len(requests)} requests, {len(events)} watch events")
    return ImportResult(meta, found.notes)


def _check_problems(spec: ImportSpec, found: _Collected) -> None:
    """Bad lines stop the import unless ``keep_going``: then they are left out and named."""
    errors = [p for p in found.problems if p.severity == "error"]
    if not errors:
        return
    if not spec.keep_going:
        first = errors[0]
        more = f" (and {len(errors) - 1} more bad lines; --keep-going leaves them out)"
        raise TraceError(first.file, first.location, first.message + more, field=first.field)
    found.record["left_out_lines"] = [str(p) for p in errors[:100]]
    found.notes.append(f"{len(errors)} damaged input line(s) left out (--keep-going)")


# ---------------------------------------------------------------------------------------------
# watch files


def _merge_watches(
    files: list[Path], namespace: str | None, found: _Collected
) -> list[dict[str, Any]]:
    """Every watch file's records in events.jsonl form, ordered by receive time (stable).
    kubectl's streams are read together: their events bound each other's times."""
    kubectl = [path for path in files if looks_like_kubectl_stream(path)]
    records: list[dict[str, Any]] = []
    for path in files:
        if path not in kubectl:
            records += _rolltrace_events(path, found)
    if kubectl:
        streams = read_kubectl_streams(kubectl, namespace)
        found.problems += [
            Problem(e.path, e.location, e.field, e.message) for e in streams.problems
        ]
        records += streams.records
        found.event_times = streams.event_times()
        found.notes.append(
            "watch times are coarse: kubectl records no receive time, so they come from object "
            "timestamps (1 s resolution) and, where no field dates a change (EndpointSlices), "
            "from bounds in resourceVersion order; `rolltrace watch` records precise receive "
            "times"
        )
        found.notes += streams.notes
    records.sort(key=lambda r: int(r["recv_ns"]))
    return records


def _rolltrace_events(path: Path, found: _Collected) -> list[dict[str, Any]]:
    """events.jsonl lines (rolltrace's own, or ``rolltrace watch``'s) that the analyzer reads."""
    scan = scan_events(path)
    bad = {_line_of(e.location) for e in scan.problems}
    found.problems += [Problem(str(path), e.location, e.field, e.message) for e in scan.problems]
    return [v for n, v in iter_jsonl(path) if n not in bad and not isinstance(v, TraceError)]


def _line_of(location: str) -> int:
    head, _, number = location.partition(" ")
    return int(number) if head == "line" and number.isdigit() else 0


def _write_events(paths: RunPaths, events: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    paths.events.write_text(text)


# ---------------------------------------------------------------------------------------------
# the Service under test


def _objects(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        e["object"] for e in events if e.get("kind") == kind and isinstance(e.get("object"), dict)
    ]


def _service_under_test(spec: ImportSpec, events: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json ``service``: from the watch's Service object (its LoadBalancer ingress and first
    port), ``--service`` choosing it by name, ``--lb`` overriding the address."""
    namespace, _, name = (spec.service or "").rpartition("/")
    services = {
        (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in _objects(events, "Service")
    }
    chosen = _choose_service(services, namespace, name, spec.lb is None)
    service: dict[str, Any] = {"name": name} if name else {}
    if chosen is not None:
        service = _service_fields(chosen)
    if spec.lb is not None:
        service.update(external_ip=spec.lb.ip, port=spec.lb.port)
    if "external_ip" not in service:
        raise TraceError(
            "--lb",
            "argument",
            "no load-balancer address: the watch has no Service with status.loadBalancer."
            "ingress; pass --lb ADDRESS:PORT (and --service NAMESPACE/NAME)",
        )
    replicas = _deployment_replicas(events)
    if replicas is not None:
        service["replicas"] = replicas
    return service


def _choose_service(
    services: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str, need_lb: bool
) -> dict[str, Any] | None:
    """The Service ``--service`` names, else the only one with a load-balancer address."""
    if name:
        matches = [o for (ns, n), o in services.items() if n == name and ns in {namespace, ""}]
        if not matches and need_lb:
            raise TraceError("--service", "argument", f"no Service {namespace}/{name} in the watch")
        return matches[-1] if matches else None
    exposed = [o for o in services.values() if _ingress_ip(o)]
    if len(exposed) > 1:
        names = ", ".join(
            sorted(f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in exposed)
        )
        raise TraceError(
            "--service",
            "argument",
            f"several Services have an LB address ({names}): pass --service",
        )
    return exposed[0] if exposed else None


def _ingress_ip(service: dict[str, Any]) -> str | None:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    first = ingress[0] if ingress and isinstance(ingress[0], dict) else {}
    ip = first.get("ip")
    return ip if isinstance(ip, str) and ip else None


def _service_fields(service: dict[str, Any]) -> dict[str, Any]:
    """run.json ``service`` keys from a Service object: its first port is the one clients use."""
    meta, spec = service["metadata"], service.get("spec") or {}
    ports = spec.get("ports") or [{}]
    first = ports[0] if isinstance(ports[0], dict) else {}
    fields: dict[str, Any] = {"name": meta["name"]}
    if (ip := _ingress_ip(service)) is not None:
        fields["external_ip"] = ip
    for key, source in (("port", "port"), ("target_port", "targetPort"), ("node_port", "nodePort")):
        if isinstance(first.get(source), int) and not isinstance(first.get(source), bool):
            fields[key] = first[source]
    if isinstance(spec.get("externalTrafficPolicy"), str):
        fields["external_traffic_policy"] = spec["externalTrafficPolicy"]
    if isinstance(meta.get("namespace"), str):
        fields["namespace"] = meta["namespace"]
    return fields


def _deployment_replicas(events: list[dict[str, Any]]) -> int | None:
    """The Deployment's desired replicas when the watch shows it (the capacity attribution
    compares ready endpoints with)."""
    for obj in reversed(_objects(events, "Deployment")):
        replicas = (obj.get("spec") or {}).get("replicas")
        if isinstance(replicas, int) and not isinstance(replicas, bool):
            return replicas
    return None


# ---------------------------------------------------------------------------------------------
# packets


@dataclass
class _ClientTraffic:
    """The client capture (packets and payload prefixes) and its connections to the Service's
    address; connections to other addresses are left out (counted in ``import.left_out``)."""

    packets: pd.DataFrame
    payloads: PayloadPrefixes
    connections: pd.DataFrame


def _read_client_capture(path: Path, found: _Collected) -> tuple[pd.DataFrame, PayloadPrefixes]:
    """The capture with the payload bytes that rebuild requests; a damaged file is a problem,
    and what precedes the damage is kept."""
    try:
        return read_pcap_payloads(path, PREFIX_BYTES, capture="client")
    except TraceError as exc:
        found.problems.append(Problem(str(path), exc.location, exc.field, exc.message))
        if isinstance(exc.kept, tuple):
            return exc.kept
        raise


def _check_capture(path: Path, found: _Collected) -> None:
    """A node capture is read whole once, so that damage is found now, not at analysis."""
    try:
        read_pcap(path)
    except TraceError as exc:
        found.problems.append(Problem(str(path), exc.location, exc.field, exc.message))


def _client_traffic(pcap: Path, lb: Endpoint, found: _Collected) -> _ClientTraffic:
    packets, payloads = _read_client_capture(pcap, found)
    if packets.empty:
        raise TraceError(str(pcap), "file", "no TCP packet in the client capture")
    connections = tcp_connections(packets, {lb.port})
    to_lb = (connections["server_ip"] == lb.ip) & (connections["server_port"] == lb.port)
    other = connections[~to_lb]
    destinations = (other["server_ip"] + ":" + other["server_port"].astype("string")).value_counts()
    found.record["left_out"] = {
        "connections": len(other),
        "destinations": {str(k): int(v) for k, v in destinations.head(10).items()},
    }
    if len(other):
        found.notes.append(
            f"{len(other)} of {len(connections)} client connections went to other addresses "
            f"than {lb.ip}:{lb.port} and were left out"
        )
    return _ClientTraffic(packets, payloads, connections[to_lb])


def _copy_captures(spec: ImportSpec, paths: RunPaths) -> list[Capture]:
    """packets/client.pcap[ng] and packets/node-<NODE>.pcap[ng], listed for run.json."""
    paths.packets_dir.mkdir(parents=True, exist_ok=True)
    listed: list[tuple[Path, str, str | None]] = [(spec.client_pcap, "client", None)]
    listed += [(file, f"node-{node}", node) for node, file in sorted(spec.node_pcaps.items())]
    captures = []
    for source, stem, node in listed:
        suffix = ".pcapng" if source.suffix == ".pcapng" else ".pcap"
        target = paths.packets_dir / f"{stem}{suffix}"
        shutil.copyfile(source, target)
        point = "client" if node is None else "node"
        captures.append(Capture(file=f"packets/{target.name}", point=point, node=node))
    return captures


# ---------------------------------------------------------------------------------------------
# L7 hop access logs

_HOP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def hop_names(files: list[Path], names: list[str]) -> dict[str, Path]:
    """Each ``--access-log`` file's hop name: the ``--hop`` given in the same position, else
    the file's stem. A name becomes ``hops/<name>.log``, so it must be a plain file name and
    unique: a TraceError names the argument otherwise."""
    if len(names) > len(files):
        raise TraceError("--hop", "argument", f"{len(names)} --hop for {len(files)} --access-log")
    chosen = names + [file.stem for file in files[len(names) :]]
    for name in chosen:
        if not _HOP_NAME.fullmatch(name):
            raise TraceError(
                "--hop", "argument", f"{name!r} is not a hop name (letters, digits, . _ -)"
            )
    if len(set(chosen)) < len(chosen):
        raise TraceError(
            "--hop", "argument", f"two access logs would be the same hop ({', '.join(chosen)})"
        )
    return dict(zip(chosen, files, strict=True))


def _read_hop_logs(spec: ImportSpec, found: _Collected, progress: Progress) -> None:
    """Read each hop's access log (its format detected) to check it, count its lines and record
    how precise its times are; the file itself is copied as it is."""
    for hop, file in spec.access_logs.items():
        progress(f"reading {file} (hop {hop})")
        log = read_access_log(file, hop)
        found.problems += log.problems
        found.hop_times[hop] = log.times()
        found.record.setdefault("access_logs", {})[hop] = {
            "file": str(file),
            "format": log.format.value,
            "requests": len(log.requests),
        }
        if found.hop_times[hop]["coarse"]:
            found.notes.append(
                f"hop {hop}: {log.format.value}'s default log has one-second times and no client "
                "port: it tells which upstream each attempt reached, with what status, and the "
                "retries, but cannot order a request against endpoint changes within a second "
                "nor pair it with a client request by port"
            )


def _copy_hop_logs(spec: ImportSpec, paths: RunPaths) -> None:
    for hop, file in spec.access_logs.items():
        paths.hops_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, paths.hop_log(hop))


# ---------------------------------------------------------------------------------------------
# requests


def _requests(
    spec: ImportSpec, client: _ClientTraffic, lb: Endpoint, found: _Collected, progress: Progress
) -> pd.DataFrame:
    """requests.parquet's rows: the log joined to the capture, or the capture alone."""
    progress("rebuilding requests from the client capture")
    rebuilt = _rebuilt_requests(client, found)
    if spec.requests is None:
        if rebuilt.empty:
            raise TraceError(
                str(spec.client_pcap),
                "file",
                f"no HTTP request to {lb.ip}:{lb.port} in the capture",
            )
        found.notes.append(
            f"no request log: {len(rebuilt)} requests rebuilt from the client capture"
        )
        return _count_joins(rebuilt.assign(joined_by=JoinedBy.PACKETS.value), found)
    progress(f"reading {spec.requests}")
    log = read_request_log(spec.requests, spec.requests_format)
    found.problems += log.problems
    found.record["request_log"] = {
        "file": str(spec.requests),
        "format": log.format.value,
        "has_ports": log.has_ports,
    }
    frame = _to_service(log.frame, lb, spec.requests, found)
    return _count_joins(_join_log(frame, log.has_ports, rebuilt, found), found)


def _to_service(frame: pd.DataFrame, lb: Endpoint, path: Path, found: _Collected) -> pd.DataFrame:
    """The log's requests to the Service: a URL host that is a name (not an address) is taken
    to be the Service's; requests to any other address are left out and counted."""
    named = ~frame["remote_ip"].str.contains(r"^[0-9.]+$|:", regex=True).fillna(False)
    frame.loc[named, "remote_ip"] = lb.ip
    mine = (frame["remote_ip"] == lb.ip) & (frame["remote_port"] == lb.port)
    left = int((~mine).sum())
    found.record["left_out"] = {**found.record.get("left_out", {}), "log_requests": left}
    if left:
        found.notes.append(
            f"{left} requests of {path.name} went to other addresses and were left out"
        )
    if not mine.any():
        raise TraceError(str(path), "file", f"no request to {lb.ip}:{lb.port} in the request log")
    return frame[mine].reset_index(drop=True)


def _count_joins(frame: pd.DataFrame, found: _Collected) -> pd.DataFrame:
    """Number the rows in time order and record how many were joined each way."""
    frame = frame.sort_values("start_ns", kind="stable").reset_index(drop=True)
    frame["request_id"] = np.arange(len(frame), dtype="int64")
    frame["joined_by"] = frame["joined_by"].astype("string")
    counts = frame["joined_by"].value_counts()
    found.record["joined_by"] = {str(k): int(v) for k, v in counts.items()}
    found.notes.append(
        "requests joined to the capture: " + ", ".join(f"{v} by {k}" for k, v in counts.items())
    )
    return frame


# ---------------------------------------------------------------------------------------------
# phases and run.json


def rollout_window(events: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    """(trigger, complete) receive times of the first rollout the Deployment events show: the
    first event whose Pod template differs from the one first seen (``kubectl rollout
    restart`` changes an annotation of it, an image change its container), then the first
    event of that Deployment, at or after it, that is rolled out. None where not seen."""
    first_template: dict[str, str] = {}
    trigger: tuple[int, str] | None = None
    for event in events:
        obj = event.get("object")
        if event.get("kind") != "Deployment" or not isinstance(obj, dict):
            continue
        name = str(obj["metadata"]["name"])
        template = template_fingerprint(obj)
        at = int(event["recv_ns"])
        first_template.setdefault(name, template)
        if trigger is None and template != first_template[name]:
            trigger = (at, name)
        if (
            trigger is not None
            and name == trigger[1]
            and RolloutState.from_json(obj).complete(desired_replicas(obj))
        ):
            return trigger[0], at
    return (trigger[0] if trigger else None), None


def _phases(
    requests: pd.DataFrame, events: list[dict[str, Any]]
) -> tuple[dict[str, int], list[str]]:
    """The four analysis phases, in order; a phase the traces do not show is absent, and why is
    said."""
    trigger, complete = rollout_window(events)
    candidates = {
        "load_start": int(requests["start_ns"].min()),
        "rollout_trigger": trigger,
        "rollout_complete": complete,
        "load_stop": int(requests["end_ns"].max()),
    }
    phases: dict[str, int] = {}
    reasons: list[str] = []
    for name, value in candidates.items():
        if value is None:
            reasons.append(f"the watch shows no {name.replace('_', ' ')} of a Deployment")
        elif phases and value < max(phases.values()):
            reasons.append(
                f"{name} precedes an earlier phase (outside the recorded load): left out"
            )
        else:
            phases[name] = value
    return phases, reasons


def _run_meta(
    spec: ImportSpec,
    requests: pd.DataFrame,
    events: list[dict[str, Any]],
    service: dict[str, Any],
    captures: list[Capture],
    found: _Collected,
) -> RunMeta:
    phases, reasons = _phases(requests, events)
    if found.record.get("left_out_lines"):
        reasons.append(f"{len(found.record['left_out_lines'])} damaged input lines left out")
    namespace = str(service.pop("namespace", "") or (spec.service or "").rpartition("/")[0])
    found.record["notes"] = found.notes
    return RunMeta(
        schema_version=SCHEMA_VERSION,
        run_id=spec.output.name,
        status=RunStatus.PARTIAL if reasons else RunStatus.COMPLETE,
        status_reasons=reasons,
        backend="imported",
        tool_versions=spec.tool_versions,
        clock={
            "source": "the capture host's clock (packets, request log); watch times from "
            + ("object timestamps (coarse)" if found.event_times else "receive times"),
        },
        phases=phases,
        service=service,
        captures=captures,
        namespace=namespace,
        **{"import": found.record},
        **({EVENT_TIMES_KEY: found.event_times} if found.event_times else {}),
        **({HOP_TIMES_KEY: found.hop_times} if found.hop_times else {}),
    )


def _rebuilt_requests(client: _ClientTraffic, found: _Collected) -> pd.DataFrame:
    """The requests the client capture shows (``analyzer.readers.packet_requests``)."""
    frame, notes = requests_from_packets(client.packets, client.connections, client.payloads)
    found.record["packets"] = notes.to_dict()
    found.notes += [sentence.rstrip(".") for sentence in notes.sentences()]
    return frame


# The connection facts a request log without client ports takes from its packet request
_CONNECTION_COLUMNS = ["local_ip", "local_port", "conn_id", "conn_new", "conn_seq", "user_kind"]


def _answered(frame: pd.DataFrame) -> np.ndarray:
    """A response arrived (or, for a connection-level row, the server answered): a request that
    got one may only be paired with one that got one, so a failure the log lacks is never
    absorbed by a success next to it in time."""
    got = frame["status_code"].notna().to_numpy(dtype=bool)
    return got | (frame["error_kind"] == "ok").to_numpy(dtype=bool)


def pair_requests(log: pd.DataFrame, rebuilt: pd.DataFrame, by_port: bool) -> np.ndarray:
    """For each log row, the position of its request in ``rebuilt`` (the capture's), or -1.

    Candidates share the destination (and the client port when the log has it) and whether a
    response arrived. The log's clock may be offset from the capture's (another host's clock,
    a tool that logs offsets from its own start): the offset is the median start difference of
    the nearest candidates, removed before pairing. That finds offsets smaller than half the
    spacing of requests; a larger one cannot be told from the next request and shows as
    requests only in the log and only in the capture (``import.reconcile``). A pair holds when
    the two requests overlap in time once shifted, allowing the typical misalignment (the
    median absolute deviation of those differences). Each capture request pairs with one log
    row, the nearest; rows left over by a burst of simultaneous requests pair in further rounds
    with the capture requests still free (each round pairs at least one, or pairing stops)."""
    by = ["remote", "remote_port", "answered"] + (["local_port"] if by_port else [])
    remote_log, remote_seen = shared_codes(log["remote_ip"], rebuilt["remote_ip"])
    left = _pairing_frame(log, remote_log, by)
    right = _pairing_frame(rebuilt, remote_seen, by)
    first = _nearest(left, right, 0)
    deltas = first.loc[first["other"] >= 0, "delta"].to_numpy(dtype="float64")
    out = np.full(len(log), -1, dtype="int64")
    if not len(deltas):
        return out
    shift = int(np.median(deltas))
    slack = int(np.median(np.abs(deltas - shift)))
    free_left, free_right = np.arange(len(left)), np.arange(len(right))
    while len(free_left) and len(free_right):
        rows, others = _pair_round(left.iloc[free_left], right.iloc[free_right], shift, slack)
        if not len(rows):
            break
        out[free_left[rows]] = free_right[others]
        free_left = np.setdiff1d(free_left, free_left[rows], assume_unique=True)
        free_right = np.setdiff1d(free_right, free_right[others], assume_unique=True)
    return out


def _pairing_frame(frame: pd.DataFrame, remote: np.ndarray, by: list[str]) -> pd.DataFrame:
    """The keys pairing compares: ``by`` (integers) and the start and end times."""
    keyed = frame.assign(
        remote=remote, answered=_answered(frame), local_port=frame["local_port"].fillna(-1)
    )
    out = keyed[by].astype("int64")
    out.attrs["by"] = by
    return out.assign(
        start=frame["start_ns"].to_numpy(dtype="int64"), end=frame["end_ns"].to_numpy(dtype="int64")
    )


def _nearest(left: pd.DataFrame, right: pd.DataFrame, shift: int) -> pd.DataFrame:
    """For each left row (start − ``shift``), the right row nearest in start time among those
    with the same keys: ``row`` (left position), ``other`` (right position, -1: none) and
    ``delta`` (left start − right start, ns)."""
    by = left.attrs["by"]
    lhs = left[by].assign(t=left["start"].to_numpy() - shift, row=np.arange(len(left)))
    rhs = right[by].assign(
        t=right["start"].to_numpy(), other=np.arange(len(right)), t_other=right["start"].to_numpy()
    )
    merged = pd.merge_asof(
        lhs.sort_values("t", kind="stable"),
        rhs.sort_values("t", kind="stable"),
        on="t",
        by=by,
        direction="nearest",
    )
    merged["other"] = merged["other"].fillna(-1).astype("int64")
    merged["delta"] = merged["t"] + shift - merged["t_other"].fillna(0).astype("int64")
    return merged.sort_values("row")[["row", "other", "delta"]].reset_index(drop=True)


def _pair_round(
    left: pd.DataFrame, right: pd.DataFrame, shift: int, slack: int
) -> tuple[np.ndarray, np.ndarray]:
    """One round: (left positions, right positions) of the pairs that hold, one per right row."""
    pairs = _nearest(left, right, shift)
    found = pairs["other"].to_numpy() >= 0
    other = np.where(found, pairs["other"].to_numpy(), 0)
    start, end = left["start"].to_numpy() - shift, left["end"].to_numpy() - shift
    overlap = (start - slack <= right["end"].to_numpy()[other]) & (
        right["start"].to_numpy()[other] <= end + slack
    )
    held = pairs[found & overlap].assign(error=lambda f: np.abs(f["delta"] - shift))
    best = held.sort_values("error", kind="stable").drop_duplicates("other")
    return best["row"].to_numpy(dtype="int64"), best["other"].to_numpy(dtype="int64")


def _join_log(
    log: pd.DataFrame, has_ports: bool, rebuilt: pd.DataFrame, found: _Collected
) -> pd.DataFrame:
    """The log's rows, tied to the capture's requests, plus the capture's requests the log
    lacks; disagreements between the two are counted in ``import.reconcile``."""
    if rebuilt.empty:
        found.notes.append("the client capture shows no request to join the log with")
        return log.assign(joined_by=JoinedBy.UNMATCHED.value)
    pairs = pair_requests(log, rebuilt, has_ports)
    matched = pairs >= 0
    mine = rebuilt.iloc[pairs[matched]].reset_index(drop=True)
    joined = log.copy()
    joined["joined_by"] = JoinedBy.UNMATCHED.value
    joined.loc[matched, "joined_by"] = (
        JoinedBy.LOCAL_PORT if has_ports else JoinedBy.TIME_DESTINATION
    ).value
    if not has_ports:  # the capture knows the connection; the log's own ids stay for the rest
        for column in _CONNECTION_COLUMNS:
            joined[column] = joined[column].astype(rebuilt[column].dtype)
            joined.loc[matched, column] = mine[column].to_numpy()
        joined.loc[matched & ~joined["conn_new"], "connect_ns"] = pd.NA
    spare = int(rebuilt["conn_id"].max()) + 1
    joined.loc[~matched, "conn_id"] = joined.loc[~matched, "request_id"] + spare
    extra = rebuilt.drop(index=rebuilt.index[pairs[matched]]).assign(
        joined_by=JoinedBy.PACKETS_ONLY.value
    )
    if has_ports:  # the log's own connection ids: keep the capture's apart
        extra = extra.assign(conn_id=extra["conn_id"] + int(joined["conn_id"].max()) + 1)
    _reconcile(
        joined[matched].reset_index(drop=True), mine, int((~matched).sum()), len(extra), found
    )
    return pd.concat([joined, extra[joined.columns]], ignore_index=True)


def _reconcile(
    logged: pd.DataFrame, seen: pd.DataFrame, unmatched: int, extra: int, found: _Collected
) -> None:
    """What the log and the capture disagree on: the report repeats it."""
    status_differs = (
        logged["status_code"].fillna(0).to_numpy() != seen["status_code"].fillna(0).to_numpy()
    )
    kind_differs = logged["error_kind"].to_numpy() != seen["error_kind"].to_numpy()
    found.record["reconcile"] = {
        "paired": len(logged),
        "only_in_log": unmatched,
        "only_in_capture": extra,
        "status_differs": int(status_differs.sum()),
        "error_kind_differs": int(kind_differs.sum()),
    }
    if unmatched or extra or status_differs.any() or kind_differs.any():
        found.notes.append(
            f"request log and capture disagree: {unmatched} requests only in the log, {extra} "
            f"only in the capture (added), {int(status_differs.sum())} with another status, "
            f"{int(kind_differs.sum())} with another error kind"
        )
