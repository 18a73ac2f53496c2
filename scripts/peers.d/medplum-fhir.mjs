// Second, independent FHIR R4 engine (test peer for issue 7), started by scripts/peers:
//   node --experimental-websocket medplum-fhir.mjs --port PORT
//
// Medplum's FhirRouter over an in-memory MemoryRepository behind a thin HTTP wrapper of our own
// (@medplum/server itself is not published). Base URL: http://127.0.0.1:PORT/fhir
// What it does differently from sekmet-fhir (see shared PEERS.md): it rewrites urn:uuid references in
// Attachment.url too, validates resources against the R4 StructureDefinitions on write, and does not
// roll back a failed transaction. State is in memory: a restart empties it; DELETE /admin/reset too.
import { createServer } from 'node:http';
import { getStatus, normalizeOperationOutcome } from '@medplum/core';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import { loadDefinitions, parseArgs, readBody, sendJson } from './medplum-common.mjs';

const args = parseArgs(process.argv.slice(2));
const started = Date.now();
loadDefinitions();
const router = new FhirRouter();
let repo = new MemoryRepository();

function capability(base) {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'edge-scribe test peer: @medplum/fhir-router MemoryRepository', version: '5.2.13' },
    implementation: { description: 'in-memory Medplum FHIR engine', url: base },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
  };
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host ?? 'localhost'}`);
    if (req.method === 'DELETE' && url.pathname === '/admin/reset') {
      repo = new MemoryRepository();
      return sendJson(res, 200, { reset: true });
    }
    if (!url.pathname.startsWith('/fhir')) return sendJson(res, 404, { error: 'base is /fhir' });
    const rest = url.pathname.slice('/fhir'.length) || '/';
    if (req.method === 'GET' && rest === '/metadata') {
      return sendJson(res, 200, capability(`${url.origin}/fhir`), { 'content-type': 'application/fhir+json' });
    }
    let body;
    if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') {
      const text = await readBody(req);
      if (text) {
        try {
          body = JSON.parse(text);
        } catch (err) {
          return sendJson(res, 400, {
            resourceType: 'OperationOutcome',
            issue: [{ severity: 'error', code: 'structure', details: { text: `invalid JSON: ${err.message}` } }],
          });
        }
      }
    }
    const fhirReq = { method: req.method, url: rest + url.search, pathname: '', body, params: {}, query: {}, headers: req.headers };
    let result;
    try {
      result = await router.handleRequest(fhirReq, repo);
    } catch (err) {
      result = [normalizeOperationOutcome(err)];
    }
    const [outcome, resource] = result;
    const status = getStatus(outcome);
    const headers = { 'content-type': 'application/fhir+json' };
    if (resource && resource.meta?.versionId) headers.etag = `W/"${resource.meta.versionId}"`;
    if (resource && resource.meta?.lastUpdated) headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (resource && resource.id && status === 201) {
      headers.location = `${url.origin}/fhir/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
    }
    sendJson(res, status, resource ?? outcome, headers);
  } catch (err) {
    sendJson(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'exception', diagnostics: String(err?.stack ?? err) }] });
  }
});
server.keepAliveTimeout = 30000;
server.listen(args.port, args.host, () => {
  console.log(`medplum FHIR engine on http://${args.host}:${server.address().port}/fhir (loaded in ${Date.now() - started} ms)`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
