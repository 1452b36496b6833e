// Generates src/generated/*.ts from a running server's documents:
//   node scripts/generate.mjs http://127.0.0.1:8000
// openapi.ts from /api/v1/openapi.json (openapi-typescript 7, default options except
// `format: binary`, which becomes `Blob` — what fetch sends and returns for raw bytes),
// and asyncapi.ts from /api/v1/asyncapi.json: its `components.schemas` (JSON Schemas of
// every WebSocket frame) wrapped into a minimal OpenAPI document for the same generator
// (empty objects typed as `Record<string, unknown>`: see below).
import { mkdir, writeFile } from "node:fs/promises";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const base = (process.argv[2] ?? process.env.ADIUVA_URL ?? "").replace(/\/$/, "");
if (!base) {
  console.error("usage: node scripts/generate.mjs <server base URL>");
  process.exit(2);
}
const out = new URL("../src/generated/", import.meta.url);
await mkdir(out, { recursive: true });

const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
const options = {
  transform(schema) {
    if (schema.format === "binary") return BLOB;
    return undefined;
  },
};

async function document(path) {
  const resp = await fetch(`${base}/api/v1/${path}`);
  if (!resp.ok) throw new Error(`GET ${path}: ${resp.status}`);
  return resp.json();
}

const openapi = await document("openapi.json");
await writeFile(new URL("openapi.ts", out), astToString(await openapiTS(openapi, options)));
console.log("generated src/generated/openapi.ts");

if (process.env.ADIUVA_NO_ASYNCAPI !== "1") {
  const asyncapi = await document("asyncapi.json");
  // Frame schemas may point at each other as #/components/schemas/…, which is also
  // where they sit in the wrapper.
  const wrapper = {
    openapi: "3.1.0",
    info: { title: `${asyncapi.info?.title ?? "AsyncAPI"} frames`, version: asyncapi.info?.version ?? "0" },
    paths: {},
    components: { schemas: asyncapi.components?.schemas ?? {} },
  };
  // A frame with no field but `type` (`ping`, `pong`) is an empty object schema, which
  // the generator would type `Record<string, never>` — leaving no room for `type`.
  const frames = { ...options, emptyObjectsUnknown: true };
  await writeFile(new URL("asyncapi.ts", out), astToString(await openapiTS(wrapper, frames)));
  console.log("generated src/generated/asyncapi.ts");
}
