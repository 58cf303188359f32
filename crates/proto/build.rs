//! Compiles proto/ with protox, so building needs no system protoc.

use std::path::PathBuf;

/// The .proto files compiled here (event contracts and service APIs), relative to proto/.
const PROTOS: &[&str] = &[
    "lienthong/v1/common.proto",
    "lienthong/v1/referral.proto",
    "lienthong/v1/appointment.proto",
    "lienthong/v1/lab_result.proto",
    "lienthong/v1/receipt.proto",
    "lienthong/v1/audit.proto",
    "lienthong/v1/revocation.proto",
    "lienthong/v1/analytics_common.proto",
    "lienthong/v1/analytics_referral.proto",
    "lienthong/v1/analytics_appointment.proto",
    "lienthong/v1/analytics_lab_result.proto",
    "lienthong/v1/analytics_receipt.proto",
    "lienthong/v1/age_band_widening.proto",
    "lienthong/v1/ingest.proto",
    "lienthong/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set is kept for reflection (gRPC server reflection, registry references).
    std::fs::write(
        out.join("lienthong_descriptor.bin"),
        prost::Message::encode_to_vec(&files),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::CallerCodec")
        .compile_fds(files)?;
    Ok(())
}
