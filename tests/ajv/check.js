// Compiles every schema of a tools/list reply with Ajv (draft 2020-12), as Ajv-based MCP
// clients do (Claude Code: `unknown format "uint64" ignored in schema`), and validates
// structured results against their tool's outputSchema. Prints one JSON line:
// {"tools": N, "warnings": [...], "errors": [...]}. Used by tests/conformance.rs with the Ajv
// the Inspector CLI installs (scripts/peers/mcp-tools.sh).
//
// usage: node check.js NODE_MODULES TOOLS_LIST.json [RESULTS.json]
//   RESULTS.json: [[tool name, structuredContent], ...]
const [nm, listPath, resultsPath] = process.argv.slice(2);
const Ajv2020 = require(nm + "/ajv/dist/2020").default;
const fs = require("fs");
const warnings = [];
const logger = { log: () => {}, warn: (...a) => warnings.push(a.join(" ")), error: (...a) => warnings.push("error: " + a.join(" ")) };
// JSON Schema's own formats are known (not checked); any other one is what a client warns about.
const standard = ["date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer", "relative-json-pointer", "regex"];
const ajv = new Ajv2020({ logger, formats: Object.fromEntries(standard.map((f) => [f, true])) });
const list = JSON.parse(fs.readFileSync(listPath, "utf8"));
const tools = (list.result || list).tools;
const validators = {};
const errors = [];
for (const t of tools) {
  for (const which of ["inputSchema", "outputSchema"]) {
    try {
      const v = ajv.compile(t[which]);
      if (which === "outputSchema") validators[t.name] = v;
    } catch (e) { errors.push(`${t.name} ${which}: ${e.message}`); }
  }
}
if (resultsPath) {
  for (const [name, value] of JSON.parse(fs.readFileSync(resultsPath, "utf8"))) {
    const v = validators[name];
    if (!v(value)) errors.push(`${name} result: ${ajv.errorsText(v.errors)}`);
  }
}
console.log(JSON.stringify({ tools: tools.length, warnings, errors }));
