// Both protocols of WS /api/v1/chat/stream, through types generated from the served
// AsyncAPI document: frames the program sends are typed `ClientFrame`s, frames it reads
// are checked against the document's `ServerFrame` schema before they are used.
import WebSocket from "ws";
import type { components } from "./generated/asyncapi.js";
import { done, sampleContext } from "./rest.js";
import { frameSchemas, mismatch, parseJson, type Schemas } from "./validate.js";

type Frames = components["schemas"];
type ServerFrame = Frames["ServerFrame"];
type ClientFrame = Frames["ClientFrame"];
type ToolCall = Extract<ServerFrame, { type: "tool_call" }>;

/** One socket: typed sends, and the server's frames in order. */
class Socket {
  private readonly queue: ServerFrame[] = [];
  private readonly waiting: ((f: ServerFrame) => void)[] = [];
  private failure: Error | null = null;

  private constructor(
    private readonly ws: WebSocket,
    private readonly schemas: Schemas,
  ) {
    ws.on("message", (data, binary) => {
      if (binary) return this.fail(new Error("a binary frame"));
      const value: unknown = parseJson(data.toString());
      if (!this.isServerFrame(value)) {
        const why = mismatch(this.schemas, { $ref: "#/components/schemas/ServerFrame" }, value);
        return this.fail(new Error(`a frame the AsyncAPI document does not describe: ${why}`));
      }
      const next = this.waiting.shift();
      if (next === undefined) this.queue.push(value);
      else next(value);
    });
    ws.on("error", (e) => this.fail(e));
  }

  private isServerFrame(v: unknown): v is ServerFrame {
    return mismatch(this.schemas, { $ref: "#/components/schemas/ServerFrame" }, v) === null;
  }

  private fail(e: Error): void {
    this.failure = e;
  }

  static async open(baseUrl: string, token: string, schemas: Schemas): Promise<Socket> {
    const url = `${baseUrl.replace(/^http/, "ws")}/api/v1/chat/stream`;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new Socket(ws, schemas);
  }

  send(frame: ClientFrame): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Text that is not a frame at all, to see the server's error frame. */
  sendRaw(text: string): void {
    this.ws.send(text);
  }

  async next(): Promise<ServerFrame> {
    if (this.failure !== null) throw this.failure;
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(() => reject(this.failure ?? new Error("no frame within 10 s")), 10_000);
      this.waiting.push((f) => {
        clearTimeout(timer);
        resolve(f);
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}

/** What the device answers to a tool call: data from the sample context. */
function runTool(call: ToolCall): ClientFrame {
  const context = sampleContext();
  const result = call.name.startsWith("list_") ? { tasks: context.recent_tasks ?? [] } : { ok: true, id: "new-1" };
  return { type: "tool_result", id: call.id, result };
}

/** Plays the device until the chat's last frame; returns it and the streamed text. */
async function converse(socket: Socket): Promise<{ last: ServerFrame; text: string; calls: number }> {
  let text = "";
  let calls = 0;
  for (;;) {
    const frame = await socket.next();
    switch (frame.type) {
      case "text_chunk":
        text += frame.text;
        break;
      case "tool_call":
        calls++;
        socket.send(runTool(frame));
        break;
      default:
        return { last: frame, text, calls };
    }
  }
}

export async function sockets(baseUrl: string, token: string): Promise<void> {
  const schemas = await frameSchemas(baseUrl, "ServerFrame");

  const socket = await Socket.open(baseUrl, token, schemas);

  // v1: a read tool runs on the device, the chat ends with `final`.
  socket.send({ type: "chat_request", message: "run list_tasks", context: sampleContext() });
  const v1 = await converse(socket);
  if (v1.last.type !== "final") throw new Error(`v1: ended with ${JSON.stringify(v1.last)}`);
  if (v1.calls !== 1 || !v1.text.includes("done list_tasks")) throw new Error(`v1: ${v1.calls} calls, text ${v1.text}`);
  done("ws v1 chat_request");

  // v2: a write tool from a popup; the chat ends with `ai_response` and its mutation.
  socket.send({
    type: "user_request",
    message: "run create_task",
    source: "popup",
    scope: { project_id: "p1" },
    context: sampleContext(),
  });
  const v2 = await converse(socket);
  if (v2.last.type !== "ai_response") throw new Error(`v2: ended with ${JSON.stringify(v2.last)}`);
  const mutation = v2.last.mutations[0];
  if (mutation?.action !== "create_record" || mutation.table !== "tasks") {
    throw new Error(`v2: mutations ${JSON.stringify(v2.last.mutations)}`);
  }
  if (v2.last.context.scope_changed) throw new Error("v2: a task without a project stays in scope");
  done("ws v2 user_request");

  // v1 plan mode: `final` carries the plan.
  socket.send({ type: "chat_request", message: "summarise my notes", execution_mode: "plan" });
  const planned = await converse(socket);
  if (planned.last.type !== "final" || planned.last.plan === undefined || planned.last.plan === null) {
    throw new Error(`v1 plan: ended with ${JSON.stringify(planned.last)}`);
  }
  if (planned.last.plan.steps.length === 0) throw new Error("v1 plan: no steps");
  done("ws v1 plan");

  // v2: the router asks first; the next `user_request` answers, and a write outside the
  // popup's project comes back with a navigation directive.
  socket.send({ type: "user_request", message: "please clarify", source: "popup", scope: { project_id: "p2" } });
  const asked = await converse(socket);
  if (asked.last.type !== "ask_user_clarification") throw new Error(`v2: expected a question, got ${JSON.stringify(asked.last)}`);
  if (asked.last.question === "") throw new Error("v2: an empty question");
  done("ws v2 ask_user_clarification");
  socket.send({ type: "user_request", message: "run create_checkpoint", source: "popup", scope: { project_id: "p2" } });
  const moved = await converse(socket);
  if (moved.last.type !== "ai_response") throw new Error(`v2 answer: ended with ${JSON.stringify(moved.last)}`);
  const nav = moved.last.navigation[0];
  if (nav?.action !== "navigate" || nav.filter["project_id"] !== "p1" || !moved.last.context.scope_changed) {
    throw new Error(`v2 answer: navigation ${JSON.stringify(moved.last.navigation)}`);
  }
  done("ws v2 navigation");

  // Text that is no frame: an error frame, and the socket stays usable.
  socket.sendRaw("not json");
  const refused = await socket.next();
  if (refused.type !== "error" || refused.code !== "malformed_frame") {
    throw new Error(`error frame: ${JSON.stringify(refused)}`);
  }
  done("ws error frame");
  socket.close();
}
