"""The one netlink transport of the ESP layer: a small blocking socket per protocol.

Both dataplanes and the TUN set-up talk to the kernel through ``NetlinkChannel``:
NETLINK_XFRM for states and policies (dataplane/xfrm_msg.py builds those), NETLINK_ROUTE for
links, addresses and routes (rtnl.py builds those). The messages are pyroute2 classes;
only the transport is ours: send one request, read until its ACK, error or DONE, with a
timeout, and turn kernel errors into ``NetlinkError`` carrying the kernel's own explanation
(extended ACK, e.g. "Requested type not found").

Why not pyroute2's own sockets: pyroute2 0.9 has no XFRM API at all, and its synchronous
``IPRoute`` runs an asyncio loop of its own, so it raises "This event loop is already
running" when called from inside a running loop, which is where the IKE daemon calls
``install()`` from (measured). A plain socket needs neither a helper thread nor a hidden
loop, works the same in the daemon, in a forked worker and in a test, and keeps the
Dataplane interface synchronous (docs/dataplanes.md, "One way to talk to the kernel").

A channel can be opened in another network namespace (pyroute2.netns.create_socket), so
the tests drive two namespaces from one process.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

from pyroute2.netlink import nlmsg
from pyroute2.netns import create_socket

from ocfpy.crypto.errors import OcfError

NETLINK_ROUTE = 0
NETLINK_XFRM = 6
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_MULTI = 0x2
NLM_F_CAPPED = 0x100  # in an error: the original message was not echoed
NLM_F_ACK_TLVS = 0x200  # in an error: extended ACK attributes follow
NLMSGERR_ATTR_MSG = 1

_HDR = struct.Struct("=IHHII")
_seq = itertools.count(int.from_bytes(os.urandom(2), "big") << 8)


class NetlinkError(OcfError, OSError):
    """The kernel refused a request: errno plus, where the kernel gave one, its message."""

    def __init__(self, code: int, kernel_message: str = "", request: str = ""):
        self.kernel_message = kernel_message
        self.request = request
        text = kernel_message or os.strerror(code)
        super().__init__(code, f"{request}: {text}" if request else text)


def encode(msg: nlmsg, msg_type: int, flags: int, seq: int = 0) -> bytes:
    """The wire bytes of a pyroute2 message (``request`` sets the sequence number)."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _split(data: bytes):
    """(type, flags, seq, whole message) for each netlink message in a datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, msg_type, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            return
        yield msg_type, flags, seq, data[offset:offset + length]
        offset += (length + 3) & ~3


def _error_of(msg: bytes, flags: int) -> tuple[int, str]:
    """errno (positive, 0 = ACK) and the extended ACK message from an NLMSG_ERROR."""
    (code,) = struct.unpack_from("=i", msg, _HDR.size)
    text = ""
    if flags & NLM_F_ACK_TLVS:
        # struct nlmsgerr: error, then the original header (and payload unless capped)
        orig_len = struct.unpack_from("=I", msg, _HDR.size + 4)[0]
        offset = _HDR.size + 4 + (_HDR.size if flags & NLM_F_CAPPED else (orig_len + 3) & ~3)
        while offset + 4 <= len(msg):
            alen, atype = struct.unpack_from("=HH", msg, offset)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                text = msg[offset + 4:offset + alen].split(b"\0", 1)[0].decode(errors="replace")
            offset += (alen + 3) & ~3
    return -code, text


class NetlinkChannel:
    """One netlink socket of one protocol, optionally in a named network namespace."""

    def __init__(self, protocol: int, *, netns: str | None = None, groups: int = 0,
                 timeout: float = 5.0):
        self.protocol = protocol
        if netns is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        else:
            sock = create_socket(netns=netns, family=socket.AF_NETLINK,
                                 socket_type=socket.SOCK_RAW, proto=protocol, flags=0)
        self.sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            except OSError:
                pass  # old kernel: errors come without the kernel's explanation
            sock.bind((0, groups))
            sock.settimeout(timeout)
        except BaseException:
            sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, data: bytes, what: str = "") -> list[bytes]:
        """Send one message (its sequence number is set here) and collect the answers.

        Returns the data messages (a GET's answer, a dump's parts); raises NetlinkError
        for an error ACK, TimeoutError when the kernel does not answer."""
        seq = next(_seq) & 0xFFFFFFFF
        buf = bytearray(data)
        struct.pack_into("=I", buf, 8, seq)
        self.sock.send(buf)
        answers: list[bytes] = []
        while True:
            try:
                datagram = self.sock.recv(1 << 16)
            except TimeoutError:
                raise TimeoutError(errno.ETIMEDOUT, f"{what}: no answer from the kernel") from None
            for msg_type, flags, mseq, msg in _split(datagram):
                if mseq != seq:
                    continue  # a stale answer to an earlier, timed-out request
                if msg_type == NLMSG_ERROR:
                    code, text = _error_of(msg, flags)
                    if code:
                        raise NetlinkError(code, text, what)
                    return answers
                if msg_type == NLMSG_DONE:
                    return answers
                answers.append(msg)
                if not flags & NLM_F_MULTI and not data_is_dump(data):
                    # a plain GET answers with one message and no ACK unless asked for
                    return answers

    def receive(self) -> list[tuple[int, bytes]]:
        """One datagram of multicast events: (type, message) pairs. Blocks up to the timeout."""
        datagram = self.sock.recv(1 << 16)
        return [(t, m) for t, _f, _s, m in _split(datagram)]


def data_is_dump(data: bytes) -> bool:
    _len, _type, flags, _seq, _pid = _HDR.unpack_from(data)
    return bool(flags & 0x300 == 0x300)  # NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
