#!/usr/bin/env python3
"""libpierce from a managed language: Python's ctypes, standard library only.

The same declarations a C# P/Invoke binding makes (sequential-layout structs, int32 results,
opaque handles as pointers, borrowed bytes copied out at once): it loads libpierce.so, checks
the ABI version, parses and formats addresses, then runs a server and two clients of the
sans-IO layer on a virtual clock, carrying every datagram between them in memory (no
sockets): both connect, join one room and exchange reliable-ordered messages, all delivered
in order and acknowledged. Along the way it checks the error codes for NULL and foreign
handles, short buffers, bad addresses, bad names and flags, and frees everything.

Run by tests/ctypes.rs; by hand:
    PIERCE_LIB=target/debug/libpierce.so PIERCE_HEADER=runtime-mio/ffi/include/pierce.h \
        python3 runtime-mio/ffi/tests/ctypes_test.py
With PIERCE_CC set (a C compiler), it first compares every struct's size and every field's
offset as declared here with what the C compiler makes of pierce.h.
"""

import ctypes
import os
import re
import subprocess
import sys
import tempfile
from ctypes import (
    POINTER,
    Structure,
    byref,
    c_char_p,
    c_double,
    c_int16,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

# ---- the declarations (mirroring include/pierce.h) ---------------------------------------


class Addr(Structure):
    _fields_ = [("family", c_uint8), ("ip", c_uint8 * 16), ("port", c_uint16)]


class Transmit(Structure):
    _fields_ = [("dst", Addr), ("len", c_size_t), ("socket", c_uint16), ("ttl", c_uint8)]


class NatBehavior(Structure):
    _fields_ = [
        ("mapping", c_uint8),
        ("filtering", c_uint8),
        ("port_preserved", c_uint8),
        ("allocation", c_uint8),
        ("port_delta", c_int16),
        ("last_port", c_uint16),
        ("alternate", Addr),
    ]


class RoomInfo(Structure):
    _fields_ = [
        ("name", c_char_p),
        ("members", c_uint16),
        ("max_members", c_uint16),
        ("has_password", c_uint8),
        ("relay_only", c_uint8),
    ]


class ClientEvent(Structure):
    _fields_ = [
        ("kind", c_uint32),
        ("host", c_uint64),
        ("group", c_uint64),
        ("message_id", c_uint64),
        ("value", c_uint64),
        ("reason", c_uint32),
        ("code", c_uint32),
        ("channel", c_uint8),
        ("direct", c_uint8),
        ("addr", Addr),
        ("server", Addr),
        ("server_key", c_uint8 * 32),
        ("nat", NatBehavior),
        ("name", c_char_p),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
        ("rooms", POINTER(RoomInfo)),
        ("room_count", c_size_t),
    ]


class ServerEvent(Structure):
    _fields_ = [
        ("kind", c_uint32),
        ("host", c_uint64),
        ("group", c_uint64),
        ("user_id", c_uint64),
        ("has_user_id", c_uint8),
        ("reason", c_uint32),
        ("code", c_uint32),
        ("addr", Addr),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
    ]


class SocketRequest(Structure):
    _fields_ = [
        ("kind", c_uint32),
        ("socket", c_uint16),
        ("has_addr", c_uint8),
        ("addr", Addr),
    ]


class SendOptions(Structure):
    _fields_ = [("timeout_ms", c_uint32), ("max_retransmits", c_int32)]


class ClientConfig(Structure):
    _fields_ = [
        ("pin_server_key", c_uint8),
        ("server_key", c_uint8 * 32),
        ("direct_paths", c_uint8),
        ("ip_private", c_uint8),
        ("nat_discovery", c_uint8),
        ("reregister", c_uint8),
        ("transport", c_uint8),
        ("birthday_sockets", c_uint16),
        ("keepalive_interval_ms", c_uint32),
        ("idle_timeout_ms", c_uint32),
        ("connect_timeout_ms", c_uint32),
        ("pair_lifetime_ms", c_uint32),
        ("max_message_size", c_uint32),
        ("channel_count", c_uint32),
        ("channels", c_void_p),
    ]


class ServerConfig(Structure):
    _fields_ = [
        ("secret_key", c_uint8 * 32),
        ("rooms", c_uint8),
        ("relay_only_rooms", c_uint8),
        ("max_rooms", c_uint32),
        ("default_max_members", c_uint16),
        ("max_members_cap", c_uint16),
        ("max_clients", c_uint32),
        ("keepalive_interval_ms", c_uint32),
        ("idle_timeout_ms", c_uint32),
        ("offline_after_ms", c_uint32),
        ("token_secret", c_void_p),
        ("token_secret_len", c_size_t),
    ]


class ClientStats(Structure):
    _fields_ = [
        ("state", c_uint32),
        ("on_tcp", c_uint8),
        ("host_id", c_uint64),
        ("public_addr", Addr),
    ] + [
        (n, c_uint64)
        for n in (
            "server_rtt_us datagrams_in bytes_in datagrams_out bytes_out dropped "
            "events_dropped time_went_backwards relayed_out relayed_in direct_paths "
            "hellos_sent control_retransmits"
        ).split()
    ]


class PeerStats(Structure):
    _fields_ = (
        [("rtt_us", c_uint64), ("rtt_var_us", c_uint64), ("loss", c_double)]
        + [
            (n, c_uint64)
            for n in (
                "packets_sent packets_lost bytes_out bytes_in messages_out messages_in "
                "retransmits unacked queued_bytes"
            ).split()
        ]
        + [("direct", c_uint8), ("direct_addr", Addr)]
    )


# The C names of the structs above, for the layout check.
C_NAMES = {
    Addr: "PierceAddr",
    Transmit: "PierceTransmit",
    NatBehavior: "PierceNatBehavior",
    RoomInfo: "PierceRoomInfo",
    ClientEvent: "PierceClientEvent",
    ServerEvent: "PierceServerEvent",
    SocketRequest: "PierceSocketRequest",
    SendOptions: "PierceSendOptions",
    ClientConfig: "PierceClientConfig",
    ServerConfig: "PierceServerConfig",
    ClientStats: "PierceClientStats",
    PeerStats: "PiercePeerStats",
}

# PierceResult codes (pierce.h).
OK, NO_MORE = 0, 1
NULL_ARGUMENT, INVALID_HANDLE, BAD_ADDRESS, BUFFER_TOO_SMALL = -1, -2, -3, -4
INVALID_ARGUMENT, VERSION_MISMATCH, INVALID_NAME = -5, -18, -15
# Event kinds and constants used here.
EV_CONNECTED, EV_DISCONNECTED, EV_SERVER_MESSAGE, EV_MEMBER_JOINED = 1, 2, 3, 4
EV_PEER_MESSAGE, EV_MESSAGE_EXPIRED, EV_ROOM_JOINED, EV_ROOM_FAILED = 7, 8, 17, 20
SEV_CLIENT_JOINED, SEV_CLIENT_LEFT = 1, 3
SOCKET_OPEN, SOCKET_CONNECT = 1, 3
CHANNEL_RELIABLE_ORDERED = 0
TRANSPORT_UDP = 1
MAX_DATAGRAM_SIZE = 1452


def load(path):
    lib = ctypes.CDLL(path)
    R = c_int32  # PierceResult
    client, server = c_void_p, c_void_p  # opaque handles
    sigs = {
        "pierce_abi_version": (c_uint32, []),
        "pierce_check_version": (R, [c_uint32]),
        "pierce_version": (c_char_p, []),
        "pierce_result_name": (c_char_p, [c_int32]),
        "pierce_last_error_message": (c_size_t, [c_char_p, c_size_t]),
        "pierce_addr_parse": (R, [c_char_p, POINTER(Addr)]),
        "pierce_addr_format": (R, [POINTER(Addr), c_char_p, c_size_t, POINTER(c_size_t)]),
        "pierce_client_config_default": (R, [POINTER(ClientConfig)]),
        "pierce_server_config_default": (R, [POINTER(ServerConfig)]),
        "pierce_server_new": (
            R,
            [POINTER(ServerConfig), c_void_p, c_uint64, c_uint64, POINTER(server)],
        ),
        "pierce_server_free": (R, [server]),
        "pierce_server_public_key": (R, [server, POINTER(c_uint8)]),
        "pierce_server_handle_datagram": (
            R,
            [server, c_uint64, c_uint16, POINTER(Addr), c_char_p, c_size_t],
        ),
        "pierce_server_handle_timeout": (R, [server, c_uint64]),
        "pierce_server_poll_transmit": (
            R,
            [server, c_uint64, c_void_p, c_size_t, POINTER(Transmit)],
        ),
        "pierce_server_poll_timeout": (R, [server, POINTER(c_uint64)]),
        "pierce_server_poll_event": (R, [server, POINTER(ServerEvent)]),
        "pierce_server_poll_socket_request": (R, [server, POINTER(SocketRequest)]),
        "pierce_server_stats": (R, [server, c_void_p]),
        "pierce_client_new": (R, [POINTER(ClientConfig), c_void_p, c_uint64, POINTER(client)]),
        "pierce_client_free": (R, [client]),
        "pierce_client_connect": (R, [client, c_uint64, POINTER(Addr), c_void_p, c_size_t]),
        "pierce_client_handle_datagram": (
            R,
            [client, c_uint64, c_uint16, POINTER(Addr), c_char_p, c_size_t],
        ),
        "pierce_client_handle_timeout": (R, [client, c_uint64]),
        "pierce_client_poll_transmit": (
            R,
            [client, c_uint64, c_void_p, c_size_t, POINTER(Transmit)],
        ),
        "pierce_client_poll_timeout": (R, [client, POINTER(c_uint64)]),
        "pierce_client_poll_event": (R, [client, POINTER(ClientEvent)]),
        "pierce_client_poll_socket_request": (R, [client, POINTER(SocketRequest)]),
        "pierce_client_handle_socket_failed": (R, [client, c_uint64, c_uint16]),
        "pierce_client_join_room": (
            R,
            [client, c_uint64, c_char_p, c_char_p, c_uint8, c_uint16, c_uint8],
        ),
        "pierce_client_send": (
            R,
            [
                client,
                c_uint64,
                c_uint64,
                c_uint8,
                c_char_p,
                c_size_t,
                POINTER(SendOptions),
                POINTER(c_uint64),
            ],
        ),
        "pierce_client_send_to_server": (R, [client, c_uint64, c_char_p, c_size_t, c_uint8]),
        "pierce_client_disconnect": (R, [client, c_uint64, c_uint16]),
        "pierce_client_stats": (R, [client, POINTER(ClientStats)]),
        "pierce_client_peer_stats": (R, [client, c_uint64, POINTER(PeerStats)]),
    }
    for name, (restype, argtypes) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes
    return lib


LIB = None


def last_error():
    buf = ctypes.create_string_buffer(512)
    LIB.pierce_last_error_message(buf, len(buf))
    return buf.value.decode()


def call(name, *args):
    """Calls `name`, which must not return an error; returns its result (OK or NO_MORE)."""
    r = getattr(LIB, name)(*args)
    assert r >= 0, f"{name}: {LIB.pierce_result_name(r).decode()}: {last_error()}"
    return r


def expect(code, name, *args, mentions=None):
    """Calls `name`, which must return error `code` with a message (naming `mentions`)."""
    r = getattr(LIB, name)(*args)
    got = LIB.pierce_result_name(r).decode()
    want = LIB.pierce_result_name(code).decode()
    assert r == code, f"{name}: {got} ({last_error()}), expected {want}"
    msg = last_error()
    assert msg, f"{name}: {want} without a message"
    if mentions is not None:
        assert mentions in msg, f"{name}: {msg!r} does not mention {mentions!r}"
    return msg


def addr(text):
    a = Addr()
    call("pierce_addr_parse", text.encode(), byref(a))
    return a


def fmt(a):
    buf = ctypes.create_string_buffer(64)
    n = c_size_t()
    call("pierce_addr_format", byref(a), buf, len(buf), byref(n))
    assert len(buf.value) == n.value
    return buf.value.decode()


# ---- the checks --------------------------------------------------------------------------


def check_layout(cc, header):
    """Every struct's size and field offsets here equal the C compiler's for pierce.h."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "pierce.h"', "int main(void) {"]
    expected = []
    for py, cname in C_NAMES.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        expected.append(f"{cname} {ctypes.sizeof(py)}")
        for field, _ in py._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof({cname}, {field}));')
            expected.append(f"{cname}.{field} {getattr(py, field).offset}")
    lines += ["return 0;", "}"]
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "layout.c"), os.path.join(d, "layout")
        with open(src, "w") as f:
            f.write("\n".join(lines))
        include = os.path.dirname(os.path.abspath(header))
        cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", include, src, "-o", exe]
        subprocess.run(cmd, check=True)
        got = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split("\n")
    got = [g for g in got if g]
    diff = [(e, g) for e, g in zip(expected, got) if e != g]
    assert len(got) == len(expected) and not diff, f"layout differs (ctypes, C): {diff}"
    print(f"ok layout: {len(C_NAMES)} structs, {len(expected)} sizes and offsets match C")


def check_versions(header):
    with open(header) as f:
        want = int(re.search(r"#define PIERCE_ABI_VERSION (\d+)", f.read()).group(1))
    assert LIB.pierce_abi_version() == want, (LIB.pierce_abi_version(), want)
    call("pierce_check_version", want)
    msg = expect(VERSION_MISMATCH, "pierce_check_version", want + 1)
    assert str(want) in msg and str(want + 1) in msg, msg
    version = LIB.pierce_version().decode()
    if "PIERCE_VERSION" in os.environ:
        assert version == os.environ["PIERCE_VERSION"], version
    assert LIB.pierce_result_name(-7) == b"PIERCE_QUEUE_FULL"
    assert LIB.pierce_result_name(12345) == b"PIERCE_UNKNOWN_RESULT"
    # The message's size, asked with a 0-byte buffer, is its length plus the NUL.
    assert LIB.pierce_last_error_message(None, 0) == len(last_error().encode()) + 1
    print(f"ok versions: ABI {want}, library {version}")


def check_addresses():
    a = addr("1.2.3.4:7777")
    assert (a.family, list(a.ip[:4]), list(a.ip[4:]), a.port) == (4, [1, 2, 3, 4], [0] * 12, 7777)
    assert fmt(a) == "1.2.3.4:7777"
    b = addr("[::1]:65535")
    assert (b.family, list(b.ip), b.port) == (6, [0] * 15 + [1], 65535)
    assert fmt(b) == "[::1]:65535"
    for bad in ["", "1.2.3.4", "1.2.3.4:99999", "host.example:80", "[::1]", "1.2.3.4:-1"]:
        expect(BAD_ADDRESS, "pierce_addr_parse", bad.encode(), byref(Addr()))
    expect(INVALID_ARGUMENT, "pierce_addr_parse", b"\xff\xfe:1", byref(Addr()))
    expect(NULL_ARGUMENT, "pierce_addr_parse", None, byref(Addr()))
    expect(NULL_ARGUMENT, "pierce_addr_parse", b"1.2.3.4:1", None)
    # A short buffer: nothing written, the length needed reported.
    small, n = ctypes.create_string_buffer(b"untouched"), c_size_t()
    expect(BUFFER_TOO_SMALL, "pierce_addr_format", byref(a), small, 5, byref(n))
    assert n.value == len("1.2.3.4:7777") and small.value == b"untouched", (n, small.value)
    weird = Addr(family=5)
    expect(BAD_ADDRESS, "pierce_addr_format", byref(weird), small, len(small), None)
    print("ok addresses: parse, format, and their errors")


class Endpoint:
    """A server or client handle at a made-up address; the Net carries its datagrams."""

    def __init__(self, name, kind, handle, address):
        self.name, self.kind, self.h, self.addr = name, kind, handle, addr(address)
        self.events = []

    def f(self, verb):
        return getattr(LIB, f"pierce_{self.kind}_{verb}")


class Net:
    """Zero-latency, lossless delivery between endpoints on a virtual clock (microseconds)."""

    def __init__(self):
        self.now = 0
        self.eps = []
        self.delivered = 0
        self.buf = ctypes.create_string_buffer(MAX_DATAGRAM_SIZE)

    def by_addr(self, a):
        for e in self.eps:
            if e.addr.family == a.family and bytes(e.addr.ip) == bytes(a.ip) and e.addr.port == a.port:
                return e
        return None

    def drain(self, e):
        """Everything `e` wants to send, as (destination endpoint, bytes)."""
        out, t = [], Transmit()
        req = SocketRequest()
        while e.f("poll_socket_request")(e.h, byref(req)) == OK:
            # No sockets here but the primary one (the clients are configured so that they
            # ask for none); a request is refused as a failed bind would be, with the call
            # made for bindings that cannot pass a NULL struct pointer easily (C#).
            if e.kind == "client" and req.kind in (SOCKET_OPEN, SOCKET_CONNECT):
                call("pierce_client_handle_socket_failed", e.h, self.now, req.socket)
        while call(f"pierce_{e.kind}_poll_transmit", e.h, self.now, self.buf, len(self.buf), byref(t)) == OK:
            dst = self.by_addr(t.dst)
            if t.socket == 0 and dst is not None:
                out.append((dst, e.addr, self.buf.raw[: t.len]))
        return out

    def step(self, dt_us=1000):
        """Advances the clock, runs every timer, delivers until nothing is in flight."""
        self.now += dt_us
        for e in self.eps:
            call(f"pierce_{e.kind}_handle_timeout", e.h, self.now)
        for _ in range(1000):
            flying = [d for e in self.eps for d in self.drain(e)]
            if not flying:
                break
            for dst, src, data in flying:
                call(f"pierce_{dst.kind}_handle_datagram", dst.h, self.now, 0, byref(src), data, len(data))
                self.delivered += 1
        else:
            raise AssertionError("datagrams kept flying for 1000 rounds at one instant")
        for e in self.eps:
            self.collect(e)

    def collect(self, e):
        """Drains `e`'s events, copying borrowed bytes at once (valid until the next call)."""
        ev = ClientEvent() if e.kind == "client" else ServerEvent()
        while call(f"pierce_{e.kind}_poll_event", e.h, byref(ev)) == OK:
            payload = ctypes.string_at(ev.payload, ev.payload_len) if ev.payload else b""
            name = ev.name.decode() if e.kind == "client" and ev.name else None
            e.events.append((ev.kind, ev.host, ev.group, payload, name, getattr(ev, "channel", 0)))

    def run_until(self, done, what, limit_us=20_000_000):
        while not done():
            assert self.now < limit_us, f"not {what} after {limit_us / 1e6} virtual seconds"
            self.step()


def check_errors_before_use(cfg):
    """Bad handles, flags and arguments are refused with their codes, never a crash."""
    out = c_void_p()
    bad = ClientConfig.from_buffer_copy(cfg)
    bad.direct_paths = 2
    expect(INVALID_ARGUMENT, "pierce_client_new", byref(bad), None, 0, byref(out), mentions="direct_paths")
    assert out.value is None
    expect(NULL_ARGUMENT, "pierce_client_new", byref(cfg), None, 0, None)
    expect(NULL_ARGUMENT, "pierce_client_poll_event", None, byref(ClientEvent()))
    # A pointer that is no handle at all (a Python buffer): refused before it is read.
    foreign = ctypes.create_string_buffer(4096)
    expect(INVALID_HANDLE, "pierce_client_handle_timeout", ctypes.addressof(foreign), 0)
    call("pierce_client_free", None)  # NULL: nothing happens
    print("ok errors before use: bad flag, NULL output, NULL and foreign handles")


def check_exchange(count=50):
    scfg = ServerConfig()
    call("pierce_server_config_default", byref(scfg))
    assert scfg.rooms == 1 and scfg.default_max_members == 8 and scfg.max_members_cap == 64, (
        scfg.rooms,
        scfg.default_max_members,
        scfg.max_members_cap,
    )
    server = c_void_p()
    call("pierce_server_new", byref(scfg), None, 0, 0, byref(server))
    key = (c_uint8 * 32)()
    call("pierce_server_public_key", server, key)

    cfg = ClientConfig()
    call("pierce_client_config_default", byref(cfg))
    defaults = (cfg.direct_paths, cfg.keepalive_interval_ms, cfg.idle_timeout_ms, cfg.connect_timeout_ms)
    assert defaults == (1, 2000, 15000, 10000), defaults
    check_errors_before_use(cfg)
    cfg.pin_server_key, cfg.server_key = 1, key
    cfg.transport, cfg.birthday_sockets = TRANSPORT_UDP, 0

    net = Net()
    net.eps.append(Endpoint("server", "server", server, "10.0.0.1:7000"))
    clients = []
    for i in range(2):
        h = c_void_p()
        call("pierce_client_new", byref(cfg), bytes([i + 1]) * 32, 0, byref(h))
        e = Endpoint(f"client{i}", "client", h, f"10.0.{i + 2}.1:5000")
        net.eps.append(e)
        clients.append(e)

    # A bad server address, then the real one.
    expect(BAD_ADDRESS, "pierce_client_connect", clients[0].h, 0, byref(Addr(family=9)), None, 0)
    # A short poll_transmit buffer: the datagram is not lost, its size is reported.
    for c in clients:
        call("pierce_client_connect", c.h, 0, byref(net.eps[0].addr), None, 0)
    t, tiny = Transmit(), ctypes.create_string_buffer(8)
    expect(BUFFER_TOO_SMALL, "pierce_client_poll_transmit", clients[0].h, 0, tiny, len(tiny), byref(t))
    assert len(tiny) < t.len <= MAX_DATAGRAM_SIZE, t.len

    def kinds(e, k):
        return [ev for ev in e.events if ev[0] == k]

    net.run_until(lambda: all(kinds(c, EV_CONNECTED) for c in clients), "connected")
    ids = [kinds(c, EV_CONNECTED)[0][1] for c in clients]
    assert ids[0] != ids[1] and 0 not in ids, ids
    joined = kinds(net.eps[0], SEV_CLIENT_JOINED)
    assert sorted(ev[1] for ev in joined) == sorted(ids), (joined, ids)

    # Room names: empty is refused, and invalid UTF-8; a good one joins.
    expect(INVALID_NAME, "pierce_client_join_room", clients[0].h, net.now, b"", None, 1, 2, 0)
    expect(INVALID_ARGUMENT, "pierce_client_join_room", clients[0].h, net.now, b"\xff", None, 1, 2, 0)
    for c in clients:
        call("pierce_client_join_room", c.h, net.now, b"ctypes", None, 1, 2, 0)
        call("pierce_client_send_to_server", c.h, net.now, b"hello", 5, 1)

    def peer_of(i):
        others = [ev[1] for ev in kinds(clients[i], EV_MEMBER_JOINED) if ev[1] != ids[i]]
        return others[0] if others else None

    net.run_until(lambda: peer_of(0) and peer_of(1), "in one room")
    for i, c in enumerate(clients):
        rooms = kinds(c, EV_ROOM_JOINED)
        assert rooms and rooms[0][4] == "ctypes", rooms
        assert peer_of(i) == ids[1 - i]
    assert [ev[3] for ev in kinds(net.eps[0], 4)] == [b"hello", b"hello"]  # SERVER MESSAGE

    # Sending: a NULL payload with a length, then `count` reliable messages each way.
    expect(NULL_ARGUMENT, "pierce_client_send", clients[0].h, net.now, ids[1], 0, None, 5, None, None)
    mid = c_uint64()
    for seq in range(count):
        for i, c in enumerate(clients):
            msg = seq.to_bytes(4, "big") + bytes([i]) * 60
            call("pierce_client_send", c.h, net.now, ids[1 - i], CHANNEL_RELIABLE_ORDERED, msg, len(msg), None, byref(mid))
        net.step()

    def received(i):
        return [ev for ev in kinds(clients[i], EV_PEER_MESSAGE) if ev[1] == ids[1 - i]]

    def acked(i):
        s = PeerStats()
        call("pierce_client_peer_stats", clients[i].h, ids[1 - i], byref(s))
        return s.unacked == 0 and s.queued_bytes == 0

    net.run_until(
        lambda: all(len(received(i)) == count and acked(i) for i in range(2)), "delivered and acknowledged"
    )
    for i in range(2):
        got = received(i)
        assert [int.from_bytes(ev[3][:4], "big") for ev in got] == list(range(count)), "out of order"
        assert all(ev[3][4:] == bytes([1 - i]) * 60 and ev[5] == CHANNEL_RELIABLE_ORDERED for ev in got)
        assert not kinds(clients[i], EV_MESSAGE_EXPIRED) and not kinds(clients[i], EV_ROOM_FAILED)
    s, st = PeerStats(), ClientStats()
    call("pierce_client_peer_stats", clients[0].h, ids[1], byref(s))
    call("pierce_client_stats", clients[0].h, byref(st))
    assert st.host_id == ids[0] and st.state == 1 and st.datagrams_out > 0, (st.host_id, st.state)
    assert s.messages_in >= count and s.messages_out >= count, (s.messages_in, s.messages_out)
    expect(-10, "pierce_client_peer_stats", clients[0].h, 999_999, byref(s))  # UNKNOWN_PEER

    # Leave: the server sees both go.
    for c in clients:
        call("pierce_client_disconnect", c.h, net.now, 0)
    net.run_until(lambda: len(kinds(net.eps[0], SEV_CLIENT_LEFT)) == 2, "both left")
    path = "direct" if s.direct else "relay"
    print(
        f"ok exchange: 2 clients, {count} reliable-ordered messages each way, in order and "
        f"acknowledged ({path}), {net.delivered} datagrams in memory, "
        f"{net.now / 1000:.0f} virtual ms"
    )

    # Free everything; a handle is refused once freed, and by another type's function.
    expect(INVALID_HANDLE, "pierce_server_handle_timeout", clients[0].h, net.now)
    for e in net.eps:
        call(f"pierce_{e.kind}_free", e.h)
    expect(INVALID_HANDLE, "pierce_client_free", clients[0].h)
    expect(INVALID_HANDLE, "pierce_server_poll_timeout", server, byref(c_uint64()))
    print("ok freed: every handle, and each refused afterwards")


def main():
    global LIB
    lib_path, header = os.environ.get("PIERCE_LIB"), os.environ.get("PIERCE_HEADER")
    if not lib_path or not header:
        sys.exit("set PIERCE_LIB (libpierce.so) and PIERCE_HEADER (pierce.h)")
    LIB = load(lib_path)
    if os.environ.get("PIERCE_CC"):
        check_layout(os.environ["PIERCE_CC"], header)
    check_versions(header)
    check_addresses()
    check_exchange()
    print("ctypes: all checks passed")


if __name__ == "__main__":
    main()
