//! Value encoding.
//!
//! Values are stored in an envelope: a magic byte, the envelope format version,
//! the payload kind, the codec id, the entry's dependencies (so that hits can
//! bubble them into an enclosing entry), then the payload. Strings and byte
//! payloads (anything whose `Serialize` calls `serialize_str` or
//! `serialize_bytes` at the top level) are stored as they are, without codec
//! framing.
//!
//! The default codec is [`MessagePack`] (chosen by the `codec` group of the
//! criterion bench: see `BENCHMARKS.md`); [`Json`] is available for stores that
//! humans or other languages read. Implement [`Codec`] for another format.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dep::Dep;
use crate::error::BoxError;

/// A serde format used for cached values.
pub trait Codec: Send + Sync + 'static {
    /// A byte identifying the format in stored values. Values written by a
    /// codec with another id are reported as undecodable rather than misread.
    /// Ids below 16 are reserved for this crate.
    const ID: u8;

    /// Encodes a value, appending to `out`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes a value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError>;
}

/// MessagePack through `rmp-serde`, structs as maps (robust to added
/// `#[serde(default)]` fields). The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    const ID: u8 = 1;
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map())?;
        Ok(())
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

/// JSON through `serde_json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    const ID: u8 = 2;
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

const MAGIC: u8 = 0xA7;
/// The envelope format version written by this crate for entries without a
/// freshness deadline (readable by every release).
pub const FORMAT_VERSION: u8 = 1;
/// The envelope format version of entries with a freshness deadline
/// (stale-while-revalidate, stale-on-error): version 1 with the deadline,
/// in milliseconds since the Unix epoch, after the header.
pub const FORMAT_VERSION_FRESHNESS: u8 = 2;
const KIND_CODEC: u8 = 0;
const KIND_STR: u8 = 1;
const KIND_BYTES: u8 = 2;

/// Why a stored value could not be read.
#[derive(Debug)]
pub(crate) enum DecodeFailure {
    Envelope(&'static str),
    Codec(BoxError),
}

/// An opened envelope: its dependencies (parsed on demand) and its payload.
pub(crate) struct Envelope<'a> {
    /// When the entry stops being fresh (ms since the Unix epoch), 0 for
    /// never before it expires.
    fresh_until: u64,
    deps_count: usize,
    deps_raw: &'a [u8],
    kind: u8,
    codec: u8,
    payload: &'a [u8],
}

pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(
    codec: &C,
    value: &T,
    deps: &[Dep],
    fresh_until: u64,
) -> Result<Vec<u8>, BoxError> {
    let deps_len: usize = deps.iter().map(|d| d.as_str().len() + 4).sum();
    let mut out = Vec::with_capacity(72 + deps_len);
    if fresh_until == 0 {
        out.extend_from_slice(&[MAGIC, FORMAT_VERSION, KIND_CODEC, C::ID]);
    } else {
        out.extend_from_slice(&[MAGIC, FORMAT_VERSION_FRESHNESS, KIND_CODEC, C::ID]);
        out.extend_from_slice(&fresh_until.to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(deps.len()).map_err(|_| "too many dependencies")?.to_le_bytes());
    for d in deps {
        let s = d.as_str().as_bytes();
        out.extend_from_slice(&u32::try_from(s.len()).map_err(|_| "dependency key too long")?.to_le_bytes());
        out.extend_from_slice(s);
    }
    let header = out.len();
    match value.serialize(raw::Probe(&mut out)) {
        Ok(kind) => out[2] = kind,
        Err(_) => {
            out.truncate(header);
            codec.encode(value, &mut out)?;
        }
    }
    Ok(out)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeFailure> {
    if buf.len() < n {
        return Err(DecodeFailure::Envelope("truncated envelope"));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_u32(buf: &mut &[u8]) -> Result<usize, DecodeFailure> {
    let b = take(buf, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

pub(crate) fn open(bytes: &[u8]) -> Result<Envelope<'_>, DecodeFailure> {
    let mut buf = bytes;
    let head = take(&mut buf, 4)?;
    if head[0] != MAGIC {
        return Err(DecodeFailure::Envelope("not a matroska value (bad magic byte)"));
    }
    let fresh_until = match head[1] {
        FORMAT_VERSION => 0,
        FORMAT_VERSION_FRESHNESS => {
            let b = take(&mut buf, 8)?;
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        }
        _ => return Err(DecodeFailure::Envelope("unsupported envelope format version")),
    };
    let (kind, codec) = (head[2], head[3]);
    let n = take_u32(&mut buf)?;
    if n > buf.len() / 4 {
        return Err(DecodeFailure::Envelope("dependency count exceeds the value's size"));
    }
    let start = buf;
    for _ in 0..n {
        let len = take_u32(&mut buf)?;
        take(&mut buf, len)?;
    }
    let deps_raw = &start[..start.len() - buf.len()];
    Ok(Envelope { fresh_until, deps_count: n, deps_raw, kind, codec, payload: buf })
}

impl Envelope<'_> {
    /// When the entry stops being fresh (ms since the Unix epoch); 0: until
    /// it expires.
    pub(crate) fn fresh_until(&self) -> u64 {
        self.fresh_until
    }

    /// The entry's dependencies.
    pub(crate) fn deps(&self) -> Result<Vec<Dep>, DecodeFailure> {
        let mut buf = self.deps_raw;
        let mut deps = Vec::with_capacity(self.deps_count);
        for _ in 0..self.deps_count {
            let len = take_u32(&mut buf)?;
            let raw = take(&mut buf, len)?;
            let s = std::str::from_utf8(raw).map_err(|_| DecodeFailure::Envelope("dependency is not UTF-8"))?;
            deps.push(Dep::from_encoded(s).ok_or(DecodeFailure::Envelope("malformed dependency key"))?);
        }
        Ok(deps)
    }

    pub(crate) fn value<C: Codec, T: DeserializeOwned>(&self, codec: &C) -> Result<T, DecodeFailure> {
        use serde::de::value::{BytesDeserializer, Error as ValueError, StrDeserializer};
        use serde::de::IntoDeserializer;
        match self.kind {
            KIND_STR => {
                let s = std::str::from_utf8(self.payload)
                    .map_err(|_| DecodeFailure::Envelope("string payload is not UTF-8"))?;
                let de: StrDeserializer<'_, ValueError> = s.into_deserializer();
                T::deserialize(de).map_err(|e| DecodeFailure::Codec(Box::new(e)))
            }
            KIND_BYTES => {
                let de: BytesDeserializer<'_, ValueError> = BytesDeserializer::new(self.payload);
                T::deserialize(de).map_err(|e| DecodeFailure::Codec(Box::new(e)))
            }
            KIND_CODEC if self.codec == C::ID => codec.decode(self.payload).map_err(DecodeFailure::Codec),
            KIND_CODEC => Err(DecodeFailure::Envelope("written by another codec")),
            _ => Err(DecodeFailure::Envelope("unknown payload kind")),
        }
    }
}

/// Detects values that serialize as a bare string or byte string.
mod raw {
    use serde::ser::{self, Impossible, Serialize};
    use std::fmt;

    #[derive(Debug)]
    pub(super) struct NotRaw;
    impl fmt::Display for NotRaw {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("not a raw string or byte payload")
        }
    }
    impl std::error::Error for NotRaw {}
    impl ser::Error for NotRaw {
        fn custom<T: fmt::Display>(_: T) -> Self {
            NotRaw
        }
    }

    /// Appends a bare string or byte string to the buffer and returns its
    /// payload kind; fails on anything else.
    pub(super) struct Probe<'a>(pub(super) &'a mut Vec<u8>);

    macro_rules! not_raw {
        ($($name:ident($($t:ty),*)),* $(,)?) => {$(
            fn $name(self, $(_: $t),*) -> Result<u8, NotRaw> { Err(NotRaw) }
        )*};
    }

    impl ser::Serializer for Probe<'_> {
        type Ok = u8;
        type Error = NotRaw;
        type SerializeSeq = Impossible<u8, NotRaw>;
        type SerializeTuple = Impossible<u8, NotRaw>;
        type SerializeTupleStruct = Impossible<u8, NotRaw>;
        type SerializeTupleVariant = Impossible<u8, NotRaw>;
        type SerializeMap = Impossible<u8, NotRaw>;
        type SerializeStruct = Impossible<u8, NotRaw>;
        type SerializeStructVariant = Impossible<u8, NotRaw>;

        fn serialize_str(self, v: &str) -> Result<u8, NotRaw> {
            self.0.extend_from_slice(v.as_bytes());
            Ok(super::KIND_STR)
        }
        fn serialize_bytes(self, v: &[u8]) -> Result<u8, NotRaw> {
            self.0.extend_from_slice(v);
            Ok(super::KIND_BYTES)
        }
        not_raw!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_f32(f32),
            serialize_f64(f64),
            serialize_char(char),
            serialize_none(),
            serialize_unit(),
            serialize_unit_struct(&'static str),
            serialize_unit_variant(&'static str, u32, &'static str),
        );
        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<u8, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<u8, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<u8, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotRaw> {
            Err(NotRaw)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, NotRaw> {
            Err(NotRaw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_pass_unwrapped_and_roundtrip() {
        let bytes = encode(&MessagePack, "hello", &[], 0).unwrap();
        assert_eq!(&bytes[bytes.len() - 5..], b"hello");
        let env = open(&bytes).unwrap();
        let s: String = env.value(&MessagePack).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn structs_roundtrip_with_deps() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct A {
            x: u32,
            y: Vec<String>,
        }
        let a = A { x: 7, y: vec!["p".into()] };
        let deps = vec![Dep::id("a", 1), Dep::tag("t:x")];
        for bytes in [encode(&MessagePack, &a, &deps, 0).unwrap(), encode(&Json, &a, &deps, 0).unwrap()] {
            let env = open(&bytes).unwrap();
            assert_eq!(env.deps().unwrap(), deps);
            let codec_id = bytes[3];
            let back: A =
                if codec_id == MessagePack::ID { env.value(&MessagePack).unwrap() } else { env.value(&Json).unwrap() };
            assert_eq!(back, a);
        }
    }

    #[test]
    fn foreign_bytes_are_errors_not_panics() {
        for junk in [&b""[..], b"\x00", b"\xA7\x01\x00\x01\xff\xff\xff\xff", b"\xA7\x09\x00\x01\0\0\0\0"] {
            assert!(open(junk).is_err());
        }
        let bytes = encode(&Json, &5u32, &[], 0).unwrap();
        assert!(matches!(
            open(&bytes).unwrap().value::<MessagePack, u32>(&MessagePack),
            Err(DecodeFailure::Envelope(_))
        ));
    }

    #[test]
    fn freshness_deadline_roundtrips_and_version_1_stays_readable() {
        let deps = vec![Dep::id("a", 1)];
        let v1 = encode(&MessagePack, &7u32, &deps, 0).unwrap();
        assert_eq!(v1[1], FORMAT_VERSION);
        assert_eq!(open(&v1).unwrap().fresh_until(), 0);
        let v2 = encode(&MessagePack, &7u32, &deps, 1_700_000_000_123).unwrap();
        assert_eq!(v2[1], FORMAT_VERSION_FRESHNESS);
        let env = open(&v2).unwrap();
        assert_eq!(env.fresh_until(), 1_700_000_000_123);
        assert_eq!(env.deps().unwrap(), deps);
        assert_eq!(env.value::<MessagePack, u32>(&MessagePack).unwrap(), 7);
        // a truncated deadline is an error, not a panic
        assert!(open(&v2[..7]).is_err());
    }
}
