"""Just enough of Kubernetes' protobuf encoding to read what kubectl's typed commands send.

kubectl's typed clients (``create token``, ``auth can-i``, ``create namespace``, ``create
serviceaccount``) send protobuf bodies to built-in kinds and do not fall back to JSON on a 415.
The answer may be JSON (clients decode by the response's Content-Type), so only requests are
read, and only these kinds: the envelope (``k8s\\x00`` + ``runtime.Unknown``), ObjectMeta's
names, labels and annotations, and the specs of TokenRequest and SelfSubjectAccessReview (field
numbers from k8s.io/api/*/v1/generated.proto). Other protobuf bodies are answered 415.
"""

from __future__ import annotations

from collections.abc import Iterator

from localcluster.apiclient import JsonObject

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


class UnsupportedKind(ProtobufError):
    """A kind this reader does not decode (answered 415, as for any unknown media type)."""


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return value, offset


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a message: an int for varints, bytes for length-delimited
    fields; fixed-width fields are skipped."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, offset = _varint(data, offset)
            yield number, value
        elif wire_type == 2:
            length, offset = _varint(data, offset)
            if offset + length > len(data):
                raise ProtobufError("truncated field")
            yield number, data[offset : offset + length]
            offset += length
        elif wire_type in (1, 5):
            offset += 8 if wire_type == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire_type}")


def _message(data: bytes, number: int) -> bytes:
    found = [value for field, value in fields(data) if field == number]
    return found[-1] if found and isinstance(found[-1], bytes) else b""


def _strings(data: bytes, names: dict[int, str]) -> JsonObject:
    """The string fields ``names`` (number to JSON name) of a message."""
    return {
        names[number]: value.decode()
        for number, value in fields(data)
        if number in names and isinstance(value, bytes)
    }


def _string_map(data: bytes, number: int) -> dict[str, str]:
    """A ``map<string, string>`` field: repeated entries of key = 1, value = 2."""
    entries = (_strings(v, {1: "key", 2: "value"}) for n, v in fields(data)
               if n == number and isinstance(v, bytes))  # fmt: skip
    return {entry.get("key", ""): entry.get("value", "") for entry in entries}


def _object_meta(data: bytes) -> JsonObject:
    """ObjectMeta: name, generateName, namespace, labels (11), annotations (12)."""
    meta = _strings(data, {1: "name", 2: "generateName", 3: "namespace"})
    for number, key in ((11, "labels"), (12, "annotations")):
        if values := _string_map(data, number):
            meta[key] = values
    return meta


def _token_request_spec(data: bytes) -> JsonObject:
    spec: JsonObject = {"audiences": []}
    for number, value in fields(data):
        if number == 1 and isinstance(value, bytes):
            spec["audiences"].append(value.decode())
        elif number == 4 and isinstance(value, int):
            spec["expirationSeconds"] = value
        elif number == 3 and isinstance(value, bytes):
            spec["boundObjectRef"] = _strings(
                value, {1: "kind", 2: "apiVersion", 3: "name", 4: "uid"}
            )
    return spec


def _access_review_spec(data: bytes) -> JsonObject:
    resource = _message(data, 1)
    if resource:
        names = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
                 6: "subresource", 7: "name"}  # fmt: skip
        return {"resourceAttributes": _strings(resource, names)}
    return {"nonResourceAttributes": _strings(_message(data, 2), {1: "path", 2: "verb"})}


# kind -> (apiVersion, how its spec (field 2) is read); metadata (field 1) is read for all
_KINDS = {
    "TokenRequest": ("authentication.k8s.io/v1", _token_request_spec),
    "SelfSubjectAccessReview": ("authorization.k8s.io/v1", _access_review_spec),
    "Namespace": ("v1", None),
    "ServiceAccount": ("v1", None),
}


def decode(body: bytes) -> JsonObject:
    """A protobuf body of one of ``_KINDS`` as the JSON object the server handles."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body")
    try:
        return _decode(body[len(MAGIC) :])
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"a string field is not UTF-8: {exc}") from None


def _decode(envelope: bytes) -> JsonObject:
    kind = _strings(_message(envelope, 1), {2: "kind"}).get("kind", "")
    if kind not in _KINDS:
        raise UnsupportedKind(kind)
    api_version, read_spec = _KINDS[kind]
    raw = _message(envelope, 2)
    obj: JsonObject = {"apiVersion": api_version, "kind": kind,
                       "metadata": _object_meta(_message(raw, 1))}  # fmt: skip
    if read_spec is not None:
        obj["spec"] = read_spec(_message(raw, 2))
    return obj
