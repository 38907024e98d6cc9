//! The gRPC service layer: the only module that knows about tonic.

/// Generated code of `proto/sesame/v1/sesame.proto` (messages, clients, servers).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sesame.v1");

    /// Encoded file descriptor set of the API, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sesame_v1_descriptor");
}
