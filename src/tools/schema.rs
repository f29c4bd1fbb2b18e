//! The schemas a tool list carries, in JSON Schema's own vocabulary and sized
//! for every client that connects (each one downloads the whole list).
//!
//! schemars writes Rust's integer and float widths as `format` values (`uint64`,
//! `int32`, `double`, ...) that JSON Schema does not define; Ajv-based clients
//! (Claude Code among them) warn on each. Both schema kinds lose those formats
//! here, keeping `minimum: 0` for unsigned integers.
//!
//! Output schemas are compacted further, because they are most of the list's
//! bytes and a client only validates against them: no descriptions or other
//! annotations (the README documents the outputs), the result's branches side
//! by side (the tool's output, a confirmation request, a declined plan, an
//! error), objects described with their fields to [`OUTPUT_DEPTH`] levels and
//! typed `object` below that, `required` stated for each branch's own fields,
//! and every subschema that repeats kept once under `$defs`. A looser schema
//! never rejects a result the server produces, which is what the tests check.
use std::collections::{BTreeMap, BTreeSet};

use rmcp::model::JsonObject;
use serde_json::{Map, Value};

/// The `format` values JSON Schema 2020-12 defines (validation vocabulary §7.3).
pub const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Levels of fields an output schema spells out: the result's fields (level 1)
/// and the fields of the objects they hold (level 2); an object at level 2 is
/// typed `object` only. Arrays add no level: in health, `services[].ports` is
/// level 2, so its items are `{type: object}`.
pub const OUTPUT_DEPTH: usize = 2;

/// A repeated subschema shorter than this (serialized bytes) stays inline:
/// a `$ref` and its `$defs` entry would cost more than the copies.
const MIN_SHARED_BYTES: usize = 64;

/// Keywords whose value is one subschema.
const ONE_SCHEMA: &[&str] = &[
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
];
/// Keywords whose value is a list of subschemas.
const SCHEMA_LIST: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SCHEMA_MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "dependentSchemas",
];
/// Annotations: they document, they never change what validates.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$schema",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];
/// Where a def was inlined from, so a shared copy gets its name back.
const DEF_MARK: &str = "$$def";

/// An input schema in the standard vocabulary, without what repeats: no
/// non-standard formats (`minimum: 0` kept for unsigned ones), no `$schema`
/// (2020-12 is MCP's default) or root `title`, no `default: null` (absence
/// says the same), enum variants as `enum` lists, and the docs of shared
/// types (`$defs`) left to the fields that use them. Field descriptions stay:
/// they tell an agent what to pass.
pub fn standard_input(schema: &JsonObject) -> JsonObject {
    let mut v = Value::Object(schema.clone());
    if let Value::Object(root) = &mut v {
        root.remove("$schema");
        root.remove("title");
        if let Some(Value::Object(defs)) = root.get_mut("$defs") {
            for def in defs.values_mut() {
                if let Value::Object(d) = def {
                    d.remove("description");
                }
            }
        }
    }
    walk_mut(&mut v, &mut |s| {
        standard_format(s);
        if s.get("default") == Some(&Value::Null) {
            s.remove("default");
        }
        if let Some(Value::String(d)) = s.get_mut("description") {
            *d = one_line(d);
        }
    });
    walk_mut(&mut v, &mut |s| {
        // A variant's own doc goes with it; the field's description names the values.
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(alts)) = s.get_mut(key) {
                for a in alts.iter_mut() {
                    if let Value::Object(o) = a {
                        if o.contains_key("const") {
                            o.remove("description");
                        }
                    }
                }
            }
        }
        const_union_to_enum(s);
    });
    into_object(v)
}

/// Doc comments wrap at 100 columns; a description is one paragraph.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The compact output schema described in the module comment.
pub fn compact_output(schema: &JsonObject) -> JsonObject {
    let mut root = schema.clone();
    let defs = match root.remove("$defs") {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    let mut v = inline(Value::Object(root), &defs, &mut Vec::new());
    walk_mut(&mut v, &mut |s| {
        standard_format(s);
        for k in ANNOTATIONS {
            s.remove(*k);
        }
    });
    // A second pass: the variants' docs are gone now.
    walk_mut(&mut v, &mut const_union_to_enum);
    let Value::Object(mut root) = v else {
        return schema.clone();
    };
    // The branches side by side: Outcome<Guarded<T>> nests anyOf in anyOf.
    if let Some(Value::Array(branches)) = root.remove("anyOf") {
        root.insert("anyOf".into(), Value::Array(splice_unions(branches)));
    }
    let mut v = Value::Object(root);
    cap(&mut v, 0, true);
    walk_mut(&mut v, &mut merge_type_unions);
    let mut root = into_object(v);
    root.insert("type".into(), Value::String("object".into()));
    let defs = share_repeats(&mut root);
    if !defs.is_empty() {
        root.insert("$defs".into(), Value::Object(defs));
    }
    let mut v = Value::Object(root);
    walk_mut(&mut v, &mut |s| {
        s.remove(DEF_MARK);
    });
    into_object(v)
}

fn into_object(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// Calls `f` on every schema object in `v` (subschemas found through the
/// keywords that hold schemas, never inside `enum`, `const` or `default` data).
fn walk_mut(v: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(s) = v else { return };
    f(s);
    for (k, child) in s.iter_mut() {
        let k = k.as_str();
        if ONE_SCHEMA.contains(&k) {
            walk_mut(child, f);
        } else if SCHEMA_LIST.contains(&k) {
            if let Value::Array(items) = child {
                items.iter_mut().for_each(|c| walk_mut(c, f));
            }
        } else if SCHEMA_MAP.contains(&k) {
            if let Value::Object(m) = child {
                m.values_mut().for_each(|c| walk_mut(c, f));
            }
        }
    }
}

/// Drops a `format` JSON Schema does not define; an unsigned integer keeps
/// (or gains) `minimum: 0`.
fn standard_format(s: &mut Map<String, Value>) {
    let Some(Value::String(format)) = s.get("format") else {
        return;
    };
    if STANDARD_FORMATS.contains(&format.as_str()) {
        return;
    }
    let unsigned = format.starts_with("uint");
    s.remove("format");
    if unsigned && !s.contains_key("minimum") && !s.contains_key("exclusiveMinimum") {
        s.insert("minimum".into(), Value::from(0));
    }
}

/// `oneOf: [{const: a}, {const: b}]` (schemars' form for documented enum
/// variants) becomes `enum: [a, b]` once the variants' docs are gone.
fn const_union_to_enum(s: &mut Map<String, Value>) {
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(alts)) = s.get(key) else {
            continue;
        };
        let plain = |a: &Value| {
            a.as_object().is_some_and(|o| {
                o.contains_key("const") && o.keys().all(|k| k == "const" || k == "type")
            })
        };
        if alts.is_empty() || !alts.iter().all(plain) {
            continue;
        }
        let values: Vec<Value> = alts.iter().map(|a| a["const"].clone()).collect();
        let types: BTreeSet<String> = alts
            .iter()
            .filter_map(|a| a.get("type").map(Value::to_string))
            .collect();
        let one_type = (types.len() == 1 && alts.iter().all(|a| a.get("type").is_some()))
            .then(|| alts[0]["type"].clone());
        s.remove(key);
        s.insert("enum".into(), Value::Array(values));
        if let Some(t) = one_type {
            s.entry("type").or_insert(t);
        }
    }
}

/// `anyOf: [{type: object}, {type: null}]` is `type: [object, null]`.
fn merge_type_unions(s: &mut Map<String, Value>) {
    let Some(Value::Array(alts)) = s.get("anyOf") else {
        return;
    };
    if s.contains_key("type") {
        return;
    }
    let mut types: Vec<Value> = Vec::new();
    for a in alts {
        let Some(o) = a.as_object() else { return };
        if o.keys().any(|k| k != "type" && k != DEF_MARK) {
            return;
        }
        match o.get("type") {
            Some(Value::String(t)) => types.push(Value::String(t.clone())),
            Some(Value::Array(ts)) => types.extend(ts.iter().cloned()),
            _ => return,
        }
    }
    let mut seen = BTreeSet::new();
    types.retain(|t| seen.insert(t.to_string()));
    s.remove("anyOf");
    s.insert(
        "type".into(),
        if types.len() == 1 {
            types.remove(0)
        } else {
            Value::Array(types)
        },
    );
}

/// Replaces every `$ref` into `#/$defs/` by the def itself (marked with its
/// name). A def that refers to itself ends as `{type: object}` there.
fn inline(v: Value, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    match v {
        Value::Object(mut s) => {
            if let Some(Value::String(r)) = s.get("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    let name = name.to_string();
                    s.remove("$ref");
                    let body = if stack.contains(&name) {
                        serde_json::json!({ "type": "object" })
                    } else if let Some(def) = defs.get(&name) {
                        stack.push(name.clone());
                        let b = inline(def.clone(), defs, stack);
                        stack.pop();
                        b
                    } else {
                        serde_json::json!({})
                    };
                    let mut body = into_object(body);
                    // Keywords beside the $ref (a field's own description) stay.
                    for (k, x) in s {
                        body.insert(k, inline(x, defs, stack));
                    }
                    body.entry(DEF_MARK)
                        .or_insert_with(|| Value::String(name.clone()));
                    return Value::Object(body);
                }
            }
            let mut out = Map::new();
            for (k, x) in s {
                let x = if is_schema_keyword(&k) {
                    inline_keyword(&k, x, defs, stack)
                } else {
                    x
                };
                out.insert(k, x);
            }
            Value::Object(out)
        }
        other => other,
    }
}

fn is_schema_keyword(k: &str) -> bool {
    ONE_SCHEMA.contains(&k) || SCHEMA_LIST.contains(&k) || SCHEMA_MAP.contains(&k)
}

fn inline_keyword(k: &str, x: Value, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    if ONE_SCHEMA.contains(&k) {
        return inline(x, defs, stack);
    }
    match x {
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|c| inline(c, defs, stack)).collect())
        }
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(n, c)| (n, inline(c, defs, stack)))
                .collect(),
        ),
        other => other,
    }
}

/// A branch that is itself only a union contributes its alternatives.
fn splice_unions(branches: Vec<Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for b in branches {
        let only_union = b.as_object().is_some_and(|o| {
            matches!(o.get("anyOf"), Some(Value::Array(_)))
                && o.keys().all(|k| k == "anyOf" || k == DEF_MARK)
        });
        if only_union {
            if let Some(Value::Array(inner)) = b.get("anyOf").cloned() {
                out.extend(splice_unions(inner));
            }
        } else {
            out.push(b);
        }
    }
    out
}

/// Keeps object structure to [`OUTPUT_DEPTH`]; `required` only on the
/// branches at the root (`top`).
fn cap(v: &mut Value, level: usize, top: bool) {
    let Value::Object(s) = v else { return };
    if !top {
        s.remove("required");
    }
    if level >= OUTPUT_DEPTH {
        for k in [
            "properties",
            "patternProperties",
            "additionalProperties",
            "required",
            "propertyNames",
            "unevaluatedProperties",
        ] {
            s.remove(k);
        }
    }
    for (k, child) in s.iter_mut() {
        match k.as_str() {
            "properties" | "patternProperties" => {
                if let Value::Object(m) = child {
                    m.values_mut().for_each(|c| cap(c, level + 1, false));
                }
            }
            "additionalProperties" => cap(child, level + 1, false),
            "items" | "contains" | "not" => cap(child, level, false),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(items) = child {
                    // The root's alternatives are its branches: each a root.
                    items
                        .iter_mut()
                        .for_each(|c| cap(c, level, top && level == 0));
                }
            }
            _ => {}
        }
    }
}

/// Moves every subschema that occurs more than once (and is worth a `$ref`)
/// into `$defs`, largest first, named after the def it came from.
fn share_repeats(root: &mut Map<String, Value>) -> Map<String, Value> {
    let mut defs: Map<String, Value> = Map::new();
    loop {
        let mut seen: BTreeMap<String, (usize, Option<String>)> = BTreeMap::new();
        let mut count = |v: &Value| {
            let Value::Object(o) = v else { return };
            if o.contains_key("$ref") {
                return;
            }
            let key = key_of(v);
            if key.len() < MIN_SHARED_BYTES {
                return;
            }
            let mark = o.get(DEF_MARK).and_then(Value::as_str).map(str::to_string);
            let e = seen.entry(key).or_insert((0, None));
            e.0 += 1;
            if e.1.is_none() {
                e.1 = mark;
            }
        };
        for (k, child) in root.iter() {
            visit_subschemas(k, child, &mut count);
        }
        for def in defs.values() {
            if let Value::Object(o) = def {
                for (k, child) in o {
                    visit_subschemas(k, child, &mut count);
                }
            }
        }
        let Some((key, name)) = seen
            .into_iter()
            .filter(|(_, (n, _))| *n >= 2)
            .max_by(|(ka, _), (kb, _)| ka.len().cmp(&kb.len()).then(kb.cmp(ka)))
            .map(|(k, (_, name))| (k, name))
        else {
            break;
        };
        let base = name.unwrap_or_else(|| "Shared".into());
        let mut name = base.clone();
        let mut n = 2;
        while defs.contains_key(&name) {
            name = format!("{base}{n}");
            n += 1;
        }
        let target = Value::String(format!("#/$defs/{name}"));
        let mut body = None;
        let mut replace = |v: &mut Value| {
            if key_of(v) == key {
                if body.is_none() {
                    body = Some(v.clone());
                }
                *v = Value::Object(Map::from_iter([("$ref".to_string(), target.clone())]));
            }
        };
        for (k, child) in root.iter_mut() {
            replace_subschemas(k, child, &mut replace);
        }
        for def in defs.values_mut() {
            if let Value::Object(o) = def {
                for (k, child) in o.iter_mut() {
                    replace_subschemas(k, child, &mut replace);
                }
            }
        }
        match body {
            Some(b) => {
                defs.insert(name, b);
            }
            None => break,
        }
    }
    defs
}

/// The identity of a subschema: its JSON without the def marks.
fn key_of(v: &Value) -> String {
    let mut c = v.clone();
    walk_mut(&mut c, &mut |s| {
        s.remove(DEF_MARK);
    });
    c.to_string()
}

/// Every subschema under keyword `k` (value `v`), outermost first.
fn visit_subschemas(k: &str, v: &Value, f: &mut impl FnMut(&Value)) {
    let children: Vec<&Value> = if ONE_SCHEMA.contains(&k) {
        vec![v]
    } else if SCHEMA_LIST.contains(&k) {
        v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
    } else if SCHEMA_MAP.contains(&k) {
        v.as_object()
            .map(|m| m.values().collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for c in children {
        f(c);
        if let Value::Object(o) = c {
            for (ck, cv) in o {
                visit_subschemas(ck, cv, f);
            }
        }
    }
}

/// Offers every subschema under keyword `k` to `f`, outermost first; a
/// subschema `f` replaced is not descended into.
fn replace_subschemas(k: &str, v: &mut Value, f: &mut impl FnMut(&mut Value)) {
    let mut each = |c: &mut Value| {
        f(c);
        if let Value::Object(o) = c {
            if !o.contains_key("$ref") {
                for (ck, cv) in o.iter_mut() {
                    replace_subschemas(ck, cv, f);
                }
            }
        }
    };
    if ONE_SCHEMA.contains(&k) {
        each(v);
    } else if SCHEMA_LIST.contains(&k) {
        if let Value::Array(a) = v {
            a.iter_mut().for_each(&mut each);
        }
    } else if SCHEMA_MAP.contains(&k) {
        if let Value::Object(m) = v {
            m.values_mut().for_each(&mut each);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        into_object(v)
    }

    #[test]
    fn formats_outside_the_vocabulary_go_and_unsigned_keeps_its_minimum() {
        let s = standard_input(&obj(json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "uint64", "minimum": 0},
                "b": {"type": "integer", "format": "uint32"},
                "c": {"type": "number", "format": "double"},
                "d": {"type": "string", "format": "date-time"},
                "e": {"type": ["string", "null"], "default": null, "description": "kept"},
                "f": {"const": {"format": "uint64"}}
            }
        })));
        let p = &s["properties"];
        assert_eq!(p["a"], json!({"type": "integer", "minimum": 0}));
        assert_eq!(p["b"], json!({"type": "integer", "minimum": 0}));
        assert_eq!(p["c"], json!({"type": "number"}));
        assert_eq!(p["d"]["format"], "date-time");
        assert_eq!(
            p["e"],
            json!({"type": ["string", "null"], "description": "kept"})
        );
        // Data is not a schema: a const's content is left alone.
        assert_eq!(p["f"]["const"]["format"], "uint64");
    }

    #[test]
    fn output_is_flat_typed_and_shared() {
        let leaf = json!({
            "type": "object",
            "description": "long words",
            "properties": {
                "name": {"type": "string", "description": "x"},
                "size": {"type": "integer", "format": "uint64", "minimum": 0},
                "kind": {"oneOf": [
                    {"const": "a", "type": "string", "description": "A"},
                    {"const": "b", "type": "string", "description": "B"}
                ]}
            },
            "required": ["name", "size", "kind"]
        });
        let schema = obj(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "anyOf": [
                {"anyOf": [{"$ref": "#/$defs/Output"}, {"$ref": "#/$defs/Declined"}]},
                {"$ref": "#/$defs/ErrorOutput"}
            ],
            "$defs": {
                "Output": {
                    "type": "object",
                    "properties": {
                        "one": {"$ref": "#/$defs/Leaf"},
                        "two": {"$ref": "#/$defs/Leaf"},
                        "deep": {"type": "object", "properties": {
                            "deeper": {"type": "object", "properties": {"x": {"type": "string"}}}
                        }, "required": ["deeper"]}
                    },
                    "required": ["one", "two", "deep"]
                },
                "Declined": {"type": "object", "properties": {"declined": {"type": "boolean"}}, "required": ["declined"]},
                "ErrorOutput": {"type": "object", "properties": {"error": {"type": "object"}}, "required": ["error"]},
                "Leaf": leaf
            }
        }));
        let c = compact_output(&schema);
        let text = Value::Object(c.clone()).to_string();
        assert!(
            !text.contains("description") && !text.contains("uint64") && !text.contains("$schema")
        );
        assert!(!text.contains(DEF_MARK), "{text}");
        assert_eq!(c["type"], "object");
        let branches = c["anyOf"].as_array().expect("branches");
        assert_eq!(branches.len(), 3, "{text}");
        // The branches keep their required fields; nested objects do not.
        assert_eq!(branches[0]["required"], json!(["one", "two", "deep"]));
        assert_eq!(branches[2]["required"], json!(["error"]));
        assert!(branches[0]["properties"]["deep"].get("required").is_none());
        // Level 3 is typed only.
        assert_eq!(
            branches[0]["properties"]["deep"]["properties"]["deeper"],
            json!({"type": "object"})
        );
        // The repeated Leaf is shared under its own name, its enum flattened.
        assert_eq!(
            branches[0]["properties"]["one"],
            json!({"$ref": "#/$defs/Leaf"})
        );
        assert_eq!(
            c["$defs"]["Leaf"]["properties"]["kind"],
            json!({"enum": ["a", "b"], "type": "string"})
        );
    }

    #[test]
    fn compact_output_still_validates_what_it_described() {
        let schema = obj(json!({
            "type": "object",
            "anyOf": [{"$ref": "#/$defs/O"}, {"$ref": "#/$defs/E"}],
            "$defs": {
                "O": {"type": "object", "properties": {"n": {"type": "integer", "format": "uint8", "minimum": 0, "maximum": 255}}, "required": ["n"]},
                "E": {"type": "object", "properties": {"error": {"type": "object"}}, "required": ["error"]}
            }
        }));
        let c = compact_output(&schema);
        let n = &c["anyOf"][0]["properties"]["n"];
        assert_eq!(n, &json!({"type": "integer", "minimum": 0, "maximum": 255}));
    }
}
