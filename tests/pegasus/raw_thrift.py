"""Pegasus's protocol byte by byte, for what pypegasus3 0.0.1.1 does not
expose (incr, check_and_set, check_and_mutate, batch_get), for the Java
client's v1 header, and for the protocol's corners (no reply to
CLEAR_SCANNER, an unknown RPC name, a read away from the primary, pipelined and
split requests, query_cfg's err for an unknown table).

Usage: raw_thrift.py META_ADDRESSES TABLE
  TABLE: an existing table with 3 replicas per partition, all in place.

Requests are built here from the IDL's field numbers with the `thrift`
package's TBinaryProtocol (rDSN placeholders by hand: a blob is a Thrift
binary under a T_STRUCT field header, an rpc_address or gpid an i64, an
error_code a string), framed with a 48-byte v0 THFT header (or the 16-byte
v1 header and its request-meta struct) over a plain socket, routed by
RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX and pypegasus's own CRC-64. Replies
are parsed strictly: i32 total length counting itself, the error name, the
message header `<NAME>_ACK` with the request's seqid, and the result
struct's field 0, nothing left over.

Prints `ok NAME` / `FAIL NAME: DETAIL` per check (and `info NAME: ...`
lines) and exits non-zero on any failure.
"""

import os
import signal
import socket
import struct
import sys
import time

from harness import Report, expect, expect_true, meta_list, short

from thrift.protocol.TBinaryProtocol import TBinaryProtocol  # noqa: E402
from thrift.Thrift import TMessageType, TType  # noqa: E402
from thrift.transport.TTransport import TMemoryBuffer  # noqa: E402

from pypegasus.pgclient import PegasusHash  # noqa: E402

# Bound on one socket read or write.
SOCKET_TIMEOUT_S = 10.0
# How long the CLEAR_SCANNER check waits for a reply that must not come.
NO_REPLY_WAIT_S = 1.0
# Bound on the whole script.
SCRIPT_BOUND_S = 180
# Largest reply accepted.
REPLY_BYTES_MAX = 16 << 20

V0_HEADER = struct.Struct(">4sIIIIIiiIiQ")
V1_HEADER = struct.Struct(">4sIII")
assert V0_HEADER.size == 48 and V1_HEADER.size == 16

# rocksdb::Status codes in responses' `error` fields.
K_OK = 0
K_NOT_FOUND = 1
K_INVALID_ARGUMENT = 4
K_TRY_AGAIN = 13

# cas_check_type.
CT_NO_CHECK = 0
CT_VALUE_NOT_EXIST = 1
CT_VALUE_EXIST = 3
CT_VALUE_BYTES_EQUAL = 10
CT_VALUE_INT_GREATER = 17

# mutate_operation.
MO_PUT = 0
MO_DELETE = 1

# Kinds of fields: scalars by name; rDSN placeholders ("blob",
# "error_code", "gpid", "rpc_address", "host_port") sit under a T_STRUCT
# header; ("struct", SCHEMA) and ("list", KIND) nest.
SCALAR_TTYPES = {"bool": TType.BOOL, "i32": TType.I32, "i64": TType.I64, "string": TType.STRING}
PLACEHOLDERS = ("blob", "error_code", "gpid", "rpc_address", "host_port")

PARTITION_CONFIGURATION = {
    1: ("pid", "gpid"),
    2: ("ballot", "i64"),
    3: ("max_replica_count", "i32"),
    4: ("primary", "rpc_address"),
    5: ("secondaries", ("list", "rpc_address")),
    6: ("last_drops", ("list", "rpc_address")),
    7: ("last_committed_decree", "i64"),
    8: ("partition_flags", "i32"),
    9: ("hp_primary", "host_port"),
    10: ("hp_secondaries", ("list", "host_port")),
    11: ("hp_last_drops", ("list", "host_port")),
}
QUERY_CFG_RESPONSE = {
    1: ("err", "error_code"),
    2: ("app_id", "i32"),
    3: ("partition_count", "i32"),
    4: ("is_stateful", "bool"),
    5: ("partitions", ("list", ("struct", PARTITION_CONFIGURATION))),
}
UPDATE_RESPONSE = {
    1: ("error", "i32"),
    2: ("app_id", "i32"),
    3: ("partition_index", "i32"),
    4: ("decree", "i64"),
    5: ("server", "string"),
}
READ_RESPONSE = {
    1: ("error", "i32"),
    2: ("value", "blob"),
    3: ("app_id", "i32"),
    4: ("partition_index", "i32"),
    6: ("server", "string"),
}
TTL_RESPONSE = {
    1: ("error", "i32"),
    2: ("ttl_seconds", "i32"),
    3: ("app_id", "i32"),
    4: ("partition_index", "i32"),
    6: ("server", "string"),
}
INCR_RESPONSE = {
    1: ("error", "i32"),
    2: ("new_value", "i64"),
    3: ("app_id", "i32"),
    4: ("partition_index", "i32"),
    5: ("decree", "i64"),
    6: ("server", "string"),
}
CHECK_AND_SET_RESPONSE = {
    1: ("error", "i32"),
    2: ("check_value_returned", "bool"),
    3: ("check_value_exist", "bool"),
    4: ("check_value", "blob"),
    5: ("app_id", "i32"),
    6: ("partition_index", "i32"),
    7: ("decree", "i64"),
    8: ("server", "string"),
}
# check_and_mutate_response has the same fields.
CHECK_AND_MUTATE_RESPONSE = CHECK_AND_SET_RESPONSE
FULL_DATA = {1: ("hash_key", "blob"), 2: ("sort_key", "blob"), 3: ("value", "blob")}
BATCH_GET_RESPONSE = {
    1: ("error", "i32"),
    2: ("data", ("list", ("struct", FULL_DATA))),
    3: ("app_id", "i32"),
    4: ("partition_index", "i32"),
    6: ("server", "string"),
}
KEY_VALUE = {1: ("key", "blob"), 2: ("value", "blob"), 3: ("expire_ts_seconds", "i64")}
SCAN_RESPONSE = {
    1: ("error", "i32"),
    2: ("kvs", ("list", ("struct", KEY_VALUE))),
    3: ("context_id", "i64"),
    4: ("app_id", "i32"),
    5: ("partition_index", "i32"),
    6: ("server", "string"),
    7: ("kv_count", "i32"),
}


def ttype_of(kind):
    if isinstance(kind, tuple):
        return TType.STRUCT if kind[0] == "struct" else TType.LIST
    if kind in PLACEHOLDERS:
        return TType.STRUCT
    return SCALAR_TTYPES[kind]


# -- writing ------------------------------------------------------------------


def write_struct(proto, fields):
    """Writes [(field_id, kind, value)] as a struct; None values are left out."""
    proto.writeStructBegin("request")
    for field_id, kind, value in fields:
        if value is None:
            continue
        proto.writeFieldBegin("field", ttype_of(kind), field_id)
        write_value(proto, kind, value)
        proto.writeFieldEnd()
    proto.writeFieldStop()
    proto.writeStructEnd()


def write_value(proto, kind, value):
    if isinstance(kind, tuple) and kind[0] == "struct":
        write_struct(proto, value)
    elif isinstance(kind, tuple) and kind[0] == "list":
        element = kind[1]
        proto.writeListBegin(ttype_of(element), len(value))
        for item in value:
            write_value(proto, element, item)
        proto.writeListEnd()
    elif kind == "blob":
        proto.writeBinary(value)
    elif kind in ("gpid", "rpc_address"):
        proto.writeI64(value)
    elif kind == "bool":
        proto.writeBool(value)
    elif kind == "i32":
        proto.writeI32(value)
    elif kind == "i64":
        proto.writeI64(value)
    elif kind == "string":
        proto.writeString(value)
    else:
        raise ValueError("cannot write kind %r" % (kind,))


def request_body(name, seqid, kind, value, strict=True, message_type=TMessageType.CALL):
    """writeMessageBegin(name, CALL, seqid), the args struct {1: request}, writeMessageEnd."""
    buffer = TMemoryBuffer()
    proto = TBinaryProtocol(buffer, strictWrite=strict)
    proto.writeMessageBegin(name, message_type, seqid)
    write_struct(proto, [(1, kind, value)])
    proto.writeMessageEnd()
    return buffer.getvalue()


def unsigned64(value):
    return value & 0xFFFFFFFFFFFFFFFF


def signed64(value):
    value = unsigned64(value)
    return value - (1 << 64) if value >= 1 << 63 else value


def thread_hash(app_id, partition_index):
    return app_id * 7919 + partition_index


def frame_v0(body, app_id, partition_index, partition_hash=0, timeout_ms=5000):
    header = V0_HEADER.pack(
        b"THFT",
        0,
        V0_HEADER.size,
        0,
        len(body),
        0,
        app_id,
        partition_index,
        timeout_ms,
        thread_hash(app_id, partition_index),
        unsigned64(partition_hash),
    )
    return header + body


def frame_v1(body, app_id, partition_index, partition_hash=0, timeout_ms=5000):
    """The Java client's framing: 16 bytes, thrift_request_meta_v1, body."""
    buffer = TMemoryBuffer()
    write_struct(
        TBinaryProtocol(buffer),
        [
            (1, "i32", app_id),
            (2, "i32", partition_index),
            (3, "i32", timeout_ms),
            (4, "i64", signed64(partition_hash)),
            (5, "bool", False),
        ],
    )
    meta = buffer.getvalue()
    return V1_HEADER.pack(b"THFT", 1, len(meta), len(body)) + meta + body


# -- reading ------------------------------------------------------------------


def read_struct(proto, schema, what):
    """A struct as {name: value}; a field not in `schema` is skipped unless
    it is a T_STRUCT (a placeholder cannot be skipped generically)."""
    fields = {}
    proto.readStructBegin()
    while True:
        _, ttype, field_id = proto.readFieldBegin()
        if ttype == TType.STOP:
            break
        if field_id not in schema:
            expect_true(ttype != TType.STRUCT, "%s: unknown T_STRUCT field %d" % (what, field_id))
            proto.skip(ttype)
        else:
            name, kind = schema[field_id]
            expect(ttype, ttype_of(kind), "%s.%s's Thrift type" % (what, name))
            fields[name] = read_value(proto, kind, "%s.%s" % (what, name))
        proto.readFieldEnd()
    proto.readStructEnd()
    return fields


def read_value(proto, kind, what):
    if isinstance(kind, tuple) and kind[0] == "struct":
        return read_struct(proto, kind[1], what)
    if isinstance(kind, tuple) and kind[0] == "list":
        element_ttype, size = proto.readListBegin()
        expect(element_ttype, ttype_of(kind[1]), "%s's element type" % what)
        items = [read_value(proto, kind[1], "%s[%d]" % (what, index)) for index in range(size)]
        proto.readListEnd()
        return items
    if kind == "blob":
        return proto.readBinary()
    if kind == "error_code":
        return proto.readBinary().decode()
    if kind in ("gpid", "rpc_address"):
        return unsigned64(proto.readI64())
    if kind == "host_port":
        host = proto.readBinary().decode()
        port = proto.readI16() & 0xFFFF
        host_type = proto.readByte()
        return (host, port, host_type)
    if kind == "bool":
        return proto.readBool()
    if kind == "i32":
        return proto.readI32()
    if kind == "i64":
        return proto.readI64()
    if kind == "string":
        return proto.readBinary().decode()
    raise ValueError("cannot read kind %r" % (kind,))


class Reply:
    def __init__(self, error_name, name, message_type, seqid, result):
        self.error_name = error_name
        self.name = name
        self.message_type = message_type
        self.seqid = seqid
        self.result = result

    def __repr__(self):
        return "Reply(%s, %s, seqid %d, %s)" % (self.error_name, self.name, self.seqid, short(self.result, 300))


def parse_reply(frame, schema, what):
    """`frame`: the bytes after the i32 total length."""
    buffer = TMemoryBuffer(frame)
    proto = TBinaryProtocol(buffer)
    error_name = proto.readBinary().decode()
    name, message_type, seqid = proto.readMessageBegin()
    result = None
    if error_name == "ERR_OK" and schema is not None:
        proto.readStructBegin()
        _, ttype, field_id = proto.readFieldBegin()
        expect((field_id, ttype), (0, TType.STRUCT), "%s: the result struct's first field (id, type)" % what)
        result = read_struct(proto, schema, what)
        proto.readFieldEnd()
        _, ttype, _ = proto.readFieldBegin()
        expect(ttype, TType.STOP, "%s: what follows the result's field 0" % what)
        proto.readStructEnd()
    proto.readMessageEnd()
    left = len(frame) - buffer._buffer.tell()
    expect(left, 0, "%s: bytes left over after the reply (error %s)" % (what, error_name))
    return Reply(error_name, name, message_type, seqid, result)


class Connection:
    """One socket to a meta or a shard port."""

    def __init__(self, address):
        host, port = address
        self.address = "%s:%d" % (host, port)
        self.socket = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data):
        self.socket.sendall(data)

    def read_exact(self, count, what):
        chunks = []
        while count:
            chunk = self.socket.recv(count)
            if not chunk:
                raise AssertionError("%s: %s closed the connection" % (what, self.address))
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def read_frame(self, what):
        (total,) = struct.unpack(">i", self.read_exact(4, what))
        expect_true(4 < total <= REPLY_BYTES_MAX, "%s: reply length %d (it counts its own 4 bytes)" % (what, total))
        return self.read_exact(total - 4, what)

    def close(self):
        self.socket.close()


class Cluster:
    """What the checks share: routing, sockets, seqids."""

    def __init__(self, metas, table):
        self.metas = metas
        self.table = table
        self.seqid = 0
        self.connections = {}
        self.app_id = None
        self.partition_count = None
        self.primaries = []
        PegasusHash.populate_table()

    def next_seqid(self):
        self.seqid += 1
        return self.seqid

    def connection(self, address):
        if address not in self.connections:
            self.connections[address] = Connection(address)
        return self.connections[address]

    def call(self, address, name, kind, value, schema, app_id=0, partition_index=0, partition_hash=0, framing=frame_v0):
        """One request on the cached connection to `address`; its reply."""
        seqid = self.next_seqid()
        connection = self.connection(address)
        body = request_body(name, seqid, kind, value)
        connection.send(framing(body, app_id, partition_index, partition_hash))
        what = "%s to %s" % (name, connection.address)
        reply = parse_reply(connection.read_frame(what), schema, what)
        expect(reply.name, name + "_ACK", "%s: reply's message name" % what)
        expect(reply.message_type, TMessageType.REPLY, "%s: reply's message type" % what)
        expect(reply.seqid, seqid, "%s: reply's seqid" % what)
        return reply

    def query_config(self, table, address=None):
        request = [(1, "string", table), (2, ("list", "i32"), [])]
        reply = self.call(
            address or self.metas[0],
            "RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX",
            ("struct", None),
            request,
            QUERY_CFG_RESPONSE,
        )
        expect(reply.error_name, "ERR_OK", "query_cfg's RPC error")
        return reply.result

    def route(self, hash_key):
        """(address of the primary, app_id, partition_index, partition_hash)."""
        partition_hash = unsigned64(PegasusHash.default_hash(hash_key))
        partition_index = partition_hash % self.partition_count
        return self.primaries[partition_index], self.app_id, partition_index, partition_hash

    def data_call(self, name, kind, value, schema, hash_key, framing=frame_v0, expect_ok=True):
        address, app_id, partition_index, partition_hash = self.route(hash_key)
        reply = self.call(address, name, kind, value, schema, app_id, partition_index, partition_hash, framing)
        if expect_ok:
            expect(reply.error_name, "ERR_OK", "%s's RPC error" % name)
        return reply

    # The data RPCs.

    def put(self, hash_key, sort_key, value, expire_ts_seconds=0, framing=frame_v0):
        request = [(1, "blob", encode_key(hash_key, sort_key)), (2, "blob", value), (3, "i32", expire_ts_seconds)]
        reply = self.data_call("RPC_RRDB_RRDB_PUT", ("struct", None), request, UPDATE_RESPONSE, hash_key, framing)
        expect(reply.result["error"], K_OK, "put %r/%r's error" % (hash_key, sort_key))

    def get(self, hash_key, sort_key, framing=frame_v0):
        """read_response of a get."""
        key = encode_key(hash_key, sort_key)
        return self.data_call("RPC_RRDB_RRDB_GET", "blob", key, READ_RESPONSE, hash_key, framing).result

    def expect_value(self, hash_key, sort_key, value):
        response = self.get(hash_key, sort_key)
        expect((response["error"], response.get("value")), (K_OK, value), "get %r/%r" % (hash_key, sort_key))

    def expect_missing(self, hash_key, sort_key):
        response = self.get(hash_key, sort_key)
        expect(response["error"], K_NOT_FOUND, "get %r/%r's error" % (hash_key, sort_key))

    def incr(self, hash_key, sort_key, increment, expire_ts_seconds=0):
        request = [(1, "blob", encode_key(hash_key, sort_key)), (2, "i64", increment), (3, "i32", expire_ts_seconds)]
        return self.data_call("RPC_RRDB_RRDB_INCR", ("struct", None), request, INCR_RESPONSE, hash_key).result

    def check_and_set(self, hash_key, check_sort_key, check_type, operand, set_sort_key, set_value):
        request = [
            (1, "blob", hash_key),
            (2, "blob", check_sort_key),
            (3, "i32", check_type),
            (4, "blob", operand),
            (5, "bool", set_sort_key != check_sort_key),
            (6, "blob", set_sort_key),
            (7, "blob", set_value),
            (8, "i32", 0),
            (9, "bool", True),
        ]
        return self.data_call(
            "RPC_RRDB_RRDB_CHECK_AND_SET", ("struct", None), request, CHECK_AND_SET_RESPONSE, hash_key
        ).result

    def check_and_mutate(self, hash_key, check_sort_key, check_type, operand, mutations):
        """`mutations`: [(MO_PUT, sort_key, value) or (MO_DELETE, sort_key, None)]."""
        mutate_list = [
            [(1, "i32", operation), (2, "blob", sort_key), (3, "blob", value or b""), (4, "i32", 0)]
            for operation, sort_key, value in mutations
        ]
        request = [
            (1, "blob", hash_key),
            (2, "blob", check_sort_key),
            (3, "i32", check_type),
            (4, "blob", operand),
            (5, ("list", ("struct", None)), mutate_list),
            (6, "bool", True),
        ]
        return self.data_call(
            "RPC_RRDB_RRDB_CHECK_AND_MUTATE", ("struct", None), request, CHECK_AND_MUTATE_RESPONSE, hash_key
        ).result

    def close(self):
        for connection in self.connections.values():
            connection.close()


def encode_key(hash_key, sort_key):
    """Pegasus's key: u16 big-endian hash key length, hash key, sort key."""
    return struct.pack(">H", len(hash_key)) + hash_key + sort_key


def decode_address(address):
    """An rpc_address i64 as (host, port); asserts its IPv4 type tag."""
    expect(address & 0xFFFF, 1, "rpc_address %#x's type tag (1 = IPv4)" % address)
    return socket.inet_ntoa(struct.pack(">I", address >> 32)), (address >> 16) & 0xFFFF


def epoch_now():
    """Seconds since Pegasus's TTL epoch, 2016-01-01 00:00:00 UTC."""
    return int(time.time()) - 1451606400


class Checks:
    def __init__(self, cluster):
        self.cluster = cluster

    # -- meta ----------------------------------------------------------

    def query_config(self):
        cluster = self.cluster
        config = cluster.query_config(cluster.table)
        expect(config.get("err"), "ERR_OK", "query_cfg_response.err")
        count = config.get("partition_count")
        expect_true(count is not None and count >= 2 and count & (count - 1) == 0, "partition_count %r" % count)
        expect(config.get("is_stateful"), True, "is_stateful")
        app_id = config.get("app_id")
        expect_true(app_id is not None and app_id > 0, "app_id %r" % app_id)
        partitions = config.get("partitions", [])
        expect(len(partitions), count, "partitions listed")
        cluster.app_id, cluster.partition_count = app_id, count
        listed = []
        for index, partition in enumerate(partitions):
            what = "partition %d" % index
            expect(partition.get("pid"), (index << 32) | app_id, "%s's gpid (index << 32 | app_id)" % what)
            expect_true(partition.get("ballot", 0) >= 1, "%s's ballot %r" % (what, partition.get("ballot")))
            primary = partition.get("primary", 0)
            expect_true(primary != 0, "%s has no primary" % what)
            cluster.primaries.append(decode_address(primary))
            # No client needs the secondaries to route (Java reads them
            # for backup requests only): reported, not required.
            secondaries = [decode_address(address) for address in partition.get("secondaries", [])]
            expect_true(cluster.primaries[-1] not in secondaries, "%s's primary is also a secondary" % what)
            listed.append(len(secondaries))
        print("info query_config: secondaries listed per partition: %s" % listed, flush=True)

    def query_config_unknown_table(self):
        config = self.cluster.query_config("no_such_table_in_markab")
        expect(config.get("err"), "ERR_OBJECT_NOT_FOUND", "query_cfg_response.err of an unknown table")

    def query_config_non_strict_header(self):
        # Strict message headers are what clients write; a reader should
        # take the old non-strict form (name first, then a type byte) too.
        cluster = self.cluster
        seqid = cluster.next_seqid()
        request = [(1, "string", cluster.table), (2, ("list", "i32"), [])]
        body = request_body("RPC_CM_QUERY_PARTITION_CONFIG_BY_INDEX", seqid, ("struct", None), request, strict=False)
        connection = Connection(cluster.metas[0])
        try:
            connection.send(frame_v0(body, 0, 0))
            reply = parse_reply(connection.read_frame("non-strict query_cfg"), QUERY_CFG_RESPONSE, "query_cfg")
        finally:
            connection.close()
        expect((reply.error_name, reply.seqid), ("ERR_OK", seqid), "reply (error, seqid)")
        expect(reply.result.get("partition_count"), cluster.partition_count, "partition_count")

    # -- plain records -------------------------------------------------

    def put_get_with_partition_hash(self):
        # Headers here carry the real partition hash (pypegasus3 sends 0).
        self.cluster.put(b"raw-basic", b"sk", b"\x00\x01raw value\xff")
        self.cluster.expect_value(b"raw-basic", b"sk", b"\x00\x01raw value\xff")

    def get_missing_is_storage_not_found(self):
        # RPC ERR_OK with error 1 (kNotFound), never an RPC-level error.
        self.cluster.expect_missing(b"raw-basic", b"missing")

    def ttl_rpc(self):
        cluster = self.cluster
        cluster.put(b"raw-ttl", b"sk", b"v", expire_ts_seconds=epoch_now() + 100)
        key = encode_key(b"raw-ttl", b"sk")
        response = cluster.data_call("RPC_RRDB_RRDB_TTL", "blob", key, TTL_RESPONSE, b"raw-ttl").result
        expect(response["error"], K_OK, "ttl's error")
        expect_true(95 <= response.get("ttl_seconds", -5) <= 100, "ttl_seconds %r" % response.get("ttl_seconds"))

    # -- incr ------------------------------------------------------------

    def incr(self):
        cluster = self.cluster
        response = cluster.incr(b"raw-incr", b"counter", 1)
        expect((response["error"], response.get("new_value")), (K_OK, 1), "incr of a missing record by 1")
        response = cluster.incr(b"raw-incr", b"counter", 5)
        expect((response["error"], response.get("new_value")), (K_OK, 6), "incr by 5")
        response = cluster.incr(b"raw-incr", b"counter", -10)
        expect((response["error"], response.get("new_value")), (K_OK, -4), "incr by -10")
        cluster.expect_value(b"raw-incr", b"counter", b"-4")

    def incr_sets_ttl(self):
        cluster = self.cluster
        response = cluster.incr(b"raw-incr", b"ttl", 7, expire_ts_seconds=epoch_now() + 100)
        expect((response["error"], response.get("new_value")), (K_OK, 7), "incr with a TTL")
        key = encode_key(b"raw-incr", b"ttl")
        ttl = cluster.data_call("RPC_RRDB_RRDB_TTL", "blob", key, TTL_RESPONSE, b"raw-incr").result
        expect_true(95 <= ttl.get("ttl_seconds", -5) <= 100, "ttl after incr %r" % ttl)

    def incr_of_a_non_integer_is_invalid_argument(self):
        cluster = self.cluster
        cluster.put(b"raw-incr", b"text", b"not a number")
        response = cluster.incr(b"raw-incr", b"text", 1)
        expect(response["error"], K_INVALID_ARGUMENT, "incr of a non-integer value (kInvalidArgument)")
        cluster.expect_value(b"raw-incr", b"text", b"not a number")

    # -- check_and_set ---------------------------------------------------

    def check_and_set_success(self):
        response = self.cluster.check_and_set(b"raw-cas", b"c", CT_VALUE_NOT_EXIST, b"", b"c", b"v1")
        expect(response["error"], K_OK, "check_and_set on a missing record")
        expect(response.get("check_value_returned"), True, "check_value_returned")
        expect(response.get("check_value_exist"), False, "check_value_exist")
        self.cluster.expect_value(b"raw-cas", b"c", b"v1")

    def check_and_set_failure(self):
        response = self.cluster.check_and_set(b"raw-cas", b"c", CT_VALUE_NOT_EXIST, b"", b"c", b"v2")
        expect(response["error"], K_TRY_AGAIN, "check_and_set whose check fails (kTryAgain)")
        expect(response.get("check_value_returned"), True, "check_value_returned")
        expect(response.get("check_value_exist"), True, "check_value_exist")
        expect(response.get("check_value"), b"v1", "check_value")
        self.cluster.expect_value(b"raw-cas", b"c", b"v1")

    def check_and_set_other_sort_key(self):
        response = self.cluster.check_and_set(b"raw-cas", b"c", CT_VALUE_BYTES_EQUAL, b"v1", b"d", b"dv")
        expect(response["error"], K_OK, "check_and_set with a bytes-equal check")
        expect(response.get("check_value"), b"v1", "check_value")
        self.cluster.expect_value(b"raw-cas", b"d", b"dv")
        self.cluster.expect_value(b"raw-cas", b"c", b"v1")

    def check_and_set_int_compare(self):
        cluster = self.cluster
        cluster.put(b"raw-cas", b"n", b"42")
        response = cluster.check_and_set(b"raw-cas", b"n", CT_VALUE_INT_GREATER, b"100", b"n", b"0")
        expect(response["error"], K_TRY_AGAIN, "42 > 100 fails")
        response = cluster.check_and_set(b"raw-cas", b"n", CT_VALUE_INT_GREATER, b"7", b"n", b"43")
        expect(response["error"], K_OK, "42 > 7 passes")
        cluster.expect_value(b"raw-cas", b"n", b"43")

    # -- check_and_mutate ------------------------------------------------

    def check_and_mutate(self):
        cluster = self.cluster
        cluster.put(b"raw-cam", b"check", b"here")
        cluster.put(b"raw-cam", b"gone", b"to be deleted")
        response = cluster.check_and_mutate(
            b"raw-cam", b"check", CT_VALUE_EXIST, b"", [(MO_PUT, b"m1", b"x"), (MO_DELETE, b"gone", None)]
        )
        expect(response["error"], K_OK, "check_and_mutate whose check passes")
        expect((response.get("check_value_exist"), response.get("check_value")), (True, b"here"), "check value")
        cluster.expect_value(b"raw-cam", b"m1", b"x")
        cluster.expect_missing(b"raw-cam", b"gone")

    def check_and_mutate_failure(self):
        cluster = self.cluster
        response = cluster.check_and_mutate(b"raw-cam", b"check", CT_VALUE_NOT_EXIST, b"", [(MO_PUT, b"m2", b"y")])
        expect(response["error"], K_TRY_AGAIN, "check_and_mutate whose check fails (kTryAgain)")
        expect((response.get("check_value_exist"), response.get("check_value")), (True, b"here"), "check value")
        cluster.expect_missing(b"raw-cam", b"m2")

    # -- batch_get -------------------------------------------------------

    def batch_get(self):
        cluster = self.cluster
        cluster.put(b"raw-batch", b"a", b"va")
        cluster.put(b"raw-batch", b"b", b"vb")
        keys = [[(1, "blob", b"raw-batch"), (2, "blob", sort_key)] for sort_key in (b"b", b"missing", b"a")]
        reply = cluster.data_call(
            "RPC_RRDB_RRDB_BATCH_GET",
            ("struct", None),
            [(1, ("list", ("struct", None)), keys)],
            BATCH_GET_RESPONSE,
            b"raw-batch",
            expect_ok=False,
        )
        if reply.error_name == "ERR_HANDLER_NOT_FOUND":
            print("info batch_get: answered ERR_HANDLER_NOT_FOUND (not served)", flush=True)
            return
        expect(reply.error_name, "ERR_OK", "batch_get's RPC error (ERR_OK, or ERR_HANDLER_NOT_FOUND if not served)")
        response = reply.result
        expect(response["error"], K_OK, "batch_get's error")
        data = [(item.get("hash_key"), item.get("sort_key"), item.get("value")) for item in response.get("data", [])]
        expect(data, [(b"raw-batch", b"b", b"vb"), (b"raw-batch", b"a", b"va")], "batch_get's records")
        print("info batch_get: served", flush=True)

    # -- framing -----------------------------------------------------------

    def v1_header(self):
        # The Java client's 16-byte header and request meta, for a write
        # and a read; the v0 header reads the write back.
        cluster = self.cluster
        cluster.put(b"raw-v1", b"sk", b"written with v1", framing=frame_v1)
        response = cluster.get(b"raw-v1", b"sk", framing=frame_v1)
        expect((response["error"], response.get("value")), (K_OK, b"written with v1"), "v1 get")
        cluster.expect_value(b"raw-v1", b"sk", b"written with v1")

    def pipelined_requests(self):
        # Three requests in one write; the replies are matched by seqid.
        cluster = self.cluster
        cluster.put(b"raw-pipe", b"a", b"1")
        cluster.put(b"raw-pipe", b"b", b"2")
        address, app_id, partition_index, partition_hash = cluster.route(b"raw-pipe")
        connection = cluster.connection(address)
        expected = {}
        data = b""
        for sort_key, value in ((b"a", b"1"), (b"b", b"2"), (b"c", None)):
            seqid = cluster.next_seqid()
            expected[seqid] = value
            body = request_body("RPC_RRDB_RRDB_GET", seqid, "blob", encode_key(b"raw-pipe", sort_key))
            data += frame_v0(body, app_id, partition_index, partition_hash)
        connection.send(data)
        for _ in range(3):
            reply = parse_reply(connection.read_frame("pipelined get"), READ_RESPONSE, "pipelined get")
            expect_true(reply.seqid in expected, "reply seqid %d not among %s" % (reply.seqid, sorted(expected)))
            value = expected.pop(reply.seqid)
            got = (reply.result["error"], reply.result.get("value")) if value else reply.result["error"]
            expect(got, (K_OK, value) if value else K_NOT_FOUND, "pipelined get seqid %d" % reply.seqid)

    def request_in_pieces(self):
        # A request split mid-header and mid-body still reads as one.
        cluster = self.cluster
        cluster.put(b"raw-split", b"sk", b"whole")
        address, app_id, partition_index, partition_hash = cluster.route(b"raw-split")
        connection = cluster.connection(address)
        seqid = cluster.next_seqid()
        body = request_body("RPC_RRDB_RRDB_GET", seqid, "blob", encode_key(b"raw-split", b"sk"))
        frame = frame_v0(body, app_id, partition_index, partition_hash)
        for start, end in ((0, 3), (3, 30), (30, 52), (52, len(frame))):
            connection.send(frame[start:end])
            time.sleep(0.05)
        reply = parse_reply(connection.read_frame("split get"), READ_RESPONSE, "split get")
        expect((reply.seqid, reply.result["error"], reply.result.get("value")), (seqid, K_OK, b"whole"), "split get")

    def unknown_rpc_name(self):
        cluster = self.cluster
        address, app_id, partition_index, partition_hash = cluster.route(b"raw-basic")
        reply = cluster.call(
            address,
            "RPC_RRDB_RRDB_NO_SUCH_THING",
            "blob",
            encode_key(b"raw-basic", b"sk"),
            None,
            app_id,
            partition_index,
            partition_hash,
        )
        expect(reply.error_name, "ERR_HANDLER_NOT_FOUND", "an unknown RPC name's error")
        # The connection still serves.
        cluster.expect_value(b"raw-basic", b"sk", b"\x00\x01raw value\xff")

    def read_elsewhere_is_refused_or_forwarded(self):
        # Reads are served by primaries only. Sent to every other shard
        # that hosts a primary (3 replicas on 3 nodes: some of them are on
        # nodes with a secondary of the partition), a get is either
        # forwarded to the primary's shard on the same node and answered,
        # or refused with an RPC-level error that makes clients re-query
        # meta; some shard refuses.
        cluster = self.cluster
        hash_key = b"raw-basic"
        primary, app_id, partition_index, partition_hash = cluster.route(hash_key)
        answers = {}
        for address in sorted(set(cluster.primaries) - {primary}):
            reply = cluster.call(
                address,
                "RPC_RRDB_RRDB_GET",
                "blob",
                encode_key(hash_key, b"sk"),
                READ_RESPONSE,
                app_id,
                partition_index,
                partition_hash,
            )
            if reply.error_name == "ERR_OK":
                value = (reply.result["error"], reply.result.get("value"))
                expect(value, (K_OK, b"\x00\x01raw value\xff"), "a get forwarded from %s:%d" % address)
            else:
                expect_true(
                    reply.error_name in ("ERR_INVALID_STATE", "ERR_OBJECT_NOT_FOUND"),
                    "a get at %s:%d, not the primary, answered %s (expected ERR_INVALID_STATE or "
                    "ERR_OBJECT_NOT_FOUND)" % (address + (reply.error_name,)),
                )
            answers["%s:%d" % address] = reply.error_name
        print("info read_elsewhere: %s" % answers, flush=True)
        expect_true(any(name != "ERR_OK" for name in answers.values()), "no shard refused: %s" % answers)

    # -- scanners ------------------------------------------------------------

    def get_scanner(self, hash_key, start_sort_key, stop_sort_key, batch_size):
        request = [
            (1, "blob", encode_key(hash_key, start_sort_key)),
            (2, "blob", encode_key(hash_key, stop_sort_key)),
            (3, "bool", True),
            (4, "bool", False),
            (5, "i32", batch_size),
            (6, "bool", False),
        ]
        return self.cluster.data_call(
            "RPC_RRDB_RRDB_GET_SCANNER", ("struct", None), request, SCAN_RESPONSE, hash_key
        ).result

    def scan(self, hash_key, context_id):
        request = [(1, "i64", context_id)]
        return self.cluster.data_call("RPC_RRDB_RRDB_SCAN", ("struct", None), request, SCAN_RESPONSE, hash_key).result

    def scan_and_clear_scanner(self):
        cluster = self.cluster
        for sort_key in (b"s1", b"s2", b"s3"):
            cluster.put(b"raw-scan", sort_key, b"v" + sort_key)
        response = self.get_scanner(b"raw-scan", b"s1", b"s9", 1)
        expect(response["error"], K_OK, "get_scanner's error")
        kvs = [(kv.get("key"), kv.get("value")) for kv in response.get("kvs", [])]
        expect(kvs, [(encode_key(b"raw-scan", b"s1"), b"vs1")], "first batch (full keys)")
        context_id = response.get("context_id", -1)
        expect_true(context_id >= 0, "context_id %r with records left" % context_id)
        response = self.scan(b"raw-scan", context_id)
        kvs = [(kv.get("key"), kv.get("value")) for kv in response.get("kvs", [])]
        expect((response["error"], kvs), (K_OK, [(encode_key(b"raw-scan", b"s2"), b"vs2")]), "second batch")
        context_id = response.get("context_id", -1)
        expect_true(context_id >= 0, "context_id %r with a record left" % context_id)
        # CLEAR_SCANNER is sent as a call but gets no reply at all: the next
        # frame on the connection is the get's.
        address, app_id, partition_index, partition_hash = cluster.route(b"raw-scan")
        connection = cluster.connection(address)
        clear = request_body("RPC_RRDB_RRDB_CLEAR_SCANNER", cluster.next_seqid(), "i64", context_id)
        connection.send(frame_v0(clear, app_id, partition_index, partition_hash))
        connection.socket.settimeout(NO_REPLY_WAIT_S)
        try:
            early = connection.socket.recv(1, socket.MSG_PEEK)
        except socket.timeout:
            early = b""
        finally:
            connection.socket.settimeout(SOCKET_TIMEOUT_S)
        expect(early, b"", "bytes received after CLEAR_SCANNER (it must get no reply)")
        cluster.expect_value(b"raw-scan", b"s3", b"vs3")
        # The cleared context is gone: scan answers kNotFound.
        response = self.scan(b"raw-scan", context_id)
        expect(response["error"], K_NOT_FOUND, "scan of a cleared context")


CHECKS = [
    "query_config",
    "query_config_unknown_table",
    "query_config_non_strict_header",
    "put_get_with_partition_hash",
    "get_missing_is_storage_not_found",
    "ttl_rpc",
    "incr",
    "incr_sets_ttl",
    "incr_of_a_non_integer_is_invalid_argument",
    "check_and_set_success",
    "check_and_set_failure",
    "check_and_set_other_sort_key",
    "check_and_set_int_compare",
    "check_and_mutate",
    "check_and_mutate_failure",
    "batch_get",
    "v1_header",
    "pipelined_requests",
    "request_in_pieces",
    "unknown_rpc_name",
    "read_elsewhere_is_refused_or_forwarded",
    "scan_and_clear_scanner",
]


def on_alarm(signum, frame):
    print("FAIL script: still running after %d s" % SCRIPT_BOUND_S, flush=True)
    os._exit(3)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    metas = [(host, int(port)) for host, port in (address.rsplit(":", 1) for address in meta_list(sys.argv[1]))]
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(SCRIPT_BOUND_S)
    cluster = Cluster(metas, sys.argv[2])
    checks = Checks(cluster)
    report = Report()
    for name in CHECKS:
        passed = report.check_sync(name, getattr(checks, name))
        if name == "query_config" and not passed:
            break  # nothing can be routed
        if not passed:
            # A failed check may leave a reply unread: start over on fresh
            # connections.
            cluster.close()
            cluster.connections = {}
    cluster.close()
    sys.exit(0 if report.summary() else 1)


if __name__ == "__main__":
    main()
