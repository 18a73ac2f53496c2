#!/usr/bin/env python3
"""Self-check of the running test peers: `scripts/peers check` (reads <state dir>/peers.json).

Standard library only. Prints one line per check and a closing 'N passed, N failed' line; exits 1 on
any failure. Every resource it writes carries a fresh identifier, so it can run again and again.
"""
from __future__ import annotations

import base64
import hashlib
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse
import uuid

P = json.load(open(sys.argv[1]))
RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = ""):
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}{'  -- ' + detail if detail else ''}", flush=True)


def check(name):
    def wrap(fn):
        try:
            ok, detail = fn()
        except Exception as e:  # a check that crashes is a failed check
            ok, detail = False, f"{type(e).__name__}: {e}"
        record(name, ok, detail)
        return fn
    return wrap


def fhir_http(method, url, body=None, headers=None, ctx=None, timeout=15):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    path = u.path + (f"?{u.query}" if u.query else "")
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"accept": "application/fhir+json"}
    if data is not None:
        h["content-type"] = "application/fhir+json"
    h.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        conn.close()


# ------------------------------------------------------------------ FHIR

NOTE_TEXT = "Subjective: cough for 3 days.\nAssessment: viral URI.\nPlan: rest, fluids."
RUN = uuid.uuid4().hex[:12]


def note_bundle(note_id: str) -> dict:
    """One note as the daemon is to send it: DocumentReference + Binary + Provenance in a transaction.
    Binary and Provenance get client-assigned ids (PUT), the DocumentReference a business identifier
    with conditional create, so that a replay creates nothing new."""
    text = NOTE_TEXT.encode()
    b64 = base64.b64encode(text).decode()
    sha1 = base64.b64encode(hashlib.sha1(text).digest()).decode()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    doc_urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'doc:' + note_id)}"
    binary_id = f"note-{note_id}-bin"
    prov_id = f"note-{note_id}-prov"
    ident = {"system": "urn:edge-scribe:note", "value": note_id}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"Binary/{binary_id}",
                "resource": {"resourceType": "Binary", "id": binary_id, "contentType": "text/plain; charset=utf-8", "data": b64},
                "request": {"method": "PUT", "url": f"Binary/{binary_id}"},
            },
            {
                "fullUrl": doc_urn,
                "resource": {
                    "resourceType": "DocumentReference",
                    "identifier": [ident],
                    "status": "current",
                    "docStatus": "final",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}]},
                    "subject": {"reference": "Patient/example", "display": "Test Patient"},
                    "date": now,
                    "author": [{"reference": "Practitioner/example", "display": "Dr Test"}],
                    "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": b64, "hash": sha1,
                                                "title": "Progress note"}}],
                    "context": {"encounter": [{"reference": "Encounter/example"}]},
                },
                "request": {"method": "POST", "url": "DocumentReference",
                            "ifNoneExist": f"identifier={ident['system']}|{note_id}"},
            },
            {
                "fullUrl": f"Provenance/{prov_id}",
                "resource": {
                    "resourceType": "Provenance",
                    "id": prov_id,
                    "target": [{"reference": doc_urn}],
                    "recorded": now,
                    "agent": [
                        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
                         "who": {"reference": "Practitioner/example"}},
                        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}]},
                         "who": {"display": "edge-scribe box"}},
                    ],
                    "entity": [{"role": "source", "what": {"identifier": {"system": "urn:edge-scribe:audio-sha256", "value": "0" * 64}}}],
                },
                "request": {"method": "PUT", "url": f"Provenance/{prov_id}"},
            },
        ],
    }


def entry_statuses(resp) -> list[str]:
    return [e.get("response", {}).get("status", "") for e in (resp or {}).get("entry", [])]


def search_total(base, query) -> tuple[int, list]:
    s, _, b = fhir_http("GET", f"{base}/{query}")
    assert s == 200, f"search {query} -> {s}"
    entries = [e for e in b.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
    return len(entries), entries


state = {}


@check("fhir: metadata 200")
def _():
    s, _, b = fhir_http("GET", f"{P['fhir_base']}/metadata")
    return s == 200 and b.get("resourceType") == "CapabilityStatement", f"{s} {b.get('fhirVersion') if isinstance(b, dict) else b}"


@check("fhir: transaction Bundle (DocumentReference + Binary + Provenance) -> 200, entries 201")
def _():
    note = f"check-{RUN}-1"
    s, _, b = fhir_http("POST", P["fhir_base"], note_bundle(note))
    st = entry_statuses(b)
    state["first"] = b
    return s == 200 and len(st) == 3 and all(x.startswith("201") or x.startswith("200") for x in st) and \
        any(x.startswith("201") for x in st), f"HTTP {s}, entries {st}"


@check("fhir: same Bundle again (ifNoneExist + client ids) -> 200, still one DocumentReference")
def _():
    note = f"check-{RUN}-1"
    s, _, b = fhir_http("POST", P["fhir_base"], note_bundle(note))
    st = entry_statuses(b)
    n, entries = search_total(P["fhir_base"], f"DocumentReference?identifier=urn:edge-scribe:note|{note}")
    first_loc = [e.get("response", {}).get("location", "") for e in state["first"].get("entry", [])]
    again_loc = [e.get("response", {}).get("location", "") for e in b.get("entry", [])]
    same_doc = first_loc[1].split("/_history")[0] == again_loc[1].split("/_history")[0]
    doc_status = st[1] if len(st) > 1 else "?"
    return s == 200 and n == 1 and same_doc and doc_status.startswith("200"), \
        f"HTTP {s}, entries {st}, DocumentReference count {n}, same id {same_doc} ({again_loc[1]})"


@check("fhir: the Provenance points at the stored DocumentReference, the Binary holds the note")
def _():
    note = f"check-{RUN}-1"
    _, entries = search_total(P["fhir_base"], f"DocumentReference?identifier=urn:edge-scribe:note|{note}")
    doc = entries[0]["resource"]
    s, _, prov = fhir_http("GET", f"{P['fhir_base']}/Provenance/note-{note}-prov")
    s2, _, binary = fhir_http("GET", f"{P['fhir_base']}/Binary/note-{note}-bin")
    target = prov.get("target", [{}])[0].get("reference", "") if s == 200 else ""
    text = base64.b64decode(binary.get("data", "")).decode() if s2 == 200 else ""
    return s == 200 and target.endswith(f"DocumentReference/{doc['id']}") and text == NOTE_TEXT, \
        f"Provenance {s} target={target}; Binary {s2} {len(text)} chars"


@check("fhir: stale If-Match -> 412")
def _():
    note = f"check-{RUN}-1"
    _, entries = search_total(P["fhir_base"], f"DocumentReference?identifier=urn:edge-scribe:note|{note}")
    doc = entries[0]["resource"]
    s, h, cur = fhir_http("GET", f"{P['fhir_base']}/DocumentReference/{doc['id']}")
    etag = h.get("etag", "")
    s1, h1, _ = fhir_http("PUT", f"{P['fhir_base']}/DocumentReference/{doc['id']}", cur, {"if-match": etag})
    s2, _, _ = fhir_http("PUT", f"{P['fhir_base']}/DocumentReference/{doc['id']}", cur, {"if-match": etag})
    return s1 == 200 and s2 == 412, f"ETag {etag}: first PUT {s1} (new ETag {h1.get('etag')}), stale PUT {s2}"


# ------------------------------------------------------------------ validator

@check("validator: the note Bundle is valid (medplum + R4 JSON schema)")
def _():
    s, _, b = fhir_http("POST", P["validator_url"], note_bundle(f"check-{RUN}-v"))
    return s == 200 and b["valid"] is True, f"{s} {json.dumps(b['issues'])[:400]}"


@check("validator: a bad DocumentReference gets issues from both engines")
def _():
    bad = {"resourceType": "DocumentReference", "status": "bogus", "unknownField": 1,
           "subject": {"reference": "Patient/x"}}
    s, _, b = fhir_http("POST", P["validator_url"], bad)
    sources = sorted({i["source"] for i in b["issues"]})
    return s == 200 and b["valid"] is False and sources == ["fhir.schema.json", "medplum"], \
        f"{s} valid={b['valid']} {len(b['issues'])} issues from {sources}"


@check("validator: an invalid code alone is caught (by the R4 schema)")
def _():
    bad = note_bundle(f"check-{RUN}-bad")
    bad["entry"][1]["resource"]["status"] = "bogus"
    s, _, b = fhir_http("POST", P["validator_url"], bad)
    exprs = [e for i in b["issues"] for e in i.get("expression", [])]
    return s == 200 and b["valid"] is False and "Bundle.entry[1].resource.status" in exprs, f"{exprs}"


# ------------------------------------------------------------------ medplum engine

@check("medplum_fhir: the note Bundle -> 200, replay keeps one DocumentReference")
def _():
    base = P["medplum_fhir_base"]
    note = f"check-{RUN}-m"
    s1, _, b1 = fhir_http("POST", base, note_bundle(note))
    s2, _, b2 = fhir_http("POST", base, note_bundle(note))
    n, _ = search_total(base, f"DocumentReference?identifier=urn:edge-scribe:note|{note}")
    return s1 == 200 and s2 == 200 and n == 1, f"{s1} {entry_statuses(b1)}; replay {s2} {entry_statuses(b2)}; count {n}"


# ------------------------------------------------------------------ 429 proxy

@check("nginx 429 proxy: GET passes, a quick run of POSTs gets 429 with Retry-After: 2")
def _():
    base = P["fhir_429_base"]
    g, _, _ = fhir_http("GET", f"{base}/metadata")
    codes, retry, body = [], None, None
    for i in range(8):
        s, h, b = fhir_http("POST", f"{base}/Basic", {"resourceType": "Basic", "code": {"text": f"throttle-{RUN}-{i}"}})
        codes.append(s)
        if s == 429 and retry is None:
            retry, body = h.get("retry-after"), b
    ok = g == 200 and 429 in codes and retry == "2" and codes[0] in (200, 201) and \
        isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
    time.sleep(1.1)
    s_after, _, _ = fhir_http("POST", f"{base}/Basic", {"resourceType": "Basic", "code": {"text": f"throttle-{RUN}-after"}})
    return ok and s_after in (200, 201), f"GET {g}; POST codes {codes}; Retry-After {retry}; after 1.1 s: {s_after}"


# ------------------------------------------------------------------ mTLS proxy

def tls_ctx(cert=None, key=None):
    ctx = ssl.create_default_context(cafile=P["ca_cert"])
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def mtls_get(cert=None, key=None):
    try:
        s, h, b = fhir_http("GET", f"{P['fhir_mtls_base']}/metadata", ctx=tls_ctx(cert, key))
        return str(s)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return f"refused ({type(e).__name__}: {str(e)[:80]})"


@check("nginx mTLS: client cert -> 200 (server cert verified for 127.0.0.1)")
def _():
    r = mtls_get(P["client_cert"], P["client_key"])
    return r == "200", r


@check("nginx mTLS: no client cert -> 400")
def _():
    r = mtls_get()
    return r == "400", r


@check("nginx mTLS: expired client cert -> refused")
def _():
    r = mtls_get(P["client_expired_cert"], P["client_expired_key"])
    return r == "400" or r.startswith("refused"), r


@check("nginx mTLS: client cert from an untrusted CA -> refused")
def _():
    r = mtls_get(P["client_untrusted_cert"], P["client_untrusted_key"])
    return r == "400" or r.startswith("refused"), r


@check("pki: key files are mode 0600")
def _():
    bad = [k for k in ("server_key", "client_key", "client_expired_key", "client_untrusted_key")
           if os.stat(P[k]).st_mode & 0o077]
    return not bad, f"too open: {bad}" if bad else "ok"


# ------------------------------------------------------------------ MLLP

def mdm_t02(control_id: str, with_txa: bool = True) -> str:
    ts = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    segs = [
        f"MSH|^~\\&|EDGE_SCRIBE|CLINIC|EHR|HOSP|{ts}||MDM^T02^MDM_T02|{control_id}|P|2.5",
        f"EVN|T02|{ts}",
        "PID|1||12345^^^HOSP^MR||Doe^Jane||19800101|F",
        "PV1|1|O|CLINIC^101^1",
        f"TXA|1|PN|TX|{ts}|1234^Test^Doctor|||||||DOC-{control_id}|||||AU",
        "OBX|1|TX|11506-3^Progress note^LN||Subjective: cough for 3 days.~Plan: rest, fluids.||||||F",
    ]
    if not with_txa:
        segs = [s for s in segs if not s.startswith("TXA")]
    return "\r".join(segs) + "\r"


class Mllp:
    def __init__(self, hostport: str, ctx: ssl.SSLContext | None = None):
        host, port = hostport.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=host) if ctx else raw
        self.buf = b""

    def send(self, msg: str) -> str | None:
        self.sock.sendall(b"\x0b" + msg.encode() + b"\x1c\r")
        while b"\x1c\r" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\x1c\r")
        return frame.lstrip(b"\x0b").decode()

    def closed_by_peer(self) -> bool:
        self.sock.settimeout(2)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, ssl.SSLError):
            return False

    def close(self):
        self.sock.close()


def msa(ack: str | None) -> list[str]:
    if not ack:
        return ["<no ack>"]
    for seg in ack.split("\r"):
        if seg.startswith("MSA|"):
            return seg.split("|")[1:]
    return ["<no MSA>"]


def logged(peer: str, control_id: str) -> dict | None:
    path = P["peers"][peer]["log_jsonl"]
    for line in open(path):
        rec = json.loads(line)
        if rec.get("control_id") == control_id:
            return rec
    return None


@check("mllp plain: 3 MDM^T02 on one connection -> AA each, logged")
def _():
    c = Mllp(P["mllp_plain"])
    ids = [f"P{RUN}{i}" for i in range(3)]
    acks = [msa(c.send(mdm_t02(i))) for i in ids]
    c.close()
    ok = all(a[:2] == ["AA", i] for a, i in zip(acks, ids)) and all(logged("mllp_plain", i) for i in ids)
    return ok, f"{[a[:2] for a in acks]}"


@check("mllp plain: control file {\"next\": [\"AR\"]} -> next message AR, then AA again")
def _():
    ctl = P["peers"]["mllp_plain"]["control"]
    with open(ctl, "w") as f:
        json.dump({"next": ["AR:injected by check"]}, f)
    c = Mllp(P["mllp_plain"])
    a1 = msa(c.send(mdm_t02(f"R{RUN}1")))
    a2 = msa(c.send(mdm_t02(f"R{RUN}2")))
    c.close()
    os.remove(ctl)
    return a1[0] == "AR" and a2[0] == "AA", f"{a1} then {a2}"


@check("mllp strict: valid MDM^T02 -> AA")
def _():
    c = Mllp(P["mllp_strict"])
    a = msa(c.send(mdm_t02(f"S{RUN}1")))
    c.close()
    return a[:2] == ["AA", f"S{RUN}1"], f"{a}"


@check("mllp strict: MDM^T02 without TXA -> AE 'Missing required child MDM_T02.TXA'")
def _():
    c = Mllp(P["mllp_strict"])
    a = msa(c.send(mdm_t02(f"S{RUN}2", with_txa=False)))
    c.close()
    return a[0] == "AE" and "MDM_T02.TXA" in "|".join(a), f"{a}"


@check("mllp plain: MDM^T02 without TXA -> AA (plain does not validate)")
def _():
    c = Mllp(P["mllp_plain"])
    a = msa(c.send(mdm_t02(f"P{RUN}x", with_txa=False)))
    c.close()
    return a[0] == "AA", f"{a}"


@check("mllp tls: client cert -> AA; the subject is logged")
def _():
    c = Mllp(P["mllp_tls"], tls_ctx(P["client_cert"], P["client_key"]))
    a = msa(c.send(mdm_t02(f"T{RUN}1")))
    c.close()
    rec = logged("mllp_tls", f"T{RUN}1") or {}
    return a[0] == "AA" and "edge-scribe test client" in (rec.get("tls_subject") or ""), f"{a[:2]} {rec.get('tls_subject')}"


@check("mllp tls: no client cert / expired / untrusted -> refused")
def _():
    out = []
    for cert, key in ((None, None), (P["client_expired_cert"], P["client_expired_key"]),
                      (P["client_untrusted_cert"], P["client_untrusted_key"])):
        try:
            c = Mllp(P["mllp_tls"], tls_ctx(cert, key))
            ack = c.send(mdm_t02(f"T{RUN}x"))  # TLS 1.3: the alert arrives on first read
            out.append("ACK!" if ack else "closed")
            c.close()
        except (ssl.SSLError, ConnectionError, OSError) as e:
            out.append(f"refused:{type(e).__name__}")
    return all(o != "ACK!" for o in out), f"{out}"


@check("mllp hl7apy MLLPServer: AA, then the server closes the connection")
def _():
    c = Mllp(P["mllp_hl7apy"])
    a = msa(c.send(mdm_t02(f"H{RUN}1")))
    closed = c.closed_by_peer()
    c.close()
    c = Mllp(P["mllp_hl7apy"])
    b = msa(c.send(mdm_t02(f"H{RUN}2", with_txa=False)))
    c.close()
    return a[:2] == ["AA", f"H{RUN}1"] and closed and b[0] == "AE", f"{a[:2]}, closed={closed}; no TXA -> {b[:1]}"


passed = sum(1 for _, ok, _ in RESULTS if ok)
failed = len(RESULTS) - passed
print()
print(f"peers check: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
