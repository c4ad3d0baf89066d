//! Typed values: any `serde` type stored as JSON bytes.
//!
//! The cache itself stores opaque bytes; this module only encodes before `set` and decodes
//! after `get`. A value that does not decode as the requested type is [`Error::Decode`], and
//! one that does not encode is [`Error::InvalidArgument`] (nothing is sent).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::options::{ReadOptions, SetOptions};
use crate::types::WriteResult;

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::InvalidArgument(format!("cannot encode value as JSON: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Decode(format!("value of {key:?} is not JSON of type {}: {e}", std::any::type_name::<T>())))
}

impl Client {
    /// Stores `value` as JSON under `key`, unconditionally and without expiry.
    pub async fn set_json<T: Serialize + ?Sized>(&self, key: impl Into<String>, value: &T) -> Result<WriteResult> {
        self.set_json_with(key, value, SetOptions::default()).await
    }

    /// Stores `value` as JSON under `key` with a TTL and/or condition.
    pub async fn set_json_with<T: Serialize + ?Sized>(
        &self,
        key: impl Into<String>,
        value: &T,
        options: SetOptions,
    ) -> Result<WriteResult> {
        let bytes = encode(value)?;
        self.set_with(key, bytes, options).await
    }

    /// Reads `key` at the client's default consistency and decodes it from JSON. `Ok(None)`
    /// when absent.
    pub async fn get_json<T: DeserializeOwned>(&self, key: impl Into<String>) -> Result<Option<T>> {
        self.get_json_with(key, self.default_read()).await
    }

    /// Reads `key` at the given consistency and decodes it from JSON.
    pub async fn get_json_with<T: DeserializeOwned>(
        &self,
        key: impl Into<String>,
        options: ReadOptions,
    ) -> Result<Option<T>> {
        let key = key.into();
        match self.get_with(key.clone(), options).await? {
            Some(entry) => decode(&key, &entry.value).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Session {
        user: String,
        visits: u32,
    }

    #[test]
    fn round_trip_and_decode_errors() {
        let s = Session { user: "ada".into(), visits: 3 };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Session>("k", &bytes).unwrap(), s);
        let err = decode::<Session>("k", b"not json").unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err:?}");
        assert!(err.outcome_known() && !err.is_retryable());
    }

    #[test]
    fn unencodable_values_are_invalid_arguments() {
        // JSON object keys must be strings.
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(matches!(encode(&map), Err(Error::InvalidArgument(_))));
    }
}
