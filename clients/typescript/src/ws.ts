// Both protocols of WS /api/v1/chat/stream, through types generated from the served
// AsyncAPI document: frames the program sends are typed `ClientFrame`s, frames it reads
// are checked against the document's `ServerFrame` schema before they are used.
import type { components } from "./generated/asyncapi.js";
import { done, sampleContext } from "./rest.js";
import { FrameSocket } from "./socket.js";
import { frameSchemas } from "./validate.js";

type Frames = components["schemas"];
type ServerFrame = Frames["ServerFrame"];
type ClientFrame = Frames["ClientFrame"];
type ToolCall = Extract<ServerFrame, { type: "tool_call" }>;

/** The chat socket. */
type Socket = FrameSocket<ServerFrame, ClientFrame>;

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

  const socket: Socket = await FrameSocket.open<ServerFrame, ClientFrame>(
    baseUrl,
    "/api/v1/chat/stream",
    token,
    schemas,
    "ServerFrame",
  );

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
