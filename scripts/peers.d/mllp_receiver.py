#!/usr/bin/env python3
"""HL7 v2 MLLP receiver used as a test peer for the write-back path (issue 7).

Started by `scripts/peers`; runs in the peers' HL7 venv (python-hl7 0.4.5 + hl7apy 1.3.5).

Implementations (--impl):
  native  asyncio server from python-hl7 (`hl7.mllp.start_hl7_server`). Keeps each connection open
          for any number of messages. Optional TLS (--tls-cert/--tls-key) with client-certificate
          verification (--tls-ca): a client without a certificate, or with an expired or untrusted one,
          fails the handshake.
  hl7apy  hl7apy's own `MLLPServer`: one message per connection, the socket is closed after each ACK
          (a peer for reconnect logic). Always strict.

Modes (--mode, native only):
  plain   ACK AA to everything python-hl7 can parse; AR to what it cannot.
  strict  hl7apy parse at VALIDATION_LEVEL.STRICT with find_groups, then msg.validate(); AE with the
          error text (MSA-3 and ERR-8) when either fails, e.g. "Missing required child MDM_T02.TXA".

Faults on demand (every implementation):
  --nth N=ACTION[:text]   (repeatable) the Nth message this process receives (1-based) gets ACTION.
  control file (--control, default <log>.control; re-read for every message), JSON:
      {"nth": {"7": "AR", "9": "AE:disk full"},    # by message number since start
       "next": ["AR", "DROP", "AE:nope"]}            # consumed one per message, file rewritten
  ACTION is AA, AE, AR (ACK with that code), DROP (close the connection without an ACK: a lost
  response) or NOREPLY (keep the connection open and never answer: a timeout). A fault overrides the
  mode's own verdict.

Every message and its answer are appended as one JSON line to --log:
  {"ts", "peer", "n", "conn", "peer_addr", "tls_subject", "control_id", "message_type", "message",
   "verdict", "ack_code", "ack", "error", "fault"}
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import signal
import ssl
import sys
import threading
import time

ACTIONS = {"AA", "AE", "AR", "DROP", "NOREPLY"}


def now_ts() -> str:
    return _dt.datetime.now().strftime("%Y%m%d%H%M%S")


def hl7_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\",
                    "\r": " ", "\n": " "}.get(ch, ch))
    return "".join(out)


def msh_fields(text: str) -> dict:
    """Best-effort MSH extraction that works on anything with an MSH segment."""
    first = text.replace("\n", "\r").split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return {}
    sep = first[3]
    f = first.split(sep)
    get = lambda i: f[i] if len(f) > i else ""  # noqa: E731  (MSH-n is f[n-1])
    return {"sending_app": get(2), "sending_fac": get(3), "receiving_app": get(4),
            "receiving_fac": get(5), "message_type": get(8), "control_id": get(9),
            "processing_id": get(10), "version": get(11)}


def build_ack(text: str, code: str, error: str | None, counter: int, peer: str) -> str:
    m = msh_fields(text)
    version = m.get("version") or "2.5"
    trigger = ""
    mt = m.get("message_type", "")
    if "^" in mt:
        trigger = mt.split("^")[1]
    segs = [
        "|".join(["MSH", "^~\\&", m.get("receiving_app") or f"EDGE_PEER_{peer.upper()}",
                  m.get("receiving_fac") or "PEERS", m.get("sending_app", ""), m.get("sending_fac", ""),
                  now_ts(), "", f"ACK^{trigger}^ACK" if trigger else "ACK", f"ACK{os.getpid()}-{counter}",
                  m.get("processing_id") or "P", version]),
        "|".join(["MSA", code, m.get("control_id", "")] + ([hl7_escape(error)[:80]] if error else [])),
    ]
    if error:
        segs.append("|".join(["ERR", "", "", "207^Application internal error^HL70357", "E",
                              "", "", "", hl7_escape(error)]))
    return "\r".join(segs) + "\r"


class Faults:
    def __init__(self, cli: list[str], control: str):
        self.cli = {}
        for item in cli:
            n, _, action = item.partition("=")
            self.cli[int(n)] = action
        self.control = control
        self._nth: dict[int, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _parse(action: str) -> tuple[str, str | None]:
        code, _, text = action.partition(":")
        code = code.strip().upper()
        if code not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        return code, (text or None)

    def take(self, n: int) -> tuple[str, str | None] | None:
        with self._lock:
            action = None
            try:
                with open(self.control) as f:
                    raw = f.read()
                data = json.loads(raw) if raw.strip() else {}
                self._nth = {int(k): v for k, v in (data.get("nth") or {}).items()}
                queue = list(data.get("next") or [])
                if queue:
                    action = queue.pop(0)
                    data["next"] = queue
                    tmp = self.control + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(data, f)
                    os.replace(tmp, self.control)
            except FileNotFoundError:
                self._nth = {}
            except (OSError, ValueError) as e:
                print(f"control file {self.control}: {e}", file=sys.stderr, flush=True)
            if action is None:
                action = self._nth.get(n) or self.cli.get(n)
            return self._parse(action) if action else None


class Receiver:
    def __init__(self, args):
        self.args = args
        self.peer = args.name
        self.count = 0
        self.conns = 0
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1)
        self.faults = Faults(args.nth or [], args.control or args.log + ".control")

    def next_n(self) -> int:
        with self.lock:
            self.count += 1
            return self.count

    def verdict(self, text: str, strict: bool) -> tuple[str, str | None]:
        if strict:
            from hl7apy.consts import VALIDATION_LEVEL
            from hl7apy.parser import parse_message
            try:
                msg = parse_message(text.replace("\n", "\r").strip("\r"),
                                    validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
                msg.validate()
            except Exception as e:  # hl7apy raises many exception types
                return "AE", f"{type(e).__name__}: {e}"
            return "AA", None
        import hl7
        try:
            hl7.parse(text.replace("\n", "\r"))
        except Exception as e:
            return "AR", f"unparseable: {type(e).__name__}: {e}"
        if not msh_fields(text).get("control_id"):
            return "AR", "MSH-10 (message control id) is empty"
        return "AA", None

    def handle(self, text: str, conn: int, peer_addr, tls_subject, strict: bool):
        """Returns (ack_text or None, action)."""
        n = self.next_n()
        verdict, error = self.verdict(text, strict)
        fault = self.faults.take(n)
        code, err = verdict, error
        if fault:
            code = fault[0]
            if code in ("AE", "AR"):
                err = fault[1] or f"injected {code} for message {n}"
            elif code == "AA":
                err = None
        ack = build_ack(text, code, err, n, self.peer) if code in ("AA", "AE", "AR") else None
        m = msh_fields(text)
        self.log.write(json.dumps({
            "ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "peer": self.peer, "n": n, "conn": conn, "peer_addr": peer_addr, "tls_subject": tls_subject,
            "control_id": m.get("control_id"), "message_type": m.get("message_type"), "message": text,
            "verdict": verdict, "ack_code": code if ack else None, "ack": ack, "error": err,
            "fault": fault[0] if fault else None}) + "\n")
        return ack, code


async def serve_native(rx: Receiver, args):
    import hl7.mllp

    strict = args.mode == "strict"
    ctx = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_ca:
            ctx.load_verify_locations(args.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED

    async def on_client(reader, writer):
        with rx.lock:
            rx.conns += 1
            conn = rx.conns
        addr = writer.get_extra_info("peername")
        cert = writer.get_extra_info("peercert")
        subject = None
        if cert:
            subject = ",".join("=".join(x) for rdn in cert.get("subject", ()) for x in rdn)
        try:
            while True:
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break
                except Exception as e:  # invalid block, limit overrun, TLS error
                    print(f"conn {conn}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    break
                text = block.decode("utf-8", errors="replace")
                ack, code = await asyncio.get_running_loop().run_in_executor(
                    None, rx.handle, text, conn, f"{addr[0]}:{addr[1]}" if addr else None, subject, strict)
                if code == "DROP":
                    break
                if code == "NOREPLY":
                    continue
                writer.writeblock(ack.encode("utf-8"))
                await writer.drain()
        finally:
            try:
                writer.close()
            except Exception:
                pass

    server = await hl7.mllp.start_hl7_server(on_client, args.host, args.port, ssl=ctx, encoding="utf-8",
                                             limit=16 * 1024 * 1024)
    print(f"mllp receiver {args.name} ({args.mode}{', tls' if ctx else ''}) on {args.host}:{args.port}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def serve_hl7apy(rx: Receiver, args):
    from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer

    def framed(ack):
        return "\x0b" + ack + "\x1c\x0d"

    def answer(message):
        ack, code = rx.handle(message, 0, None, None, True)
        if ack is None:
            if code == "NOREPLY":
                time.sleep(30)
            raise ConnectionAbortedError(code)  # MLLPRequestHandler closes the socket, no answer
        return framed(ack)

    class Handler(AbstractHandler):
        def reply(self):
            return answer(self.incoming_message)

    class ErrHandler(AbstractErrorHandler):
        def reply(self):
            if isinstance(self.exc, ConnectionAbortedError):  # an injected DROP from Handler
                raise self.exc
            return answer(self.incoming_message)

    handlers = {t: (Handler,) for t in ("MDM^T02", "MDM^T01", "MDM^T04", "MDM^T06", "MDM^T08", "MDM^T10",
                                        "ORU^R01", "ADT^A01", "ADT^A08")}
    handlers["ERR"] = (ErrHandler,)
    server = MLLPServer(args.host, args.port, handlers, timeout=30)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"hl7apy MLLPServer {args.name} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="mllp")
    p.add_argument("--log", required=True, help="JSONL file every message and ACK is appended to")
    p.add_argument("--mode", choices=["plain", "strict"], default="plain")
    p.add_argument("--impl", choices=["native", "hl7apy"], default="native")
    p.add_argument("--nth", action="append", metavar="N=ACTION[:text]")
    p.add_argument("--control", help="JSON control file (default: <log>.control)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca", help="CA bundle for client certificates (makes them required)")
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("test peers listen on loopback only")
    for item in args.nth or []:
        Faults._parse(item.partition("=")[2])
    rx = Receiver(args)
    if args.impl == "hl7apy":
        serve_hl7apy(rx, args)
    else:
        asyncio.run(serve_native(rx, args))


if __name__ == "__main__":
    main()
