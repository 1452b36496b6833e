// WS /api/v1/ws/device as the desktop app speaks it, through types generated from the
// served AsyncAPI document: frames the program sends are typed `DeviceClientFrame`s,
// frames it reads are checked against the document's `DeviceServerFrame` schema before
// they are used. (This program gets no queued frames; a real device acks an
// `agent_trigger` or `notification` after processing it, and drops — but acks again —
// one whose id it has already processed.)
import type { components } from "./generated/asyncapi.js";
import { deviceCalls, done } from "./rest.js";
import { FrameSocket } from "./socket.js";
import { frameSchemas } from "./validate.js";

type Frames = components["schemas"];
type ServerFrame = Frames["DeviceServerFrame"];
type ClientFrame = Frames["DeviceClientFrame"];

export async function device(baseUrl: string, token: string): Promise<void> {
  const schemas = await frameSchemas(baseUrl, "DeviceServerFrame");
  const socket = await FrameSocket.open<ServerFrame, ClientFrame>(
    baseUrl,
    "/api/v1/ws/device",
    token,
    schemas,
    "DeviceServerFrame",
  );
  const deviceId = "ts-laptop-1";
  socket.send({
    type: "device_hello",
    device_id: deviceId,
    name: "TypeScript laptop",
    platform: "linux",
    app_version: "0.1.0",
    capabilities: ["tools"],
  });
  const ack = await socket.next();
  if (ack.type !== "hello_ack") throw new Error(`device: expected hello_ack, got ${JSON.stringify(ack)}`);
  if (ack.pending !== 0 || ack.session_id === "") throw new Error(`device: hello_ack ${JSON.stringify(ack)}`);
  done("ws device hello_ack");

  socket.send({ type: "ping" });
  const pong = await socket.next();
  if (pong.type !== "pong") throw new Error(`device: expected pong, got ${JSON.stringify(pong)}`);
  done("ws device ping");

  // A chat posted with device_id runs its tool here.
  await deviceCalls(baseUrl, token, deviceId, async () => {
    const call = await socket.next();
    if (call.type !== "tool_call") throw new Error(`device: expected tool_call, got ${JSON.stringify(call)}`);
    socket.send({ type: "tool_result", id: call.id, result: { tasks: [] } });
    done("ws device tool_call");
  });
  // Forgetting the device closed its socket, with a reason.
  const closed = await socket.closed;
  if (!closed.reason.includes("forgotten")) throw new Error(`device: closed ${JSON.stringify(closed)}`);
  done("ws device forgotten");
}
