//! Typed access to loosely shaped JSON, so every wrong type becomes one clear error that names
//! the offending key (`"ipam.subnet" must be a string, got a number`) instead of a serde trace.

use crate::{Error, ErrorKind, Result};
use serde_json::{Map, Value};
use std::fmt::Display;

/// Which error a reader produces: the kind and the `verb object` prefix of the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader {
    kind: ErrorKind,
    prefix: &'static str,
}

/// For network configurations on stdin.
pub(crate) const CONFIG: Reader = Reader {
    kind: ErrorKind::InvalidConfig,
    prefix: "invalid network config",
};
/// For results (`prevResult` is read with [`CONFIG`]; delegated IPAM output with this one).
pub(crate) const RESULT: Reader = Reader {
    kind: ErrorKind::Decode,
    prefix: "decode CNI result",
};

/// `a.b` for nested keys; just `b` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// "a string", "a number", ... for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Reader {
    pub(crate) fn err(&self, msg: impl Display) -> Error {
        Error::new(self.kind, format!("{}: {msg}", self.prefix))
    }

    fn wrong_type(&self, path: &str, want: &str, got: &Value) -> Error {
        self.err(format!("\"{path}\" must be {want}, got {}", type_name(got)))
    }

    /// The value at `key`, treating JSON `null` as absent (Go's encoders emit it for nil).
    pub(crate) fn get<'a>(&self, obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn object<'a>(&self, v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.wrong_type(path, "an object", v))
    }

    pub(crate) fn opt_object<'a>(
        &self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<&'a Map<String, Value>>> {
        self.get(obj, key)
            .map(|v| self.object(v, &join(path, key)))
            .transpose()
    }

    pub(crate) fn opt_array<'a>(
        &self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<&'a Vec<Value>>> {
        match self.get(obj, key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(&join(path, key), "an array", v)),
        }
    }

    pub(crate) fn opt_str<'a>(
        &self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<&'a str>> {
        match self.get(obj, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(&join(path, key), "a string", v)),
        }
    }

    /// A required, non-empty string.
    pub(crate) fn req_str<'a>(
        &self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<&'a str> {
        match self.opt_str(obj, key, path)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.err(format!("\"{}\" is required", join(path, key)))),
        }
    }

    pub(crate) fn opt_bool(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<bool>> {
        match self.get(obj, key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(&join(path, key), "a boolean", v)),
        }
    }

    pub(crate) fn opt_u64(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<u64>> {
        match self.get(obj, key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(&join(path, key), "a non-negative integer", v)),
        }
    }

    /// A list of strings; absent means empty.
    pub(crate) fn str_list(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Vec<String>> {
        let Some(items) = self.opt_array(obj, key, path)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => {
                    Err(self.wrong_type(&format!("{}[{i}]", join(path, key)), "a string", other))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_name_the_key_and_kind() {
        let v = json!({"a": {"b": 3}, "n": null});
        let top = v.as_object().unwrap();
        let a = CONFIG.opt_object(top, "a", "").unwrap().unwrap();
        let e = CONFIG.opt_str(a, "b", "a").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert_eq!(
            e.message(),
            "invalid network config: \"a.b\" must be a string, got a number"
        );
        assert_eq!(
            CONFIG.opt_str(top, "n", "").unwrap(),
            None,
            "null reads as absent"
        );
        let e = RESULT.req_str(top, "missing", "").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert_eq!(e.message(), "decode CNI result: \"missing\" is required");
    }

    #[test]
    fn string_lists_check_every_item() {
        let v = json!({"l": ["x", 1]});
        let e = CONFIG
            .str_list(v.as_object().unwrap(), "l", "dns")
            .unwrap_err();
        assert_eq!(
            e.message(),
            "invalid network config: \"dns.l[1]\" must be a string, got a number"
        );
    }
}
