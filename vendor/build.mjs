// Builds ../liveproxy/static/vendor/genai.mjs: the browser build of @google/genai and what it
// imports, bundled by esbuild into one minified ES module, and genai.LICENSE.txt beside it with
// the license of every package the bundle contains. Run by `make vendor` after `npm ci`; the same
// lock file gives the same bytes.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "liveproxy", "static", "vendor");

const sdk = JSON.parse(readFileSync(join(here, "node_modules", "@google", "genai", "package.json"), "utf8"));
const result = await build({
  banner: { js: `/* @google/genai ${sdk.version} (${sdk.license}), bundled by liveproxy's make vendor: see genai.LICENSE.txt */` },
  entryPoints: [join(here, "entry.mjs")],
  outfile: join(out, "genai.mjs"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  legalComments: "none", // the licenses go in genai.LICENSE.txt, whole
  metafile: true,
  logLevel: "warning",
});

// Each package under node_modules/ that contributed an input, with its license file.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match) packages.set(match[1], join(here, "node_modules", match[1]));
}
const sections = [...packages].sort(([a], [b]) => a.localeCompare(b)).map(([name, dir]) => {
  const { version, license } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  if (!file) throw new Error(`${name} has no license file`);
  const text = readFileSync(join(dir, file), "utf8").trim();
  return `${name} ${version} (${license})\n${"=".repeat(60)}\n\n${text}\n`;
});
writeFileSync(
  join(out, "genai.LICENSE.txt"),
  "genai.mjs bundles these packages, each under its own license:\n\n" + sections.join("\n\n"),
);
console.log(`genai.mjs: ${[...packages.keys()].join(", ")}`);
