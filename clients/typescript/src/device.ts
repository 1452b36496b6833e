// WS /api/v1/ws/device as the desktop app speaks it, through types generated from the
// served AsyncAPI document: frames the program sends are typed `DeviceClientFrame`s,
// frames it reads are checked against the document's `DeviceServerFrame` schema before
// they are used. (This program gets no queued frames; a real device acks an
// `agent_trigger` or `notification` after processing it, and drops — but acks again —
// one whose id it has already processed.)
import WebSocket from "ws";
import type { components } from "./generated/asyncapi.js";
import { deviceCalls, done } from "./rest.js";
import { frameSchemas, mismatch, parseJson, type Schemas } from "./validate.js";

type Frames = components["schemas"];
type ServerFrame = Frames["DeviceServerFrame"];
type ClientFrame = Frames["DeviceClientFrame"];

const ROOT = { $ref: "#/components/schemas/DeviceServerFrame" };

/** The device's socket: typed sends, the server's frames in order, and its close. */
class DeviceSocket {
  private readonly queue: ServerFrame[] = [];
  private readonly waiting: ((f: ServerFrame) => void)[] = [];
  private failure: Error | null = null;
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(
    private readonly ws: WebSocket,
    private readonly schemas: Schemas,
  ) {
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    ws.on("message", (data, binary) => {
      if (binary) return this.fail(new Error("a binary frame"));
      const value: unknown = parseJson(data.toString());
      if (!this.isServerFrame(value)) {
        const why = mismatch(this.schemas, ROOT, value);
        return this.fail(new Error(`a device frame the AsyncAPI document does not describe: ${why}`));
      }
      const next = this.waiting.shift();
      if (next === undefined) this.queue.push(value);
      else next(value);
    });
    ws.on("error", (e) => this.fail(e));
  }

  private isServerFrame(v: unknown): v is ServerFrame {
    return mismatch(this.schemas, ROOT, v) === null;
  }

  private fail(e: Error): void {
    this.failure = e;
  }

  static async open(baseUrl: string, token: string, schemas: Schemas): Promise<DeviceSocket> {
    const url = `${baseUrl.replace(/^http/, "ws")}/api/v1/ws/device`;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new DeviceSocket(ws, schemas);
  }

  send(frame: ClientFrame): void {
    this.ws.send(JSON.stringify(frame));
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
}

export async function device(baseUrl: string, token: string): Promise<void> {
  const schemas = await frameSchemas(baseUrl, "DeviceServerFrame");
  const socket = await DeviceSocket.open(baseUrl, token, schemas);
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
