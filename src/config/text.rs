//! Values in their text form. The environment and flags give text, the file
//! gives TOML values; each key reads any of them the same way (a number may
//! be written `4.0` or `"4"`, a list `["a", "b"]` or `"a,b"`), so a value
//! means the same whichever layer it comes from. Each function is a serde
//! `with`/`deserialize_with` for one kind of field.

use crate::units::{format_duration, parse_duration, parse_size};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Visitor methods that take the scalar as its text.
macro_rules! scalars_as_text {
    ($($visit:ident: $t:ty),*) => {
        $(fn $visit<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        })*
    };
}

/// Any scalar as text, a list of strings joined with commas; None for an
/// absent value.
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value (text, number, boolean or list of strings)")
    }
    // Every scalar is its own `to_string` (an f32 too: widening it first
    // would print `0.1` as `0.10000000149011612`).
    scalars_as_text!(visit_str: &str, visit_bool: bool, visit_i64: i64, visit_u64: u64,
        visit_f64: f64, visit_f32: f32, visit_char: char);
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Text)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            items.push(s);
        }
        Ok(Some(items.join(",")))
    }
}

/// The value as text ("" when absent).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(d.deserialize_any(Text)?.unwrap_or_default())
}

fn err<E: de::Error>(msg: impl Display) -> E {
    E::custom(msg)
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// A number (any `FromStr` number type).
pub fn number<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<T, D::Error> {
    let v = text(d)?;
    v.trim()
        .parse()
        .map_err(|_| err(format!("{v:?} is not a number")))
}

/// Any `FromStr` type, with its own message.
pub fn parsed<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<T, D::Error>
where
    T::Err: Display,
{
    text(d)?.parse().map_err(err)
}

/// true/1/yes/on, false/0/no/off or empty.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = text(d)?;
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(err(format!("{v:?} is not true or false"))),
    }
}

/// Trimmed text.
pub fn trimmed<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(text(d)?.trim().to_string())
}

/// A URL (trimmed), not empty.
pub fn url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt(&text(d)?).ok_or_else(|| err("the URL is empty"))
}

/// Trimmed text; empty is unset.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(d.deserialize_any(Text)?.as_deref().and_then(opt))
}

/// A path that may not be empty.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    opt(&text(d)?)
        .map(PathBuf::from)
        .ok_or_else(|| err("the path is empty"))
}

/// A path; empty is unset.
pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(optional(d)?.map(PathBuf::from))
}

/// A file size: bytes, or `64KiB`, `1MiB`.
pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    parse_size(&text(d)?).map_err(err)
}

/// A log filter (the `RUST_LOG` syntax); empty is "info".
pub fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let l = opt(&text(d)?).unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&l)
        .map_err(|e| err(format!("{l:?} is not a log filter: {e}")))?;
    Ok(l)
}

/// An address like `0.0.0.0:9464`; empty is unset.
pub mod address {
    use super::*;
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        optional(d)?
            .map(|a| {
                a.parse().map_err(|_| {
                    err(format!(
                        "{a:?} is not an address like 0.0.0.0:9464 or 127.0.0.1:9464"
                    ))
                })
            })
            .transpose()
    }
}

/// A duration: `30s`, `10m`, `1h30m`.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&text(d)?).map_err(err)
    }
}

/// A duration where empty or any zero ("0", "0s") means "never".
pub mod optional_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match text(d)?.trim() {
            "" | "0" => Ok(None),
            t => parse_duration(t)
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(err),
        }
    }
}

/// A list of paths, written as one comma-separated string.
pub mod paths {
    use super::*;

    pub fn serialize<S: Serializer>(p: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let p: Vec<String> = p.iter().map(|p| p.display().to_string()).collect();
        s.serialize_str(&p.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(text(d)?
            .split(',')
            .filter_map(opt)
            .map(PathBuf::from)
            .collect())
    }
}

/// Role names, written as one comma-separated string.
pub mod roles {
    use super::*;
    use crate::config::Role;

    pub fn serialize<S: Serializer>(r: &[Role], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Role::list(r))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Role>, D::Error> {
        Role::parse_list(&text(d)?).map_err(err)
    }
}

/// A secret, kept verbatim (a password may begin or end with a space);
/// empty is unset.
pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::Secret>, D::Error> {
    Ok(d.deserialize_any(Text)?
        .filter(|v| !v.is_empty())
        .map(super::Secret))
}

/// A secret token, trimmed; empty is unset.
pub fn token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<super::Secret>, D::Error> {
    Ok(optional(d)?.map(super::Secret))
}
