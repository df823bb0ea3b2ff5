//! The JSON Schema of `cutover.toml` (draft 2020-12), generated from the serde mirror in
//! `raw.rs` so the schema editors use and the parser can never disagree about keys.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::raw::RawFile;

/// JSON Schema (draft 2020-12) of `cutover.toml`, for editors (taplo, Even Better TOML).
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<RawFile>().to_value();
    drop_nulls(&mut schema);
    let name_rule = json!({ "pattern": "^[a-z0-9-]{1,63}$" });
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for table in ["services", "environments"] {
            if let Some(t) = props.get_mut(table).and_then(Value::as_object_mut) {
                t.insert("propertyNames".to_string(), name_rule.clone());
            }
        }
    }
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".to_string(),
            json!("https://example.invalid/cutover/cutover.schema.json"),
        );
    }
    schema
}

/// TOML has no null: `Option` fields are optional keys, not nullable values, so remove the
/// `null` alternatives schemars adds for them.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_string(), only);
                }
            }
            if let Some(Value::Array(alternatives)) = map.get("anyOf") {
                let rest: Vec<Value> = alternatives
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                    .cloned()
                    .collect();
                if rest.len() == 1 {
                    map.remove("anyOf");
                    if let Some(Value::Object(inner)) = rest.into_iter().next() {
                        for (k, val) in inner {
                            map.entry(k).or_insert(val);
                        }
                    }
                }
            }
            if map.get("const").is_some_and(Value::is_null) {
                map.remove("const");
            }
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => {
            items.retain(|i| i.get("type").and_then(Value::as_str) != Some("null"));
            items.iter_mut().for_each(drop_nulls);
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn has_the_top_level_tables() {
        let schema = json_schema();
        for key in ["project", "defaults", "services", "environments", "notify"] {
            assert!(schema["properties"].get(key).is_some(), "{key} missing");
        }
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(serde_json::to_string(&schema).is_ok());
        assert!(
            !serde_json::to_string(&schema)
                .unwrap_or_default()
                .contains("null")
        );
        assert_eq!(schema["$defs"]["Service"]["required"], json!(["path"]));
    }

    #[test]
    fn describes_the_container_keys() {
        let schema = json_schema();
        let defs = &schema["$defs"];
        for layer in ["Service", "Settings", "Environment"] {
            let props = &defs[layer]["properties"];
            for key in [
                "dockerfile",
                "image",
                "build_args",
                "container_port",
                "autoscale",
                "cpus",
                "memory",
                "constraints",
            ] {
                assert!(props.get(key).is_some(), "{layer}.{key} missing");
            }
        }
        let env = &defs["Environment"]["properties"];
        for key in ["registry", "docker", "swarm"] {
            assert!(env.get(key).is_some(), "Environment.{key} missing");
            assert!(defs["Service"]["properties"].get(key).is_none(), "{key}");
        }
        assert_eq!(defs["Engine"]["additionalProperties"], json!(false));
        assert!(defs["Engine"]["properties"]["host"]["pattern"].is_string());
        assert_eq!(
            defs["Autoscale"]["required"],
            json!(["min", "max", "target_inflight"])
        );
        assert_eq!(defs["BuildArg"]["type"], "string");
        let image = &defs["Service"]["properties"]["image"];
        assert!(image["pattern"].is_string(), "{image}");
        assert_eq!(
            defs["Service"]["properties"]["container_port"]["maximum"],
            65535
        );
    }
}
