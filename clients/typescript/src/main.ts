// Drives a live Adiuva server through the generated types: every REST operation, then
// both chat WebSocket protocols and the device socket. Exit 0 when everything answered as documented.
//   ADIUVA_URL=http://127.0.0.1:8000 ADIUVA_EMAIL=… ADIUVA_PASSWORD=… node dist/main.js
import { agents } from "./agents.js";
import { rest } from "./rest.js";
import { device } from "./device.js";
import { sockets } from "./ws.js";

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

async function main(): Promise<void> {
  const baseUrl = env("ADIUVA_URL").replace(/\/$/, "");
  const token = await rest(baseUrl, { email: env("ADIUVA_EMAIL"), password: env("ADIUVA_PASSWORD") });
  await agents(baseUrl, token);
  await sockets(baseUrl, token);
  await device(baseUrl, token);
  console.log("all operations ok");
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
  process.exit(1);
});
