//! Serde helpers: byte strings as standard (padded) base64 in JSON, fixed-size arrays checked on decode.
//! Shared by every serialisable type of the end-to-end modules.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

/// `#[serde(with = "b64")]` for `[u8; N]`.
pub(crate) mod b64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?;
        bytes.try_into().map_err(|_| D::Error::custom(format!("expected {N} bytes")))
    }
}

/// `#[serde(with = "b64_vec")]` for `Vec<u8>`.
pub(crate) mod b64_vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)
    }
}

/// `#[serde(with = "b64_opt")]` for `Option<[u8; N]>`.
pub(crate) mod b64_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(v: &Option<[u8; N]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<Option<[u8; N]>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        text.map(|text| {
            let bytes = STANDARD.decode(text.as_bytes()).map_err(D::Error::custom)?;
            bytes.try_into().map_err(|_| D::Error::custom(format!("expected {N} bytes")))
        })
        .transpose()
    }
}

/// A writer for the canonical byte strings that are signed or hashed: big-endian integers,
/// length prefixes where a field varies in length.
#[derive(Default)]
pub(crate) struct Canonical(pub(crate) Vec<u8>);

impl Canonical {
    /// Start with a label and a 0x00 separator, so that no two labels' inputs can collide.
    pub(crate) fn labelled(label: &str) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(label.as_bytes());
        out.push(0);
        Canonical(out)
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A variable-length field: u32 big-endian length, then the bytes.
    pub(crate) fn var(&mut self, b: &[u8]) -> &mut Self {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX)).bytes(b)
    }
}

/// A bounds-checked reader for decoding untrusted bytes; every read names the field it wanted.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], crate::error::E2eError> {
        if self.rest.len() < n {
            return Err(crate::error::E2eError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], crate::error::E2eError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, crate::error::E2eError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, crate::error::E2eError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, crate::error::E2eError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}
