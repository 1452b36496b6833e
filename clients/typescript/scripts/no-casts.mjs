// Fails when a hand-written source casts: `as`, `<any>`, `: any`, `as unknown`, or a
// non-null assertion `!` (x!.y, x!, x![0]). The point of the client is that the types
// generated from the served documents are enough; a cast would hide where they are not.
import { readdir, readFile } from "node:fs/promises";

const root = new URL("../src/", import.meta.url);
const files = (await readdir(root, { recursive: true }))
  .filter((f) => f.endsWith(".ts") && !f.startsWith("generated"));
const rules = [
  [/\sas\s/, "`as` cast"],
  [/<any>/, "`<any>`"],
  [/:\s*any\b/, "`: any`"],
  [/\bany\[\]/, "`any[]`"],
  [/as unknown/, "`as unknown`"],
  // A `!` right after an identifier, `)` or `]` and before `.`, `[`, `(`, `)`, `,` or `;`
  // is a non-null assertion (`!=`/`!==` are comparisons and not matched).
  [/[\w)\]]!(?=[.[(),;\s])/, "non-null assertion `!`"],
];
let bad = 0;
for (const file of files) {
  const lines = (await readFile(new URL(file, root), "utf8")).split("\n");
  lines.forEach((line, i) => {
    // Comments may say "as"; only code is checked.
    if (/^\s*(\/\/|\/\*|\*)/.test(line)) return;
    const code = line.replace(/\/\/.*$/, "").replace(/(["'`])(?:\\.|(?!\1).)*\1/g, '""');
    for (const [re, what] of rules) {
      if (re.test(code)) {
        console.error(`src/${file}:${i + 1}: ${what}: ${line.trim()}`);
        bad++;
      }
    }
  });
}
if (bad) process.exit(1);
console.log(`no casts in ${files.length} files`);
