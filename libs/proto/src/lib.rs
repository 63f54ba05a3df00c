//! Generated protobuf messages, tonic clients and servers for every Haven API and bus event.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The encoded `FileDescriptorSet` of every Haven proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/haven_descriptor.bin"));

pub mod time;

pub mod common {
    pub mod v1 {
        tonic::include_proto!("haven.common.v1");
    }
}

pub mod retry {
    pub mod v1 {
        tonic::include_proto!("haven.retry.v1");
    }
}

pub mod export {
    pub mod v1 {
        tonic::include_proto!("haven.export.v1");
    }
}

pub mod integrations {
    pub mod v1 {
        tonic::include_proto!("haven.integrations.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("haven.events.v1");
    }
}
