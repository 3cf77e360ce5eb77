"""The Envoy RLS v3 messages (``envoy.service.ratelimit.v3``), built at import time.

The messages are declared here as a ``FileDescriptorProto`` with envoy's package, names
and field numbers (api/envoy/service/ratelimit/v3/rls.proto and
envoy/extensions/common/ratelimit/v3/ratelimit.proto), in a private descriptor pool:
the wire format is envoy's, with no protoc step and no generated code (protoc of
grpcio-tools 1.85 generates code for a newer protobuf runtime than the pinned one).
Left out: the validation annotations, ``dynamic_metadata`` (field 6 of the response,
a ``google.protobuf.Struct``; never sent) and the ``RateLimitOverride``'s unit enum type
(an int32 on the wire, read as such). Unknown fields are kept and ignored by protobuf.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)

__all__ = [
    "METHOD",
    "SERVICE",
    "RateLimitRequest",
    "RateLimitResponse",
]

PACKAGE: Final = "envoy.service.ratelimit.v3"
SERVICE: Final = f"{PACKAGE}.RateLimitService"
METHOD: Final = "ShouldRateLimit"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(message: Any, name: str, number: int, kind: int, *, type_name: str = "",
           repeated: bool = False, oneof: int | None = None) -> None:  # fmt: skip
    field = message.field.add(name=name, number=number, type=kind,
                              label=_REPEATED if repeated else _OPTIONAL)  # fmt: skip
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    assert field.number == number


def _enum(parent: Any, name: str, values: tuple[str, ...]) -> None:
    enum = parent.enum_type.add(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)
    assert len(enum.value) == len(values)


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="synod/ratelimit/envoy_rls_v3.proto",
                                               package=PACKAGE, syntax="proto3")  # fmt: skip
    proto.dependency.extend(["google/protobuf/duration.proto", "google/protobuf/timestamp.proto",
                             "google/protobuf/wrappers.proto"])  # fmt: skip
    p = f".{PACKAGE}."
    header = proto.message_type.add(name="HeaderValue")  # envoy.config.core.v3.HeaderValue
    _field(header, "key", 1, _F.TYPE_STRING)
    _field(header, "value", 2, _F.TYPE_STRING)
    _field(header, "raw_value", 3, _F.TYPE_BYTES)
    # envoy.extensions.common.ratelimit.v3.RateLimitDescriptor
    descriptor = proto.message_type.add(name="RateLimitDescriptor")
    entry = descriptor.nested_type.add(name="Entry")
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    override = descriptor.nested_type.add(name="RateLimitOverride")
    _field(override, "requests_per_unit", 1, _F.TYPE_UINT32)
    _field(override, "unit", 2, _F.TYPE_INT32)
    _field(descriptor, "entries", 1, _F.TYPE_MESSAGE, type_name=p + "RateLimitDescriptor.Entry",
           repeated=True)  # fmt: skip
    _field(descriptor, "limit", 2, _F.TYPE_MESSAGE,
           type_name=p + "RateLimitDescriptor.RateLimitOverride")  # fmt: skip
    _field(descriptor, "hits_addend", 3, _F.TYPE_MESSAGE,
           type_name=".google.protobuf.UInt64Value")  # fmt: skip
    request = proto.message_type.add(name="RateLimitRequest")
    _field(request, "domain", 1, _F.TYPE_STRING)
    _field(request, "descriptors", 2, _F.TYPE_MESSAGE, type_name=p + "RateLimitDescriptor",
           repeated=True)  # fmt: skip
    _field(request, "hits_addend", 3, _F.TYPE_UINT32)
    response = proto.message_type.add(name="RateLimitResponse")
    r = p + "RateLimitResponse."
    _enum(response, "Code", ("UNKNOWN", "OK", "OVER_LIMIT"))
    limit = response.nested_type.add(name="RateLimit")
    _enum(limit, "Unit", ("UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "YEAR"))
    _field(limit, "requests_per_unit", 1, _F.TYPE_UINT32)
    _field(limit, "unit", 2, _F.TYPE_ENUM, type_name=r + "RateLimit.Unit")
    _field(limit, "name", 3, _F.TYPE_STRING)
    quota = response.nested_type.add(name="Quota")
    quota.oneof_decl.add(name="expiration_specifier")
    _field(quota, "requests", 1, _F.TYPE_UINT32)
    _field(quota, "valid_until", 2, _F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp",
           oneof=0)  # fmt: skip
    _field(quota, "id", 3, _F.TYPE_STRING)
    status = response.nested_type.add(name="DescriptorStatus")
    _field(status, "code", 1, _F.TYPE_ENUM, type_name=r + "Code")
    _field(status, "current_limit", 2, _F.TYPE_MESSAGE, type_name=r + "RateLimit")
    _field(status, "limit_remaining", 3, _F.TYPE_UINT32)
    _field(status, "duration_until_reset", 4, _F.TYPE_MESSAGE,
           type_name=".google.protobuf.Duration")  # fmt: skip
    _field(status, "quota", 5, _F.TYPE_MESSAGE, type_name=r + "Quota")
    _field(response, "overall_code", 1, _F.TYPE_ENUM, type_name=r + "Code")
    _field(response, "statuses", 2, _F.TYPE_MESSAGE, type_name=r + "DescriptorStatus",
           repeated=True)  # fmt: skip
    _field(response, "response_headers_to_add", 3, _F.TYPE_MESSAGE, type_name=p + "HeaderValue",
           repeated=True)  # fmt: skip
    _field(response, "request_headers_to_add", 4, _F.TYPE_MESSAGE, type_name=p + "HeaderValue",
           repeated=True)  # fmt: skip
    _field(response, "raw_body", 5, _F.TYPE_BYTES)
    _field(response, "quota", 7, _F.TYPE_MESSAGE, type_name=r + "Quota")
    service = proto.service.add(name="RateLimitService")
    service.method.add(name=METHOD, input_type=p + "RateLimitRequest",
                       output_type=p + "RateLimitResponse")  # fmt: skip
    return proto


_POOL: Final = descriptor_pool.DescriptorPool()
for _module in (duration_pb2, timestamp_pb2, wrappers_pb2):
    _POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
_POOL.AddSerializedFile(_file().SerializeToString())

RateLimitRequest: Final[Any] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.RateLimitRequest")
)
RateLimitResponse: Final[Any] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.RateLimitResponse")
)
