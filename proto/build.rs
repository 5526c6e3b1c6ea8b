//! Compiles the `.proto` sources with a pure-Rust protobuf compiler (protox),
//! so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/grpc/gcp/transport_security_common.proto",
        "proto/grpc/gcp/altscontext.proto",
        "proto/grpc/gcp/handshaker.proto",
        "proto/alts/v1/credentials.proto",
        "proto/alts/v1/handshake.proto",
        "proto/grpc/testing/empty.proto",
        "proto/grpc/testing/messages.proto",
        "proto/grpc/testing/test.proto",
        "proto/grpc/health/v1/health.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Messages holding secrets get a redacting `Debug` (in `src/lib.rs`)
        // instead of prost's, which would print the secret bytes.
        .skip_debug([".alts.v1.TicketContents", ".grpc.gcp.HandshakerResult"])
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
