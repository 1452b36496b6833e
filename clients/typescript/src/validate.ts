// A small JSON Schema check (the subset poem-openapi emits: $ref, type incl. null,
// enum, required, properties, items, oneOf/anyOf/allOf), so that frames read off the
// socket become typed values by checking them against the served AsyncAPI document —
// never by a cast. A frame the document does not describe fails the program.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Schemas = { [name: string]: unknown };

function isRecord(v: unknown): v is { [key: string]: unknown } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function typeOk(ty: unknown, v: unknown): boolean {
  switch (ty) {
    case "null":
      return v === null;
    case "boolean":
      return typeof v === "boolean";
    case "integer":
      return Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "string":
      return typeof v === "string";
    case "array":
      return Array.isArray(v);
    case "object":
      return isRecord(v);
    default:
      return true;
  }
}

/** Why `v` does not match `schema`, or null when it does. */
export function mismatch(schemas: Schemas, schema: unknown, v: unknown, at = "$"): string | null {
  if (!isRecord(schema)) return null;
  const ref = schema["$ref"];
  if (typeof ref === "string") {
    const name = ref.replace("#/components/schemas/", "");
    return mismatch(schemas, schemas[name], v, at);
  }
  const ty = schema["type"];
  if (ty !== undefined) {
    const types: unknown[] = Array.isArray(ty) ? ty : [ty];
    if (!types.some((t) => typeOk(t, v))) return `${at}: ${JSON.stringify(v)} is not ${JSON.stringify(ty)}`;
    if (v === null) return null;
  } else if (v === null && schema["nullable"] === true) {
    return null;
  }
  const values = schema["enum"];
  if (Array.isArray(values) && !values.some((e) => e === v)) return `${at}: ${JSON.stringify(v)} not in ${JSON.stringify(values)}`;
  for (const sub of list(schema["allOf"])) {
    const why = mismatch(schemas, sub, v, at);
    if (why !== null) return why;
  }
  for (const key of ["oneOf", "anyOf"]) {
    const options = list(schema[key]);
    if (options.length > 0 && !options.some((o) => mismatch(schemas, o, v, at) === null)) {
      return `${at}: matches none of ${key} (${options.map((o) => mismatch(schemas, o, v, at)).join("; ")})`;
    }
  }
  if (isRecord(v)) {
    for (const name of list(schema["required"])) {
      if (typeof name === "string" && !(name in v)) return `${at}: missing ${name}`;
    }
    const props = schema["properties"];
    if (isRecord(props)) {
      for (const [name, sub] of Object.entries(props)) {
        if (name in v) {
          const why = mismatch(schemas, sub, v[name], `${at}.${name}`);
          if (why !== null) return why;
        }
      }
    }
  }
  if (Array.isArray(v) && schema["items"] !== undefined) {
    for (const [i, item] of v.entries()) {
      const why = mismatch(schemas, schema["items"], item, `${at}[${i}]`);
      if (why !== null) return why;
    }
  }
  return null;
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** JSON text as a JSON value (`JSON.parse` is typed `any`; this keeps it `Json`). */
export function parseJson(text: string): Json {
  const v: Json = JSON.parse(text);
  return v;
}

/** The frame schemas of the served AsyncAPI document (`components.schemas`). */
export async function frameSchemas(baseUrl: string, root: string): Promise<Schemas> {
  const doc = parseJson(await (await fetch(`${baseUrl}/api/v1/asyncapi.json`)).text());
  const schemas: Schemas = {};
  if (isRecord(doc) && isRecord(doc["components"])) {
    const found = doc["components"]["schemas"];
    if (isRecord(found)) Object.assign(schemas, found);
  }
  if (!(root in schemas)) throw new Error(`asyncapi.json has no ${root} schema`);
  return schemas;
}
