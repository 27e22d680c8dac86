//! AMF0 (Adobe "Action Message Format -- AMF 0", December 2007): the
//! encoding of RTMP commands (`connect`, `publish`, `play`, `onStatus` …).
//!
//! Only what RTMP commands carry is decoded into values; anything else is
//! an error naming the byte offset. Nesting is bounded, so hostile input
//! cannot recurse us off the stack.

use bytes::{BufMut, BytesMut};

/// How deep objects may nest. Real commands go two levels deep.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// §2.5 Object and §2.10 ECMA array: ordered key/value pairs.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    /// §2.12 strict array.
    Array(Vec<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) => props.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AMF0 at byte {offset}: {reason}")]
pub struct AmfError {
    pub offset: usize,
    pub reason: String,
}

/// Decodes every value in `data` (a command: name, transaction id, then
/// arguments).
pub fn decode_all(data: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut r = Reader { data, pos: 0 };
    let mut out = Vec::new();
    while r.pos < data.len() {
        out.push(r.value(0)?);
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, reason: impl Into<String>) -> AmfError {
        AmfError {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        if self.data.len() - self.pos < n {
            return Err(self.err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.data.len() - self.pos
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<usize, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<usize, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn string(&mut self, len: usize) -> Result<String, AmfError> {
        let at = self.pos;
        let b = self.take(len)?;
        // Encoders in the wild send Latin-1 names now and then; keep them
        // readable rather than refuse the whole command.
        Ok(std::str::from_utf8(b)
            .map(str::to_string)
            .unwrap_or_else(|_| {
                tracing::trace!(offset = at, "AMF0 string is not UTF-8");
                b.iter().map(|&c| c as char).collect()
            }))
    }

    /// §2.5: (UTF-8 key, value)* then an empty key and the object-end marker.
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Value)>, AmfError> {
        let mut props = Vec::new();
        loop {
            let len = self.u16()?;
            if len == 0 {
                let m = self.take(1)?[0];
                if m != 0x09 {
                    return Err(self.err(format!("expected object end (9), found marker {m}")));
                }
                return Ok(props);
            }
            let key = self.string(len)?;
            let v = self.value(depth + 1)?;
            props.push((key, v));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, AmfError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00 => {
                let b = self.take(8)?;
                Value::Number(f64::from_be_bytes(b.try_into().expect("8 bytes")))
            }
            0x01 => Value::Boolean(self.take(1)?[0] != 0),
            0x02 => {
                let n = self.u16()?;
                Value::String(self.string(n)?)
            }
            0x03 => Value::Object(self.properties(depth)?),
            0x05 => Value::Null,
            0x06 => Value::Undefined,
            // §2.10: the count is a hint only; the pairs end like an object's.
            0x08 => {
                self.u32()?;
                Value::Object(self.properties(depth)?)
            }
            0x0A => {
                let n = self.u32()?;
                // Each value takes at least one byte: a count beyond what is
                // left is a lie, and must not size an allocation.
                if n > self.data.len() - self.pos {
                    return Err(self.err(format!("strict array of {n} values is truncated")));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(depth + 1)?);
                }
                Value::Array(v)
            }
            // §2.13 date: a number and a time zone nobody uses.
            0x0B => {
                let b = self.take(10)?;
                Value::Number(f64::from_be_bytes(b[..8].try_into().expect("8 bytes")))
            }
            0x0C | 0x0F => {
                let n = self.u32()?;
                Value::String(self.string(n)?)
            }
            // §2.18 typed object: a class name, then properties.
            0x10 => {
                let n = self.u16()?;
                self.take(n)?;
                Value::Object(self.properties(depth)?)
            }
            0x0D => Value::Undefined, // unsupported marker
            m => {
                self.pos -= 1;
                return Err(self.err(format!("unsupported AMF0 marker {m:#04x}")));
            }
        })
    }
}

/// Appends the AMF0 encoding of `v`.
pub fn encode(out: &mut BytesMut, v: &Value) {
    match v {
        Value::Number(n) => {
            out.put_u8(0x00);
            out.put_f64(*n);
        }
        Value::Boolean(b) => {
            out.put_u8(0x01);
            out.put_u8(u8::from(*b));
        }
        Value::String(s) if s.len() <= u16::MAX as usize => {
            out.put_u8(0x02);
            out.put_u16(s.len() as u16);
            out.put_slice(s.as_bytes());
        }
        Value::String(s) => {
            out.put_u8(0x0C);
            out.put_u32(s.len() as u32);
            out.put_slice(s.as_bytes());
        }
        Value::Object(props) => {
            out.put_u8(0x03);
            for (k, v) in props {
                let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
                out.put_u16(k.len() as u16);
                out.put_slice(k);
                encode(out, v);
            }
            out.put_slice(&[0, 0, 0x09]);
        }
        Value::Null => out.put_u8(0x05),
        Value::Undefined => out.put_u8(0x06),
        Value::Array(items) => {
            out.put_u8(0x0A);
            out.put_u32(items.len() as u32);
            for v in items {
                encode(out, v);
            }
        }
    }
}

/// Shorthand for building command arguments.
pub fn obj(props: &[(&str, Value)]) -> Value {
    Value::Object(
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

pub fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_an_obs_connect_command() {
        let mut b = BytesMut::new();
        encode(&mut b, &s("connect"));
        encode(&mut b, &Value::Number(1.0));
        encode(
            &mut b,
            &obj(&[
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
            ]),
        );
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].as_str(), Some("connect"));
        assert_eq!(v[1].as_number(), Some(1.0));
        assert_eq!(v[2].get("app").and_then(Value::as_str), Some("live"));
    }

    #[test]
    fn ecma_arrays_and_truncation() {
        // ffmpeg's onMetaData: an ECMA array with a (wrong) count.
        let mut b = BytesMut::new();
        b.put_u8(0x08);
        b.put_u32(99);
        b.put_u16(5);
        b.put_slice(b"width");
        encode(&mut b, &Value::Number(320.0));
        b.put_slice(&[0, 0, 9]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0].get("width"), Some(&Value::Number(320.0)));
        let e = decode_all(&b[..b.len() - 2]).unwrap_err();
        assert!(e.reason.contains("truncated"), "{e}");
    }

    #[test]
    fn deep_nesting_and_lying_counts_are_errors_not_crashes() {
        let deep: Vec<u8> = std::iter::repeat_n([0x0Au8, 0, 0, 0, 1], 10_000)
            .flatten()
            .collect();
        assert!(decode_all(&deep).unwrap_err().reason.contains("nested"));
        let lie = [0x0A, 0xff, 0xff, 0xff, 0xff, 0x05];
        assert!(decode_all(&lie).unwrap_err().reason.contains("truncated"));
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(|n| Value::Number(n as f64)),
            any::<bool>().prop_map(Value::Boolean),
            "[a-zA-Z0-9 ./:]{0,20}".prop_map(Value::String),
            Just(Value::Null),
            Just(Value::Undefined),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-z]{1,8}", inner.clone()), 0..4).prop_map(Value::Object),
                prop::collection::vec(inner, 0..4).prop_map(Value::Array),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trips(vals in prop::collection::vec(value(), 0..4)) {
            let mut b = BytesMut::new();
            for v in &vals {
                encode(&mut b, v);
            }
            prop_assert_eq!(decode_all(&b).unwrap(), vals);
        }

        #[test]
        fn never_panics_on_garbage(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_all(&data);
        }
    }
}
