//! Integers as JSON Schema means them: `338` and `338.0` are the same integer. A request's
//! integer fields (and query parameters, which arrive as text) accept both; anything with
//! a fraction, or out of the field's range, is refused.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// For `Option<T>` fields of a JSON body: `#[serde(default, deserialize_with =
/// "baton_core::int::opt")]`. A string is not an integer there.
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    d.deserialize_option(OptInt::<T, false>(std::marker::PhantomData))
}

/// For `Vec<T>` fields of a JSON body whose items are integers (`240` or `240.0`).
pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let items: Vec<serde_json::Number> = serde::Deserialize::deserialize(d)?;
    items
        .into_iter()
        .map(|n| {
            let whole = n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| D::Error::custom(format!("{n} is not an integer")))?;
            T::try_from(whole).map_err(|_| D::Error::custom(format!("{n} is out of range")))
        })
        .collect()
}

/// For `Option<T>` query parameters, which arrive as text.
pub fn opt_query<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    d.deserialize_option(OptInt::<T, true>(std::marker::PhantomData))
}

struct OptInt<T, const TEXT: bool>(std::marker::PhantomData<T>);
struct Int<T, const TEXT: bool>(std::marker::PhantomData<T>);

impl<'de, T: TryFrom<i64>, const TEXT: bool> Visitor<'de> for OptInt<T, TEXT> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Int::<T, TEXT>(std::marker::PhantomData))
            .map(Some)
    }
    // Query strings may call the visitor directly, without an option around the value.
    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        Int::<T, TEXT>(std::marker::PhantomData)
            .visit_str(v)
            .map(Some)
    }
}

impl<'de, T: TryFrom<i64>, const TEXT: bool> Visitor<'de> for Int<T, TEXT> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        let v = i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))?;
        self.visit_i64(v)
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > 9.007_199_254_740_992e15 {
            return Err(E::custom(format!("{v} is not an integer")));
        }
        self.visit_i64(v as i64)
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
        if !TEXT {
            return Err(E::invalid_type(serde::de::Unexpected::Str(v), &self));
        }
        match v.trim().parse::<i64>() {
            Ok(i) => self.visit_i64(i),
            Err(_) => match v.trim().parse::<f64>() {
                Ok(f) => self.visit_f64(f),
                Err(_) => Err(E::custom(format!("{v:?} is not an integer"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct T {
        #[serde(default, deserialize_with = "super::opt")]
        n: Option<u32>,
    }

    fn parse(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_numbers_of_any_notation_are_integers() {
        assert_eq!(parse(r#"{"n": 338}"#), Ok(Some(338)));
        assert_eq!(parse(r#"{"n": 338.0}"#), Ok(Some(338)));
        assert_eq!(parse(r#"{"n": null}"#), Ok(None));
        assert_eq!(parse(r#"{}"#), Ok(None));
        assert!(parse(r#"{"n": 1.5}"#).is_err());
        assert!(parse(r#"{"n": -1}"#).is_err());
        assert!(
            parse(r#"{"n": "3"}"#).is_err(),
            "a string is not an integer in JSON"
        );
    }
}
