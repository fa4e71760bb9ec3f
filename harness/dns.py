"""A DNS server for tests: authoritative for every name, from a zone file the tests write.

Run as its own process: `python -m harness.dns --zone-file F --port-file P`.
It binds UDP and TCP on the same free port of 127.0.0.1 and writes that port to P
once both listen. The zone file is an RFC 1035 master file with absolute names
(read by dnspython with the root as origin), so any domain can be served:

    ninhbinh.gov.vn.                  300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
    sel._domainkey.ninhbinh.gov.vn.   300 IN TXT ( "v=DKIM1; k=rsa; " "p=MIIB..." )
    _dmarc.ninhbinh.gov.vn.           300 IN TXT "v=DMARC1; p=reject"

Records without a TTL get 300 s; SOA records are not accepted (dnspython keeps
them for zone apexes). Comment directives simulate broken DNS for temperror tests
and set the negative TTL:

    ;@servfail broken.example.     answer SERVFAIL for this name (every type)
    ;@drop     slow.example.       never answer (the client times out)
    ;@negative-ttl 30              SOA minimum of the negative answers (default 60)

Every other name is NXDOMAIN (NOERROR/no data when the name exists with other types
or has names below it), with a made-up SOA of the name's top-level domain in the
authority section (RFC 2308 negative caching), so `gmail.com` with no zone is
answered "none" at once.
The file is re-read when it changes (atomic rename by `DnsServer.set_zone`), and
`set_zone` waits until the server answers with the new serial: no sleeps.
UDP answers larger than the client's payload (512 without EDNS) are truncated
(TC), so the TCP path is exercised too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from harness import procs

SERIAL_NAME = "serial.sandbox.invalid."
_MAX_CNAME = 8


@dataclass
class ZoneData:
    zone: dns.zone.Zone | None = None
    servfail: set[dns.name.Name] = field(default_factory=set)
    drop: set[dns.name.Name] = field(default_factory=set)
    names: set[dns.name.Name] = field(default_factory=set)
    negative_ttl: int = 60


def parse_zone(text: str) -> ZoneData:
    data = ZoneData()
    for line in text.splitlines():
        words = line.strip().split()
        if len(words) == 2 and words[0] in (";@servfail", ";@drop"):
            target = data.servfail if words[0] == ";@servfail" else data.drop
            target.add(dns.name.from_text(words[1]))
        elif len(words) == 2 and words[0] == ";@negative-ttl" and words[1].isdigit():
            data.negative_ttl = int(words[1])
    if text.strip():
        data.zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False,
                                       check_origin=False)
        data.names = set(data.zone.nodes)
    return data


def _exists(data: ZoneData, name: dns.name.Name) -> bool:
    """The name has records, or names below it (an empty non-terminal, RFC 8020)."""
    return name in data.names or any(n.is_subdomain(name) for n in data.names)


def build_answer(data: ZoneData, query: dns.message.Message) -> dns.message.Message | None:
    """The response to `query`, or None to stay silent (a `;@drop` name)."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if query.opcode() != 0 or len(query.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if query.opcode() != 0 else dns.rcode.FORMERR)
        return response
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if qname in data.drop:
        return None
    if qname in data.servfail:
        response.set_rcode(dns.rcode.SERVFAIL)
        return response
    if data.zone is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response
    name = qname
    for _ in range(_MAX_CNAME):
        node = data.zone.get_node(name)
        if node is None:
            if not _exists(data, name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return _negative(response, name, data.negative_ttl)
        found = node.get_rdataset(dns.rdataclass.IN, qtype)
        if found is not None:
            response.answer.append(_rrset(name, found))
            return response
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or qtype == dns.rdatatype.CNAME:
            return _negative(response, name, data.negative_ttl)  # NOERROR, no data
        response.answer.append(_rrset(name, cname))
        name = next(iter(cname)).target
    return response


def _negative(response: dns.message.Message, name: dns.name.Name,
              ttl: int) -> dns.message.Message:
    apex = dns.name.Name(name.labels[-2:]) if len(name.labels) >= 2 else dns.name.root
    soa = dns.rrset.from_text(apex, ttl, "IN", "SOA",
                              f"ns.sandbox.invalid. hostmaster.sandbox.invalid. 1 3600 600 "
                              f"86400 {ttl}")
    response.authority.append(soa)
    return response


def _rrset(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rds.ttl, list(rds))


class ZoneFile:
    """The zone file, re-read when its inode, mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.stamp: tuple[int, int, int] | None = None
        self.data = ZoneData()

    def current(self) -> ZoneData:
        with self.lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                return self.data
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self.stamp:
                try:
                    self.data = parse_zone(self.path.read_text())
                    self.stamp = stamp
                except (dns.exception.DNSException, ValueError, OSError) as e:
                    print(f"zone file {self.path}: {e}; keeping the previous data",
                          file=sys.stderr, flush=True)
                    self.stamp = stamp
            return self.data


def _wire(response: dns.message.Message, max_size: int) -> bytes:
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


def serve(zone_file: Path, port_file: Path, host: str = "127.0.0.1") -> None:
    zones = ZoneFile(zone_file)

    def respond(wire: bytes, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = build_answer(zones.current(), query)
        if response is None:
            return None
        if not udp:
            return response.to_wire(max_size=65535)
        return _wire(response, max(512, query.payload) if query.edns >= 0 else 512)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            out = respond(data, udp=True)
            if out is not None:
                sock.sendto(out, self.client_address)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                while True:
                    head = _read_exact(conn, 2)
                    if head is None:
                        return
                    body = _read_exact(conn, struct.unpack("!H", head)[0])
                    if body is None:
                        return
                    out = respond(body, udp=False)
                    if out is None:
                        _read_exact(conn, 1 << 16)  # hold the line open until the client gives up
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)

    class TcpServer(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    class UdpServer(socketserver.ThreadingUDPServer):
        daemon_threads = True

    udp = tcp = None
    for _ in range(50):  # a free UDP port whose TCP twin is free too
        udp = UdpServer((host, 0), Udp)
        try:
            tcp = TcpServer((host, udp.server_address[1]), Tcp)
            break
        except OSError:
            udp.server_close()
    if udp is None or tcp is None:
        raise SystemExit("no free port pair for UDP and TCP")
    port = udp.server_address[1]
    threading.Thread(target=tcp.serve_forever, daemon=True, name="tcp").start()
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)
    print(f"serving {zone_file} on {host}:{port} udp+tcp", flush=True)
    udp.serve_forever()


def _read_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class DnsServer:
    """Start/stop the server process by PID; write zones; query it directly."""

    def __init__(self, workdir: Path, zone: str = "") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zone_file = self.dir / "zone.txt"
        self.port_file = self.dir / "port"
        self.log = self.dir / "dns.log"
        self.port = 0
        self.serial = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._write(zone, (), ())

    @property
    def address(self) -> str:
        """The nameserver in the resolver's notation, "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        self.port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "harness.dns", "--zone-file",
                str(self.zone_file), "--port-file", str(self.port_file)]
        self.proc = procs.spawn(argv, self.log)

        def alive() -> bool:
            return self.proc is not None and self.proc.poll() is None

        try:
            procs.wait_until(self.port_file.exists, 15, "dns server (port file)", alive=alive,
                             log=self.log)
            self.port = int(self.port_file.read_text())
            procs.wait_until(self._serves_serial, 15, "dns server", alive=alive, log=self.log)
        except BaseException:
            self.stop()  # a server that never became ready is not left behind
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def set_zone(self, text: str, *, servfail: tuple[str, ...] = (),
                 drop: tuple[str, ...] = ()) -> None:
        """Replace the served data; return once the server answers with it."""
        self._write(text, servfail, drop)
        if self.proc is not None:
            procs.wait_until(self._serves_serial, 10, "dns server reload", log=self.log)

    def query(self, name: str, rdtype: str, *, tcp: bool = False,
              timeout_s: float = 1.0) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", timeout=timeout_s, port=self.port)
        return dns.query.udp(q, "127.0.0.1", timeout=timeout_s, port=self.port)

    def _write(self, text: str, servfail: tuple[str, ...], drop: tuple[str, ...]) -> None:
        self.serial += 1
        lines = ["$TTL 300", text, f'{SERIAL_NAME} 0 IN TXT "{self.serial}"']
        lines += [f";@servfail {_absolute(n)}" for n in servfail]
        lines += [f";@drop {_absolute(n)}" for n in drop]
        text = "\n".join(lines) + "\n"
        parse_zone(text)  # a mistake in a test's zone fails here, not as a reload timeout
        tmp = self.zone_file.with_name(self.zone_file.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.zone_file)  # a new inode: the server sees the change

    def _serves_serial(self) -> bool:
        try:
            r = self.query(SERIAL_NAME, "TXT", timeout_s=0.3)
        except (dns.exception.DNSException, OSError):
            return False
        return any(rr.rdtype == dns.rdatatype.TXT and
                   b"".join(next(iter(rr)).strings) == str(self.serial).encode()
                   for rr in r.answer)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness.dns")
    p.add_argument("--zone-file", required=True, type=Path)
    p.add_argument("--port-file", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args(argv)
    if not a.host.startswith("127.") and a.host != "::1":
        p.error("the sandbox DNS server listens on loopback only")
    with contextlib.suppress(KeyboardInterrupt):
        serve(a.zone_file, a.port_file, a.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
