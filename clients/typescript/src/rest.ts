// Every REST operation of the served OpenAPI document, through openapi-fetch and the
// types openapi-typescript generated from it. Each call prints `ok <operationId>`; the
// test suite checks that every operationId of the document was printed.
import { createHash, randomUUID } from "node:crypto";
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/openapi.js";

type Schemas = components["schemas"];
type ChatContext = Schemas["ChatContext"];

/** What every call returns: the data, or the typed error body and the response. */
type Outcome<T, E> =
  | { data: T; error?: never; response: Response }
  | { data?: never; error: E; response: Response };

export function done(what: string): void {
  console.log(`ok ${what}`);
}

/** The data of a successful call (and `ok <op>` printed), or a thrown error. */
function ok<T, E>(op: string, r: Outcome<T, E>): NonNullable<T> {
  const data = r.data;
  if (data === undefined || data === null) {
    throw new Error(`${op}: HTTP ${r.response.status} ${JSON.stringify(r.error)}`);
  }
  done(op);
  return data;
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");
const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

export interface Account {
  email: string;
  password: string;
}

/** A context with one item of every kind the document describes. */
export function sampleContext(): ChatContext {
  return {
    user_profile: { name: "Ada", timezone: "Europe/Paris" },
    relevant_documents: ["Apollo kickoff notes"],
    recent_tasks: [
      { id: "t1", title: "Write report", status: "todo", priority: "high", project_id: "p1", due_date: Date.now() },
      { id: "t2", title: "Ship beta", status: "done", priority: "low", project_id: "p1" },
    ],
    conversation_history: [
      { role: "user", content: "hello" },
      { role: "assistant", content: "hi, how can I help?" },
    ],
    projects: [{ id: "p1", name: "Apollo", status: "active" }],
    notes: [{ id: "n1", title: "Ideas", content: "# Ideas", project_id: "p1" }],
    checkpoints: [{ id: "k1", project_id: "p1", title: "Beta", date: Date.now(), is_approved: 1 }],
    task_comments: [{ id: "c1", task_id: "t1", author: "Ada", content: "looks good" }],
  };
}

/** Runs every REST operation; returns the access token of `account` for the sockets. */
export async function rest(baseUrl: string, account: Account): Promise<string> {
  const api = createClient<paths>({ baseUrl: `${baseUrl}/api/v1` });

  const health = ok("health", await api.GET("/health"));
  check(health.status === "ok" && health.database === "ok", "healthy");

  // A new account, then the same email again: the 409's code is a closed set.
  const fresh = { email: `ts-${randomUUID()}@example.com`, password: "a long enough password" };
  ok("register", await api.POST("/auth/register", { body: fresh }));
  const again = await api.POST("/auth/register", { body: fresh });
  check(again.error?.code === "conflict", "a second registration is a conflict");

  const login = ok("login", await api.POST("/auth/login", { body: account }));
  const pair = ok("refresh", await api.POST("/auth/refresh", { body: { refresh_token: login.refresh_token } }));
  const auth = { Authorization: `Bearer ${pair.access_token}` };

  const me = ok("me", await api.GET("/auth/me", { headers: auth }));
  check(me.email === account.email, "me is the account");
  const tier: Schemas["UserProfile"]["tier"] = me.tier;
  check(tier !== "free", "the account can store records");

  await records(api, auth);
  await vectors(api, auth);
  await backups(api, auth);
  await chat(api, auth);
  return pair.access_token;
}

type Api = ReturnType<typeof createClient<paths>>;
type Auth = { Authorization: string };

async function records(api: Api, auth: Auth): Promise<void> {
  const bytes = new TextEncoder().encode("client-encrypted record");
  const created = ok(
    "create_record",
    await api.POST("/storage/records", {
      headers: auth,
      body: { table: "notes", blob: base64(bytes), checksum: sha256(bytes) },
    }),
  );
  const listed = ok(
    "list_records",
    await api.GET("/storage/records", { headers: auth, params: { query: { table: "notes" } } }),
  );
  check(listed.some((r) => r.id === created.id), "the record is listed");

  const path = { id: created.id };
  const got = await api.GET("/storage/records/{id}", { headers: auth, params: { path }, parseAs: "arrayBuffer" });
  const body = ok("get_record", got);
  check(Buffer.from(body).equals(Buffer.from(bytes)), "the bytes come back");
  const etag = got.response.headers.get("ETag");
  check(etag === `"${sha256(bytes)}"`, "the ETag is the quoted checksum");
  const cached = await api.GET("/storage/records/{id}", {
    headers: auth,
    params: { path, header: { "If-None-Match": etag ?? "" } },
    parseAs: "arrayBuffer",
  });
  check(cached.response.status === 304, "If-None-Match answers 304");
  done("get_record 304");

  const newer = new TextEncoder().encode("newer bytes");
  ok(
    "update_record",
    await api.PUT("/storage/records/{id}", {
      headers: auth,
      params: { path },
      body: { blob: base64(newer), checksum: sha256(newer) },
    }),
  );
  ok("delete_record", await api.DELETE("/storage/records/{id}", { headers: auth, params: { path } }));
  const gone = await api.GET("/storage/records/{id}", { headers: auth, params: { path } });
  check(gone.error?.code === "not_found", "a deleted record is not found");
}

async function vectors(api: Api, auth: Auth): Promise<void> {
  const items = ["alpha", "beta"].map((id, i) => {
    const payload = new TextEncoder().encode(`payload ${id}`);
    return { id, blob: base64(payload), checksum: sha256(payload), vector: [1, i, 0.5] };
  });
  const up = ok("upsert_vectors", await api.POST("/storage/vectors/upsert", { headers: auth, body: { vectors: items } }));
  check(up.upserted === 2, "two items stored");
  // `top_k` has a server default: the request type lets it out.
  const found = ok(
    "search_vectors",
    await api.POST("/storage/vectors/search", { headers: auth, body: { query_vector: [1, 0, 0.5] } }),
  );
  check(found.results[0]?.id === "alpha", "the closest item first");
  const del = ok("delete_vectors", await api.DELETE("/storage/vectors", { headers: auth, body: { ids: ["alpha", "beta"] } }));
  check(del.deleted === 2, "both deleted");
}

async function backups(api: Api, auth: Auth): Promise<void> {
  const bytes = new TextEncoder().encode("an encrypted backup");
  const timestamp = Date.now();
  ok(
    "put_backup",
    await api.PUT("/backup", {
      headers: { ...auth, "Content-Type": "application/octet-stream" },
      params: {
        header: { "X-Backup-Version": 1, "X-Backup-Timestamp": timestamp, "X-Backup-Checksum": sha256(bytes) },
      },
      body: new Blob([bytes]),
      bodySerializer: (body) => body,
    }),
  );
  const latest = ok("get_backup", await api.GET("/backup", { headers: auth, parseAs: "arrayBuffer" }));
  check(Buffer.from(latest).equals(Buffer.from(bytes)), "the backup comes back");
  const since = new Date(timestamp + 60_000).toUTCString();
  const unchanged = await api.GET("/backup", {
    headers: auth,
    params: { header: { "If-Modified-Since": since } },
    parseAs: "arrayBuffer",
  });
  check(unchanged.response.status === 304, "If-Modified-Since answers 304");
  done("get_backup 304");
  const history = ok("backup_history", await api.GET("/backup/history", { headers: auth }));
  const first = history[0];
  if (first === undefined) throw new Error("backup_history: empty");
  ok("delete_backup", await api.DELETE("/backup/{id}", { headers: auth, params: { path: { id: first.id } } }));
}

async function chat(api: Api, auth: Auth): Promise<void> {
  // The fake model routes "run <tool>" to the tool's agent, which calls it once.
  const answer = ok(
    "chat",
    await api.POST("/chat", {
      headers: auth,
      body: { message: "run create_task", context: sampleContext(), source: "home" },
    }),
  );
  if (answer.mode !== "direct") throw new Error(`chat: expected a direct answer, got ${answer.mode}`);
  const action = answer.actions[0];
  check(action?.type === "create_record" && action.table === "tasks", "a write tool became an action");
  check(action?.agent === null, "no agent on a record action");
  check(typeof action?.data?.["title"] === "string", "the action carries the record's fields");

  const planned = await api.POST("/chat", {
    headers: auth,
    body: { message: "summarise my notes", execution_mode: "plan" },
  });
  const plan = ok("chat plan", planned);
  if (plan.mode !== "plan") throw new Error("chat plan: expected a plan");
  check(plan.steps.some((s) => typeof s.prompt_template === "string"), "a plan names template ids");

  const playbooks = ok("list_playbooks", await api.GET("/plans/playbook", { headers: auth }));
  const playbook = playbooks[0];
  if (playbook === undefined) throw new Error("list_playbooks: none");
  const tiers: Schemas["BillingTier"][] = ["free", "pro", "power", "team"];
  check(tiers.includes(playbook.min_tier), "min_tier is a tier");
  const one = ok(
    "get_playbook",
    await api.GET("/plans/playbook/{id}", { headers: auth, params: { path: { id: playbook.id } } }),
  );
  check(one.id === playbook.id, "the same playbook");
  const missing = await api.GET("/plans/playbook/{id}", { headers: auth, params: { path: { id: "no-such" } } });
  check(missing.error?.code === "not_found", "an unknown playbook is not found");
}

/**
 * The device routes, with a device whose socket is open (see device.ts): a chat whose
 * tools run on it (`answer` plays the device meanwhile), the list that shows it online,
 * and forgetting it (which closes its socket).
 */
export async function deviceCalls(
  baseUrl: string,
  token: string,
  deviceId: string,
  answer: () => Promise<void>,
): Promise<void> {
  const api = createClient<paths>({ baseUrl: `${baseUrl}/api/v1` });
  const auth = { Authorization: `Bearer ${token}` };
  const [onDevice] = await Promise.all([
    api.POST("/chat", { headers: auth, body: { message: "run list_tasks", device_id: deviceId } }),
    answer(),
  ]);
  const answered = ok("chat device_id", onDevice);
  if (answered.mode !== "direct") throw new Error("chat device_id: expected a direct answer");
  check(answered.response.includes("done list_tasks"), "the model saw the device's result");
  check(Array.isArray(answered.mutations), "a device chat reports its mutations");

  const listed = ok("list_devices", await api.GET("/devices", { headers: auth }));
  const mine = listed.find((d) => d.device_id === deviceId);
  check(mine?.online === true, "the connected device is online");
  check(typeof mine?.last_seen === "number", "last_seen is ms");

  const path = { device_id: deviceId };
  ok("delete_device", await api.DELETE("/devices/{device_id}", { headers: auth, params: { path } }));
  const again = await api.DELETE("/devices/{device_id}", { headers: auth, params: { path } });
  check(again.error?.code === "device_not_found", "a forgotten device is device_not_found");
}
