// One of the server's WebSockets (chat or device), as the programs here use both: typed
// sends, and the server's frames in order, each checked against the served AsyncAPI
// document's schema before it is used.
import WebSocket from "ws";
import { mismatch, parseJson, type Schemas } from "./validate.js";

/** A socket whose server frames are `S` and client frames `C`. */
export class FrameSocket<S, C> {
  private readonly queue: S[] = [];
  private readonly waiting: ((f: S) => void)[] = [];
  private failure: Error | null = null;
  /** The close, with its code and reason. */
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(
    private readonly ws: WebSocket,
    private readonly schemas: Schemas,
    private readonly root: { $ref: string },
  ) {
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    ws.on("message", (data, binary) => {
      if (binary) return this.fail(new Error("a binary frame"));
      const value: unknown = parseJson(data.toString());
      if (!this.isFrame(value)) {
        const why = mismatch(this.schemas, this.root, value);
        return this.fail(new Error(`a frame the AsyncAPI document does not describe (${this.root.$ref}): ${why}`));
      }
      const next = this.waiting.shift();
      if (next === undefined) this.queue.push(value);
      else next(value);
    });
    ws.on("error", (e) => this.fail(e));
  }

  /** Opens `path` as the holder of `token`; server frames must match the component `schema`. */
  static async open<S, C>(
    baseUrl: string,
    path: string,
    token: string,
    schemas: Schemas,
    schema: string,
  ): Promise<FrameSocket<S, C>> {
    const url = `${baseUrl.replace(/^http/, "ws")}${path}`;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new FrameSocket<S, C>(ws, schemas, { $ref: `#/components/schemas/${schema}` });
  }

  private isFrame(v: unknown): v is S {
    return mismatch(this.schemas, this.root, v) === null;
  }

  private fail(e: Error): void {
    this.failure = e;
  }

  send(frame: C): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Text that is not a frame at all, to see the server's error frame. */
  sendRaw(text: string): void {
    this.ws.send(text);
  }

  /** The next server frame, within 10 s. */
  async next(): Promise<S> {
    if (this.failure !== null) throw this.failure;
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    return new Promise<S>((resolve, reject) => {
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
