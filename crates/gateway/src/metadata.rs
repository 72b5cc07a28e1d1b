//! What a service says about itself for the hub's directory and for agents: a `description`,
//! `tags` and an `input_schema` (the JSON Schema of its arguments, the MCP tool's input
//! schema). Optional; checked when a service is parsed (config file or admin API), with errors
//! naming the key.

use serde_json::Value;

use crate::config::ConfigError;

/// Longest `description`, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 1000;
/// Most `tags` of one service.
pub const TAGS_MAX: usize = 10;
/// Longest tag, in characters (`[a-z0-9-]`).
pub const TAG_MAX_LEN: usize = 32;
/// Largest `input_schema`, serialised as JSON, in bytes.
pub const INPUT_SCHEMA_MAX_BYTES: usize = 16 * 1024;
/// The most levels of arrays and objects in an `input_schema`: a deeper one, once inside a
/// `/directory` page or an MCP `tools/list` answer, would pass the 128 levels common JSON
/// parsers (serde_json's among them) take, and fail the whole page or list.
pub const INPUT_SCHEMA_MAX_DEPTH: usize = 32;

/// The levels of arrays and objects in `v` (0 for a scalar).
pub fn json_depth(v: &Value) -> usize {
    let inner = match v {
        Value::Array(items) => items.iter().map(json_depth).max(),
        Value::Object(map) => map.values().map(json_depth).max(),
        _ => return 0,
    };
    1 + inner.unwrap_or(0)
}

/// A service's (or route's) checked metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// What it does.
    pub description: Option<String>,
    /// Lower-case tags (`[a-z0-9-]`), in the order given, without repeats.
    pub tags: Vec<String>,
    /// A JSON Schema object (`{"type": "object", ...}`).
    pub input_schema: Option<Value>,
}

impl Metadata {
    /// Checks the three keys, naming the one at fault.
    pub fn parse(
        description: Option<&str>,
        tags: &[String],
        input_schema: Option<&Value>,
    ) -> Result<Metadata, ConfigError> {
        if let Some(d) = description {
            check_description(d).map_err(|m| invalid("description", m))?;
        }
        for (i, t) in tags.iter().enumerate() {
            check_tag(t).map_err(|m| invalid(&format!("tags[{i}]"), m))?;
            if tags[..i].contains(t) {
                return Err(invalid(&format!("tags[{i}]"), format!("{t:?} is repeated")));
            }
        }
        if tags.len() > TAGS_MAX {
            return Err(invalid("tags", format!("at most {TAGS_MAX} tags")));
        }
        if let Some(s) = input_schema {
            check_input_schema(s).map_err(|m| invalid("input_schema", m))?;
        }
        Ok(Metadata {
            description: description.map(str::to_owned),
            tags: tags.to_vec(),
            input_schema: input_schema.cloned(),
        })
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// 1 to 1000 characters, not only blanks, no control characters but newlines and tabs.
pub fn check_description(d: &str) -> Result<(), String> {
    let chars = d.chars().count();
    if chars == 0 || d.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if chars > DESCRIPTION_MAX_CHARS {
        return Err(format!("is longer than {DESCRIPTION_MAX_CHARS} characters"));
    }
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// 1 to 32 of `[a-z0-9-]`.
pub fn check_tag(t: &str) -> Result<(), String> {
    let ok = (1..=TAG_MAX_LEN).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{t:?} must be 1 to {TAG_MAX_LEN} lower-case letters, digits or '-'"
        )),
    }
}

/// A JSON Schema of an object (`"type": "object"`), at most 16 KiB as JSON and 32 levels deep,
/// whose
/// `properties` (if any) is an object of schemas and `required` (if any) a list of names.
pub fn check_input_schema(s: &Value) -> Result<(), String> {
    let Value::Object(map) = s else {
        return Err("must be a JSON Schema object, e.g. {\"type\": \"object\"}".into());
    };
    if map.get("type") != Some(&Value::String("object".into())) {
        return Err("must have \"type\": \"object\" (the arguments of a call)".into());
    }
    if s.to_string().len() > INPUT_SCHEMA_MAX_BYTES {
        return Err(format!(
            "is larger than {INPUT_SCHEMA_MAX_BYTES} bytes as JSON"
        ));
    }
    if json_depth(s) > INPUT_SCHEMA_MAX_DEPTH {
        return Err(format!(
            "is nested deeper than {INPUT_SCHEMA_MAX_DEPTH} levels of objects and arrays"
        ));
    }
    match map.get("properties") {
        None => {}
        Some(Value::Object(props)) => {
            if let Some((name, _)) = props
                .iter()
                .find(|(_, v)| !v.is_object() && !v.is_boolean())
            {
                return Err(format!("properties.{name} must be a schema (an object)"));
            }
        }
        Some(_) => return Err("properties must be an object".into()),
    }
    match map.get("required") {
        None => Ok(()),
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => Ok(()),
        Some(_) => Err("required must be a list of property names".into()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn key(r: Result<Metadata, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_schema_is_at_most_32_levels_deep() {
        let deep = |levels: usize| json!({"type": "object", "x": (1..levels).fold(json!(1), |v, _| json!([v]))});
        assert_eq!(json_depth(&deep(32)), 32);
        assert!(check_input_schema(&deep(32)).is_ok());
        let e = check_input_schema(&deep(33)).unwrap_err();
        assert!(e.contains("deeper than 32"), "{e}");
        assert_eq!((json_depth(&json!(1)), json_depth(&json!([]))), (0, 1));
    }

    #[test]
    fn good_metadata_is_kept_as_given() {
        let schema = json!({"type": "object", "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"]});
        let m = Metadata::parse(
            Some("Stock quotes"),
            &["finance".into(), "real-time".into()],
            Some(&schema),
        )
        .unwrap();
        assert_eq!(m.description.as_deref(), Some("Stock quotes"));
        assert_eq!(m.tags, ["finance", "real-time"]);
        assert_eq!(m.input_schema, Some(schema));
        assert_eq!(
            Metadata::parse(None, &[], None).unwrap(),
            Metadata::default()
        );
    }

    #[test]
    fn each_bad_key_is_named() {
        let long = "x".repeat(DESCRIPTION_MAX_CHARS + 1);
        assert_eq!(key(Metadata::parse(Some(""), &[], None)), "description");
        assert_eq!(key(Metadata::parse(Some("  "), &[], None)), "description");
        assert_eq!(key(Metadata::parse(Some(&long), &[], None)), "description");
        assert_eq!(
            key(Metadata::parse(Some("a\u{0}b"), &[], None)),
            "description"
        );
        let at_most = "é".repeat(DESCRIPTION_MAX_CHARS);
        assert!(Metadata::parse(Some(&at_most), &[], None).is_ok());
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            key(Metadata::parse(None, &tags(&["ok", "Bad"]), None)),
            "tags[1]"
        );
        assert_eq!(key(Metadata::parse(None, &tags(&[""]), None)), "tags[0]");
        assert_eq!(
            key(Metadata::parse(None, &tags(&["a", "a"]), None)),
            "tags[1]"
        );
        assert_eq!(
            key(Metadata::parse(None, &tags(&[&"a".repeat(33)]), None)),
            "tags[0]"
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert_eq!(key(Metadata::parse(None, &eleven, None)), "tags");
        for bad in [
            json!("object"),
            json!({"type": "string"}),
            json!({"properties": {}}),
            json!({"type": "object", "properties": []}),
            json!({"type": "object", "properties": {"a": 1}}),
            json!({"type": "object", "required": "a"}),
            json!({"type": "object", "description": "x".repeat(INPUT_SCHEMA_MAX_BYTES)}),
            json!({"type": "object", "x": (0..32).fold(json!(1), |v, _| json!([v]))}),
        ] {
            assert_eq!(
                key(Metadata::parse(None, &[], Some(&bad))),
                "input_schema",
                "{bad}"
            );
        }
    }

    proptest! {
        /// A tag accepted is a lower-case word fit for a URL query, never longer than 32.
        #[test]
        fn accepted_tags_are_plain(t in "\\PC{0,40}") {
            if check_tag(&t).is_ok() {
                prop_assert!(!t.is_empty() && t.len() <= TAG_MAX_LEN);
                prop_assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
                prop_assert_eq!(t.to_ascii_lowercase(), t);
            }
        }
    }
}
