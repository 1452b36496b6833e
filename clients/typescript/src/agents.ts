// The agents and OAuth operations through the generated types. The test server has no
// OAuth provider configured and no device online, so: local agents are created, changed,
// run (the run is skipped: no device) and deleted; the journey runs over the fake model;
// the cloud and OAuth operations answer their documented refusals, whose codes the types
// spell as closed sets.
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/openapi.js";
import { done } from "./rest.js";

type Schemas = components["schemas"];
type Api = ReturnType<typeof createClient<paths>>;
type Auth = { Authorization: string };

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function ok<T>(op: string, r: { data?: T; error?: unknown; response: Response }): NonNullable<T> {
  const data = r.data;
  if (data === undefined || data === null) {
    throw new Error(`${op}: HTTP ${r.response.status} ${JSON.stringify(r.error)}`);
  }
  done(op);
  return data;
}

/** A documented refusal: one of `codes` (and `ok <op>` printed). */
function refused(op: string, r: { error?: { code: string }; response: Response }, codes: string[]): void {
  const code = r.error?.code;
  if (code === undefined || !codes.includes(code)) {
    throw new Error(`${op}: expected one of ${codes.join(", ")}, got HTTP ${r.response.status} ${JSON.stringify(r.error)}`);
  }
  done(op);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function agents(baseUrl: string, token: string): Promise<void> {
  const api: Api = createClient<paths>({ baseUrl: `${baseUrl}/api/v1` });
  const auth: Auth = { Authorization: `Bearer ${token}` };

  const catalog = ok("agent_catalog", await api.GET("/agents/catalog", { headers: auth }));
  const review = catalog.find((c) => c.agent_type === "weekly_review");
  const kind: Schemas["AgentKindOut"] | undefined = review?.kind;
  check(kind === "local", "weekly_review is a local agent");
  check(catalog.some((c) => c.kind === "cloud" && (c.scopes["google"]?.length ?? 0) > 0), "a cloud type lists its scopes");

  const created = ok(
    "create_local_agent",
    await api.POST("/agents/local", { headers: auth, body: { name: "Weekly review", agent_type: "weekly_review" } }),
  );
  check(created.status === "active" && created.timezone === "UTC", "defaults applied");
  const listed = ok("list_local_agents", await api.GET("/agents/local", { headers: auth }));
  check(listed.some((a) => a.id === created.id), "the agent is listed");
  const path = { id: created.id };
  const changed = ok(
    "update_local_agent",
    await api.PUT("/agents/local/{id}", { headers: auth, params: { path }, body: { schedule: "", timezone: "Europe/Paris" } }),
  );
  check(changed.schedule === null && changed.next_run_at === null, "manual only: no next run");

  const started = ok("run_agent", await api.POST("/agents/{id}/run", { headers: auth, params: { path } }));
  check(started.ok && started.run_id !== "", "a run id");
  let status: Schemas["RunStatusOut"] | undefined;
  for (let i = 0; i < 100 && (status === undefined || status === "queued" || status === "running"); i++) {
    const runs = ok("list_agent_runs", await api.GET("/agents/runs", { headers: auth, params: { query: { agent_id: created.id, limit: 10 } } }));
    status = runs.find((r) => r.id === started.run_id)?.status;
    if (status === "queued" || status === "running") await sleep(50);
  }
  check(status === "skipped", `no device online: the run is skipped (got ${status})`);

  ok("delete_local_agent", await api.DELETE("/agents/local/{id}", { headers: auth, params: { path } }));
  const gone = await api.DELETE("/agents/local/{id}", { headers: auth, params: { path } });
  check(gone.error?.code === "agent_not_found", "a deleted agent is agent_not_found");

  const start = ok(
    "journey_start",
    await api.POST("/agents/journey/start", { headers: auth, body: { agent_type: "weekly_review", data_types: ["tasks"] } }),
  );
  check(!start.done, "the journey asks first");
  const end = ok(
    "journey_message",
    await api.POST("/agents/journey/message", { headers: auth, body: { session_id: start.session_id, message: "just pick" } }),
  );
  check(end.done && end.config?.agent_type === "weekly_review", "the journey ends with a config");

  // No provider is configured on this server, and no token exists.
  ok("list_cloud_agents", await api.GET("/agents/cloud", { headers: auth }));
  refused(
    "create_cloud_agent",
    await api.POST("/agents/cloud", {
      headers: auth,
      body: { name: "Inbox", agent_type: "inbox_triage", provider: "google", oauth_token_encrypted: "x" },
    }),
    ["oauth_not_configured", "validation_error"],
  );
  const nobody = { id: "00000000-0000-4000-8000-000000000000" };
  refused(
    "update_cloud_agent",
    await api.PUT("/agents/cloud/{id}", { headers: auth, params: { path: nobody }, body: { enabled: false } }),
    ["agent_not_found"],
  );
  refused("delete_cloud_agent", await api.DELETE("/agents/cloud/{id}", { headers: auth, params: { path: nobody } }), [
    "agent_not_found",
  ]);
  const provider = { provider: "google" };
  refused("oauth_authorize", await api.GET("/oauth/{provider}/authorize", { headers: auth, params: { path: provider } }), [
    "oauth_not_configured",
  ]);
  refused(
    "oauth_callback",
    await api.GET("/oauth/{provider}/callback", { params: { path: provider, query: { error: "access_denied" } } }),
    ["oauth_denied"],
  );
  refused(
    "oauth_refresh",
    await api.POST("/oauth/{provider}/refresh", { headers: auth, params: { path: provider }, body: { encrypted_token: "x" } }),
    ["oauth_not_configured", "validation_error"],
  );
}
