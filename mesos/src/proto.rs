//! Types generated from `protos/` by build.rs. prost renames e.g. `ContainerID` to
//! `ContainerId` and `IPAddress` to `IpAddress`.

/// Package `mesos.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/mesos.v1.rs"));

    /// Package `mesos.v1.master`: operator API.
    pub mod master {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.master.rs"));
    }

    /// Package `mesos.v1.scheduler`: scheduler API.
    pub mod scheduler {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/mesos.v1.scheduler.rs"));
    }
}

/// The encoded `FileDescriptorSet` of `protos/`, for JSON transcoding.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos_descriptor.bin"));

use crate::{Error, ErrorKind, Result};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use std::sync::OnceLock;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTOR_SET).expect("embedded descriptor set"))
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor> {
    pool().get_message_by_name(full_name).ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            format!("message {full_name} is not in protos/"),
        )
    })
}

/// Protobuf bytes of message `full_name` (e.g. `mesos.v1.master.Call`) → Mesos-style JSON:
/// proto field names, enums as names, bytes as base64.
pub fn to_json(full_name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let msg = DynamicMessage::decode(descriptor(full_name)?, bytes)
        .map_err(|e| Error::new(ErrorKind::Decode, format!("decode {full_name}: {e}")))?;
    let opts = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &opts).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("encode {full_name} as JSON: {e}"),
        )
    })?;
    Ok(out)
}

/// Mesos JSON of message `full_name` → protobuf bytes. Unknown keys are ignored, as Mesos
/// does, so answers carrying fields we did not declare still decode.
pub fn from_json(full_name: &str, json: &[u8]) -> Result<Vec<u8>> {
    let desc = descriptor(full_name)?;
    let mut de = serde_json::Deserializer::from_slice(json);
    let opts = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc, &mut de, &opts)
        .map_err(|e| Error::new(ErrorKind::Decode, format!("parse JSON {full_name}: {e}")))?;
    use prost::Message;
    Ok(msg.encode_to_vec())
}

/// How a message travels over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Protobuf,
    Json,
}

impl Encoding {
    /// The media type, compared by Mesos as an exact string.
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    /// The encoding of an answer's `Content-Type` (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/x-protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// Encodes `msg` as protobuf bytes or Mesos-style JSON.
pub fn encode<M: prost::Message + prost::Name>(msg: &M, enc: Encoding) -> Result<Vec<u8>> {
    let bytes = msg.encode_to_vec();
    match enc {
        Encoding::Protobuf => Ok(bytes),
        Encoding::Json => to_json(&M::full_name(), &bytes),
    }
}

/// Decodes protobuf bytes or Mesos-style JSON into `M`.
pub fn decode<M: prost::Message + prost::Name + Default>(data: &[u8], enc: Encoding) -> Result<M> {
    let converted;
    let bytes = match enc {
        Encoding::Protobuf => data,
        Encoding::Json => {
            converted = from_json(&M::full_name(), data)?;
            &converted
        }
    };
    M::decode(bytes)
        .map_err(|e| Error::new(ErrorKind::Decode, format!("decode {}: {e}", M::full_name())))
}
